#!/bin/sh
# Removes dbus-opendtu from the boot sequence and stops it. Keeps this folder, config.ini and the state file;
# delete /data/dbus-opendtu yourself to remove everything.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
NAME=dbus-opendtu
PREFIX=${PREFIX:-}
SERVICE_LINK="$PREFIX/service/$NAME"
RC_LOCAL="$PREFIX/data/rc.local"
RC_LINE="$HERE/install.sh --boot  # $NAME"   # exactly the line install.sh adds; nothing else is touched
SVC=${SVC:-svc}

say() { echo "$NAME uninstall: $*"; }

if [ -e "$SERVICE_LINK" ] || [ -L "$SERVICE_LINK" ]; then
  if command -v "$SVC" >/dev/null 2>&1; then
    "$SVC" -d "$SERVICE_LINK" "$SERVICE_LINK/log" 2>/dev/null || true   # stop supervisord (and so the services)
    "$SVC" -x "$SERVICE_LINK" "$SERVICE_LINK/log" 2>/dev/null || true   # let supervise exit
  fi
  rm -f "$SERVICE_LINK"
  say "removed $SERVICE_LINK"
fi
if [ -f "$RC_LOCAL" ] && grep -qxF "$RC_LINE" "$RC_LOCAL"; then
  grep -vxF "$RC_LINE" "$RC_LOCAL" > "$RC_LOCAL.tmp" || true
  cat "$RC_LOCAL.tmp" > "$RC_LOCAL"
  rm -f "$RC_LOCAL.tmp"
  say "removed the line from $RC_LOCAL"
fi
APPS="$PREFIX/data/apps"
if [ -e "$APPS/enabled/$NAME" ] || [ -L "$APPS/enabled/$NAME" ] || [ -d "$APPS/available/$NAME" ]; then
  rm -f "$APPS/enabled/$NAME"          # the GUI reloads without the page
  rm -rf "$APPS/available/$NAME"
  say "removed the GUI page"
fi
say "done; $HERE (config and state) is kept"
