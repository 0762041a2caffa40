"""What every service's `python -m services.<name> --config PATH` does before its own work."""
from __future__ import annotations

import argparse
import logging
import signal
import sys
from typing import Callable

from common.bus import ensure_rundir
from common.config import CONFIG_EXIT_CODE, Config, ConfigError, load_config
from common.logsetup import setup_logging


class Stop(Exception):
    """Raised in the main thread by SIGTERM/SIGINT handlers to end a service cleanly."""


def run_service(name: str, main: Callable[[Config, logging.Logger], int | None], argv=None) -> int:
    """Parse --config, load it (config errors: one message, exit 2), set up logging, run `main(cfg, log)`."""
    parser = argparse.ArgumentParser(prog=f"python -m services.{name}", description=f"dbus-opendtu {name}")
    parser.add_argument("--config", required=True, help="path of config.ini")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return CONFIG_EXIT_CODE
    log = setup_logging(name, cfg.bus.log_level, cfg.secrets())
    try:
        ensure_rundir(cfg.bus.rundir)
    except OSError as exc:
        print(f"{name}: config error: {cfg.path}: [bus] rundir = {cfg.bus.rundir!r}: {exc.strerror}",
              file=sys.stderr)
        return CONFIG_EXIT_CODE

    def _stop(signum, _frame):
        raise Stop(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    log.info("starting (config %s)", cfg.path)
    try:
        return int(main(cfg, log) or 0)
    except Stop as why:
        log.info("stopping on %s", why)
        return 0
    except ConfigError as exc:
        log.error("%s", exc)
        return CONFIG_EXIT_CODE
