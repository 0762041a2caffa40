"""python -m services.dtu_poller --config PATH [--set-persistent-minimum]

--set-persistent-minimum: the one-time step of services/dtu_poller/persistent.py (sets each inverter's persistent
limit to [control] min_percent, then exits), instead of running the service."""
import sys

from common.service import run_service
from services.dtu_poller import persistent
from services.dtu_poller.service import main

if __name__ == "__main__":
    argv = sys.argv[1:]
    if "--set-persistent-minimum" in argv:
        argv.remove("--set-persistent-minimum")
        raise SystemExit(run_service("dtu_poller", persistent.main, argv))
    raise SystemExit(run_service("dtu_poller", main, argv))
