#!/bin/sh
# dbus-opendtu installer for Venus OS v3.60 and later (GX). Run from /data/dbus-opendtu:  ./install.sh
# Idempotent: run it again at any time; /data/rc.local runs it at every boot (with --boot) because /service
# is rebuilt in RAM at boot.
#
# What it does, offline (no pip, no compiler, no network):
#  0. checks the Python version (3.12 or later, i.e. Venus OS v3.60 or later); changes nothing on an older one;
#  1. checks that the dependencies shipped in vendor/ import with this Python on this machine (`uname -m`:
#     vendor/armv7l or vendor/aarch64 for pyzmq, vendor/py for msgpack and supervisor);
#  2. creates config.ini (mode 0600: it holds passwords) from config.example.ini if missing; converts the
#     original project's (hkaest/dbus-opendtu-DC-load) config.ini, keeping it as config.ini.orig;
#  3. links /service/dbus-opendtu -> <here>/service (daemontools; service/run execs supervisord -n);
#  4. adds one line to /data/rc.local that re-runs this at boot, and removes the original project's line;
#  5. installs and enables the GX GUI plugin page (gui-v2, shown from Venus OS v3.70; older ones ignore /data/apps).
#
# ./install.sh --build-deps-with-pip   for a machine the bundle has no vendor/ folder for: installs pyzmq, msgpack
#   and supervisor with pip (needs pip, and for pyzmq a compiler) into vendor/<machine>. Never run at boot.
# PREFIX (default empty) puts every system path under another root, for tests.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
NAME=dbus-opendtu
PREFIX=${PREFIX:-}
PY=${PYTHON:-python3}
PIP=${PIP:-"$PY -m pip"}
SERVICE_LINK="$PREFIX/service/$NAME"
RC_LOCAL="$PREFIX/data/rc.local"
RC_LINE="$HERE/install.sh --boot  # $NAME"
ORIGINAL_RC_LINE="/data/dbus-opendtu/install.sh"   # what the original project adds to rc.local
BOOT=0
WITH_PIP=0
for arg in "$@"; do
  case "$arg" in
    --boot) BOOT=1 ;;
    --build-deps-with-pip) WITH_PIP=1 ;;
    *) echo "usage: $0 [--boot | --build-deps-with-pip]" >&2; exit 2 ;;
  esac
done

say() { echo "$NAME install: $*"; }

# 0. Python 3.12 or later, before anything changes
if ! $PY -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
  say "error: needs Venus OS v3.60 or later (Python 3.12+); this Python is $($PY -V 2>&1 | head -n 1)" >&2
  exit 1
fi

