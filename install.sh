#!/bin/sh
# dbus-opendtu installer for Venus OS (GX). Run from /data/dbus-opendtu:  ./install.sh
# Idempotent: run it again at any time; /data/rc.local runs it at every boot (with --boot) because /service
# is rebuilt in RAM at boot and a firmware update replaces the root filesystem (and may change Python).
#
# What it does:
#  1. vendors the Python packages Venus lacks (pyzmq, msgpack, supervisor) into vendor/py<X.Y>, per Python
#     version, under /data, so a firmware update does not remove them; after an update that changes Python
#     (3.8 -> 3.12 at Venus v3.60) they are rebuilt at the next boot;
#  2. creates config.ini from config.example.ini if missing (edit it!);
#  3. links /service/dbus-opendtu -> <here>/service (daemontools; service/run execs supervisord -n);
#  4. adds one line to /data/rc.local that re-runs this at boot.
# PREFIX (default empty) puts every system path under another root, for tests.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
NAME=dbus-opendtu
PREFIX=${PREFIX:-}
PYTHON=${PYTHON:-python3}
PIP=${PIP:-"$PYTHON -m pip"}
SERVICE_LINK="$PREFIX/service/$NAME"
RC_LOCAL="$PREFIX/data/rc.local"
RC_LINE="$HERE/install.sh --boot  # $NAME"
BOOT=0
[ "${1:-}" = "--boot" ] && BOOT=1

say() { echo "$NAME install: $*"; }

case "$HERE" in
  "$PREFIX"/data/*) ;;
  *) say "warning: $HERE is not under /data; a firmware update will remove it" ;;
esac

# 1. dependencies, per Python version
PYVER=$($PYTHON -c 'import sys; print("%d.%d" % sys.version_info[:2])')
VENDOR="$HERE/vendor/py$PYVER"
if ! PYTHONPATH="$VENDOR" $PYTHON -c 'import zmq, msgpack, supervisor' 2>/dev/null; then
  say "installing pyzmq, msgpack and supervisor for Python $PYVER into $VENDOR"
  say "(on a 32-bit GX pyzmq compiles from source: this needs python3-pip and a compiler, see README)"
  rm -rf "$VENDOR.tmp"
  mkdir -p "$VENDOR.tmp"
  if $PIP install --quiet --disable-pip-version-check --no-compile --target "$VENDOR.tmp" \
        pyzmq msgpack supervisor requests; then
    rm -rf "$VENDOR" && mv "$VENDOR.tmp" "$VENDOR"
  else
    rm -rf "$VENDOR.tmp"
    say "error: could not install the Python dependencies; see README (Installing on a GX)"
    exit 1
  fi
  # old versions' folders are useless after a Python change
  for old in "$HERE"/vendor/py*; do
    [ "$old" = "$VENDOR" ] || [ ! -d "$old" ] || rm -rf "$old"
  done
fi
PYTHONPATH="$VENDOR" $PYTHON -c 'import zmq, msgpack, supervisor' || { say "error: dependencies do not import"; exit 1; }

# 2. config
if [ ! -f "$HERE/config.ini" ]; then
  cp "$HERE/config.example.ini" "$HERE/config.ini"
  say "created $HERE/config.ini from the example: edit the hosts and passwords, then run ./restart.sh"
fi

# 3. daemontools service (run + log/run) and its link
chmod 755 "$HERE/service/run" "$HERE/service/log/run" "$HERE/scripts/run-service" "$HERE/restart.sh" \
  "$HERE/uninstall.sh" "$HERE/install.sh"
mkdir -p "$PREFIX/service"
if [ -L "$SERVICE_LINK" ] && [ "$(readlink "$SERVICE_LINK")" = "$HERE/service" ]; then
  :
else
  rm -rf "$SERVICE_LINK"          # a stale link or a copy; never ln into an existing folder (nested links)
  ln -s "$HERE/service" "$SERVICE_LINK"
  say "linked $SERVICE_LINK -> $HERE/service"
fi

# 4. re-run at boot
mkdir -p "$(dirname "$RC_LOCAL")"
if [ ! -f "$RC_LOCAL" ]; then
  printf '#!/bin/sh\n' > "$RC_LOCAL"
fi
chmod 755 "$RC_LOCAL"
if ! grep -qF "# $NAME" "$RC_LOCAL"; then
  echo "$RC_LINE" >> "$RC_LOCAL"
  say "added a line to $RC_LOCAL"
fi

[ "$BOOT" = 1 ] || say "done. Check with: svstat /service/$NAME ; logs: $HERE/log/ and /var/log/$NAME/current"
