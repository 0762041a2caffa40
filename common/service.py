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


MAX_FAILED_STEPS = 5          # a main loop whose step fails this many times in a row ends its process
STEP_FAILURE_EXIT_CODE = 1    # not in supervisord.conf's exitcodes (0, 2): supervisord restarts the service


class Stop(Exception):
    """Raised in the main thread by SIGTERM/SIGINT handlers to end a service cleanly."""


class TooManyFailures(RuntimeError):
    """A main loop's step failed MAX_FAILED_STEPS times in a row: its state cannot be trusted; `run_service`
    exits with STEP_FAILURE_EXIT_CODE so that supervisord starts the service afresh."""


class StepGuard:
    """Wraps one step of a main loop: `with guard: step()`. A failed step (any Exception but Stop) is logged
    (with its traceback once per kind of failure) and swallowed, so one bad input does not end the process; the
    next step that succeeds clears the count; `limit` failures in a row raise TooManyFailures (a failure that
    repeats is a state that stays broken: a restart clears it).
    `failed` tells the caller whether the step just wrapped failed."""

    def __init__(self, log: logging.Logger, what: str = "step", limit: int = MAX_FAILED_STEPS):
        self.log, self.what, self.limit = log, what, limit
        self.failures = 0
        self.failed = False
        self._last_kind: str | None = None

    def __enter__(self) -> "StepGuard":
        return self

    def __exit__(self, exc_type, exc, _tb) -> bool:
        self.failed = exc is not None and isinstance(exc, Exception) and not isinstance(exc, Stop)
        if exc is None:
            self.failures, self._last_kind = 0, None
            return False
        if not self.failed:
            return False
        self.failures += 1
        kind = f"{type(exc).__name__}: {exc}"
        if kind != self._last_kind:
            self.log.critical("%s failed (%s)", self.what, kind, exc_info=exc)
            self._last_kind = kind
        if self.failures >= self.limit:
            raise TooManyFailures(f"{self.what} failed {self.failures} times in a row (last: {kind})") from exc
        return True


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
    except TooManyFailures as exc:
        log.critical("%s: exiting with code %d to be restarted", exc, STEP_FAILURE_EXIT_CODE)
        return STEP_FAILURE_EXIT_CODE
