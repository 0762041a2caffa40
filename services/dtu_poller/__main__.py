"""python -m services.dtu_poller --config PATH"""
from common.plainhttp import skip_ssl_unless_needed
from common.service import run_service


def main(cfg, log):
    skip_ssl_unless_needed([cfg.opendtu.host])        # before the HTTP client is imported
    from services.dtu_poller.service import main as run
    return run(cfg, log)


if __name__ == "__main__":
    raise SystemExit(run_service("dtu_poller", main))
