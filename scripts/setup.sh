#!/usr/bin/env bash
# Idempotent set-up: Debian packages, then the project's venv at .venv/.
# A re-run with nothing to do checks a stamp and a few imports (about a second).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=$ROOT/.venv
STAMP=$VENV/.setup-stamp
APT_PKGS="dbus libdbus-1-dev libglib2.0-dev libgirepository1.0-dev pkg-config build-essential python3-dev qemu-user-static debootstrap binutils-arm-linux-gnueabihf gcc-arm-linux-gnueabihf g++-arm-linux-gnueabihf cmake dpkg-dev"
# The GX runs Python 3.12 (Venus OS v3.60 and later): the venv uses 3.12 too, from pyenv when it is there.
pick_python() {
  local p
  for p in "${PYTHON:-}" "$(pyenv root 2>/dev/null)/versions/"3.12.*/bin/python3.12 "$(command -v python3.12 || true)"; do
    if [ -n "$p" ] && [ -x "$p" ]; then echo "$p"; return; fi
  done
  echo "setup: Python 3.12 not found (set PYTHON=/path/to/python3.12)" >&2; exit 1
}
PYTHON=$(pick_python)

want_stamp() {
  # The stamp names what was installed; a changed requirements file re-runs pip.
  cat requirements.txt requirements-dbus.txt scripts/setup.sh | sha256sum | cut -d' ' -f1
}

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(want_stamp)" ] \
   && "$VENV/bin/python" -c 'import zmq, msgpack, requests, dbus, gi, supervisor, pytest, xdist' 2>/dev/null; then
  exit 0
fi

missing=""
for p in $APT_PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "setup: installing Debian packages:$missing"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

if [ -x "$VENV/bin/python" ] && ! "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))'; then
  echo "setup: $VENV is not Python 3.12; making it anew"
  rm -rf "$VENV"
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PIP="$VENV/bin/pip --disable-pip-version-check -q"
echo "setup: installing Python packages"
$PIP install -r requirements.txt
# PyGObject 3.50 is the last series that builds against bookworm's GLib 2.74 (girepository-1.0).
# Build it without pycairo, with meson from the venv on PATH and no build isolation.
$PIP install meson==1.12.1 meson-python==0.22.1 ninja==1.13.2
PATH="$VENV/bin:$PATH" $PIP install dbus-python==1.5.1
PATH="$VENV/bin:$PATH" $PIP install --no-deps --no-build-isolation \
  --config-settings=setup-args=-Dpycairo=disabled PyGObject==3.50.2
"$VENV/bin/python" -c 'import zmq, msgpack, requests, dbus, gi, supervisor, pytest, xdist'
want_stamp > "$STAMP"
echo "setup: done"