case "$HERE" in
  "$PREFIX"/data/*) ;;
  *) say "warning: $HERE is not under /data; a firmware update will remove it" ;;
esac

# 1. dependencies: shipped in vendor/, or built with pip on explicit request
PYTHONPATH=""
. "$HERE/scripts/pythonpath.sh"
deps_import() { $PY -c 'import zmq, msgpack, supervisor' 2>/dev/null; }
if [ "$WITH_PIP" = 1 ] && [ "$BOOT" = 0 ]; then
  VENDOR="$HERE/vendor/$PY_MACHINE"
  PINS=$(grep -E '^(pyzmq|msgpack|supervisor)==' "$HERE/requirements.txt")
  say "installing $(echo $PINS) with pip into $VENDOR (pyzmq may compile: needs a compiler)"
  rm -rf "$VENDOR.tmp"
  mkdir -p "$VENDOR.tmp"
  # shellcheck disable=SC2086
  if $PIP install --quiet --disable-pip-version-check --no-compile --target "$VENDOR.tmp" $PINS; then
    rm -rf "$VENDOR" && mv "$VENDOR.tmp" "$VENDOR"
  else
    rm -rf "$VENDOR.tmp"
    say "error: pip could not install the dependencies" >&2
    exit 1
  fi
  PYTHONPATH=""
  . "$HERE/scripts/pythonpath.sh"
fi
if ! deps_import; then
  say "error: pyzmq, msgpack or supervisor do not import for machine '$PY_MACHINE' (Python $($PY -V 2>&1))." >&2
  say "The bundle ships them for armv7l and aarch64; elsewhere run ./install.sh --build-deps-with-pip" >&2
  exit 1
fi

# 2. config: the original project's is converted; a new one is made from the example; passwords stay private
cd "$HERE"
if [ -f config.ini ] && $PY -m common.config --is-original config.ini >/dev/null 2>&1; then
  ORIG=config.ini.orig
  [ ! -e "$ORIG" ] || ORIG="config.ini.orig.$(date +%Y%m%d%H%M%S)"
  mv config.ini "$ORIG"
  say "config.ini is the original project's: kept as $ORIG, converting"
  if ! $PY -m common.config --migrate "$ORIG" --output config.ini; then
    rm -f config.ini
    mv "$ORIG" config.ini
    say "error: could not convert config.ini (left as it was); see README (Upgrading from the original)" >&2
    exit 1
  fi
fi
if [ ! -f config.ini ]; then
  (umask 077 && cp config.example.ini config.ini)
  say "created $HERE/config.ini from the example: edit the hosts and passwords, then run ./restart.sh"
fi
chmod 600 config.ini

# 3. daemontools service (run + log/run) and its link
chmod 755 service/run service/log/run scripts/run-service restart.sh uninstall.sh install.sh
mkdir -p "$PREFIX/service"
if [ -L "$SERVICE_LINK" ] && [ "$(readlink "$SERVICE_LINK")" = "$HERE/service" ]; then
  :
else
  rm -rf "$SERVICE_LINK"          # a stale link or a copy; never ln into an existing folder (nested links)
  ln -s "$HERE/service" "$SERVICE_LINK"
  say "linked $SERVICE_LINK -> $HERE/service"
fi

# 4. re-run at boot: one line of ours, on a line of its own; the original project's line goes
mkdir -p "$(dirname "$RC_LOCAL")"
[ -f "$RC_LOCAL" ] || printf '#!/bin/sh\n' > "$RC_LOCAL"
chmod 755 "$RC_LOCAL"
if grep -qxF "$ORIGINAL_RC_LINE" "$RC_LOCAL"; then
  grep -vxF "$ORIGINAL_RC_LINE" "$RC_LOCAL" > "$RC_LOCAL.tmp" || true
  cat "$RC_LOCAL.tmp" > "$RC_LOCAL"
  rm -f "$RC_LOCAL.tmp"
  say "removed the original project's line ($ORIGINAL_RC_LINE) from $RC_LOCAL"
fi
if ! grep -qxF "$RC_LINE" "$RC_LOCAL"; then
  [ -z "$(tail -c 1 "$RC_LOCAL")" ] || echo >> "$RC_LOCAL"   # the last line had no newline: end it first
  echo "$RC_LINE" >> "$RC_LOCAL"
  say "added a line to $RC_LOCAL"
fi

# 5. the GUI plugin page: copied only when changed (no GUI reload at every boot), enabled with a link
APPS="$PREFIX/data/apps"
if [ -f gui/dbus-opendtu.json ]; then
  GUI_DIR="$APPS/available/$NAME/gui-v2"
  mkdir -p "$GUI_DIR" "$APPS/enabled"
  if ! cmp -s gui/dbus-opendtu.json "$GUI_DIR/$NAME.json"; then
    cp gui/dbus-opendtu.json "$GUI_DIR/$NAME.json.tmp" && mv "$GUI_DIR/$NAME.json.tmp" "$GUI_DIR/$NAME.json"
    say "GUI page installed: Settings > Integrations > UI Plugins > $NAME (Venus OS v3.70 and later)"
  fi
  [ "$(readlink "$APPS/enabled/$NAME" 2>/dev/null)" = "$APPS/available/$NAME" ] || \
    ln -sfn "$APPS/available/$NAME" "$APPS/enabled/$NAME"
fi

[ "$BOOT" = 1 ] || say "done. Check with: svstat /service/$NAME ; logs: $HERE/log/ and /var/log/$NAME/current"
