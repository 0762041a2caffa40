"""python -m services.venus_publisher --config PATH"""
from common.service import run_service


def main(cfg, log):
    from services.venus_publisher.app import main as app_main   # dbus and gi are imported here only
    return app_main(cfg, log)


if __name__ == "__main__":
    raise SystemExit(run_service("venus_publisher", main))
