"""python -m services.dtu_poller --config PATH"""
from common.service import run_service
from services.dtu_poller.service import main

if __name__ == "__main__":
    raise SystemExit(run_service("dtu_poller", main))
