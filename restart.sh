#!/bin/sh
# Restarts dbus-opendtu (supervisord and the four services) through daemontools, e.g. after editing config.ini.
# One service only, on a GX:  PYTHONPATH=vendor/py python3 -m supervisor.supervisorctl -c supervisord.conf restart controller
set -eu
NAME=dbus-opendtu
PREFIX=${PREFIX:-}
SVC=${SVC:-svc}
SERVICE_LINK="$PREFIX/service/$NAME"
if [ ! -e "$SERVICE_LINK" ]; then
  echo "$NAME restart: $SERVICE_LINK does not exist: run install.sh first" >&2
  exit 1
fi
"$SVC" -t "$SERVICE_LINK"
echo "$NAME restart: sent TERM to supervisord; daemontools starts it again"
