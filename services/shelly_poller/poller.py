"""The imperative shell of shelly_poller: one thread per meter, one for the relay.

Threads hand `(topic, body)` to the `emit` function they are given (`__main__.Emitter`: one lock around the ZeroMQ
Publisher, which is not thread-safe). A hanging Shelly only blocks its own thread, and every request has a
timeout anyway.
"""
from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass
from typing import Callable, Optional

from common import messages as m
from common.clock import SYSTEM_CLOCK
from common.logsetup import redact_url
from common.service import MAX_FAILED_STEPS, StepGuard
from services.shelly_poller.client import (Credentials, Meter, MeterReading, RelayClient, RelayResult,
                                           ShellyError, connect_meter, credentials_for, netloc_key,
                                           url_credentials)

STATUS_EVERY_S = 5.0               # meter.status at least this often
GRID_MAX_RETRY_S = 5.0             # the grid meter is the control input: never wait longer between attempts
BALCONY_MAX_RETRY_S = 30.0
REDETECT_AFTER_ERRORS = 10         # answers that make no sense this often: detect the device again
MAX_COMMAND_AGE_S = 30.0           # an older ctrl.relay is not carried out
REPEAT_NOTE_S = 2.0                # an unchanged reading younger than this is normal (devices refresh about 1/s)


# ---------------------------------------------------------------- freshness

class FreshnessTracker:
    """Spots frozen readings: HTTP keeps answering while the measured values no longer change.

    A reading whose measured numbers are bit-identical to the previous one is a *repeat*: it is not published
    again (it is not a new sample). When the numbers have not changed for longer than `stale_after_s` the meter
    is *stale*. Real meters never repeat every digit of voltage, current and power for seconds on end.
    A device clock going backwards (reboot) counts as a change.
    """

    def __init__(self, stale_after_s: float):
        self.stale_after_s = stale_after_s
        self._values: Optional[tuple] = None
        self._device_time: Optional[float] = None
        self._changed_t: Optional[float] = None

    def check(self, reading: MeterReading, now: float) -> tuple[str, float]:
        """Return ("new" | "repeat" | "stale", seconds since the values last changed)."""
        values = (reading.values or ()) + (reading.power_w,)
        rebooted = (reading.device_time is not None and self._device_time is not None
                    and reading.device_time < self._device_time)
        self._device_time = reading.device_time if reading.device_time is not None else self._device_time
        if self._values is None or values != self._values or rebooted:
            self._values = values
            self._changed_t = now
            return "new", 0.0
        unchanged_s = now - self._changed_t
        if unchanged_s > self.stale_after_s:
            return "stale", unchanged_s
        return "repeat", unchanged_s

    def reset(self) -> None:
        self._values = self._device_time = self._changed_t = None


# ---------------------------------------------------------------- meters

def stale_after_s(poll_interval_s: float) -> float:
    return max(5.0, 2.5 * poll_interval_s)


def retry_delay_s(role: str, poll_interval_s: float, error_count: int, kind: Optional[str]) -> float:
    """Wait before the next attempt after `error_count` consecutive errors.

    Grid: the poll interval (it is the control input), a little more for rate limiting or auth errors, never
    beyond 5 s unless the poll interval itself is longer. Balcony: doubling from the poll interval up to 30 s.
    """
    if role == "grid":
        if kind in ("rate_limited", "auth"):
            return max(poll_interval_s, min(GRID_MAX_RETRY_S, 2 * poll_interval_s * error_count))
        return poll_interval_s
    cap = max(poll_interval_s, BALCONY_MAX_RETRY_S)
    return min(cap, poll_interval_s * 2 ** max(0, min(error_count - 1, 10)))


class MeterPoller:
    """Polls one meter (`role` grid or balcony) in its own thread and emits samples and status."""

    def __init__(self, role: str, section, emit: Callable[[str, dict], None], stop: threading.Event,
                 clock=SYSTEM_CLOCK, log: Optional[logging.Logger] = None,
                 connect: Callable[..., Meter] = connect_meter):
        self.role = role
        self.section = section
        self.topic = m.METER_GRID if role == "grid" else m.METER_BALCONY
        self.emit = emit
        self.stop = stop
        self.clock = clock
        self.log = log or logging.getLogger(f"shelly_poller.{role}")
        self.connect = connect
        self.credentials = credentials_for(section)        # pinned to the generation once known
        self.channel = int(getattr(section, "channel", 0) or 0)
        self.poll_interval_s = float(section.poll_interval)
        self.freshness = FreshnessTracker(stale_after_s(self.poll_interval_s))
        self.meter: Optional[Meter] = None
        self._lock = threading.Lock()
        self._status = {"role": role, "ok": False, "error_kind": "starting", "error_count": 0,
                        "detail": "no reading yet"}
        self._request_started_t: Optional[float] = None
        self._errors_since_detect = 0
        self.thread = threading.Thread(target=self.run, name=f"meter-{role}", daemon=True)

    # -- status, read by the publishing thread
    def status_body(self, now: Optional[float] = None) -> dict:
        with self._lock:
            body = dict(self._status)
            started = self._request_started_t
        now = self.clock.monotonic() if now is None else now
        if started is not None and now - started > STATUS_EVERY_S:
            body.update(ok=False, error_kind="timeout",
                        detail=f"request pending for {now - started:.0f} s")
        return body

    def _set_status(self, **fields) -> dict:
        with self._lock:
            self._status.update(fields)
            if self._status.get("ok"):
                self._status["error_kind"] = None
            return dict(self._status)

    # -- the loop
    def run(self) -> None:
        # a bug is logged and the poll retried; one that repeats (StepGuard's limit) ends the thread, and the main
        # thread then exits for a restart
        guard = StepGuard(self.log, f"{self.role} meter poll")
        while not self.stop.is_set():
            started = self.clock.monotonic()
            delay = self.poll_interval_s
            with guard:
                delay = self.poll_once()
            self.stop.wait(max(0.0, started + delay - self.clock.monotonic()))
        if self.meter is not None:
            self.meter.close()

    def poll_once(self) -> float:
        """One attempt: detect if needed, read, judge freshness, emit. Returns the delay to the next attempt."""
        with self._lock:
            self._request_started_t = self.clock.monotonic()
        try:
            if self.meter is None:
                self.meter = self.connect(self.section.host, self.credentials, type_=self.section.type,
                                          timeout_s=self.section.timeout, channel=self.channel, clock=self.clock)
                self.freshness.reset()
                self.credentials = self.credentials.pinned(self.meter.gen)
                self.log.info("%s meter: %s at %s (Gen%d)", self.role, self.meter.model, self.meter.host,
                              self.meter.gen)
                self._set_status(device=self.meter.model)
            reading = self.meter.read()
        except ShellyError as exc:
            return self._on_error(exc.kind, str(exc), exc)
        finally:
            with self._lock:
                self._request_started_t = None
        verdict, unchanged_s = self.freshness.check(reading, self.clock.monotonic())
        if verdict == "stale":
            return self._on_error("stale", f"readings unchanged for {unchanged_s:.0f} s (frozen meter?)", None)
        was = self.status_body()
        if verdict == "new":
            self.emit(self.topic, reading.to_body())
        self._errors_since_detect = 0
        detail = None
        if verdict == "repeat" and unchanged_s >= REPEAT_NOTE_S:
            detail = f"reading unchanged for {unchanged_s:.1f} s, not published again"
        energy_error = getattr(self.meter, "energy_error", None)
        if energy_error and verdict == "new":
            detail = f"energy counters unavailable: {energy_error}"
        last_ok = reading.sample_t_mono if verdict == "new" else was.get("last_ok_t_mono")
        body = self._set_status(ok=True, device=reading.device, error_count=0, detail=detail,
                                **({"last_ok_t_mono": last_ok} if last_ok is not None else {}))
        if not was["ok"]:
            self.log.info("%s meter: reading ok%s", self.role,
                          f" again after {was['error_count']} errors" if was["error_count"] else "")
        self.emit(m.METER_STATUS, body)
        return self.poll_interval_s

    def _on_error(self, kind: str, message: str, exc: Optional[Exception]) -> float:
        was = self.status_body()
        count = (was["error_count"] or 0) + 1
        body = self._set_status(ok=False, error_kind=kind, error_count=count, detail=message)
        if was["ok"] or was["error_kind"] != kind or count % 300 == 0:
            self.log.warning("%s meter: %s: %s (%d in a row)", self.role, kind, message, count)
        self.emit(m.METER_STATUS, body)
        if kind not in ("connection", "timeout", "stale", "rate_limited"):
            self._errors_since_detect += 1
            if self._errors_since_detect >= REDETECT_AFTER_ERRORS and self.section.type == "auto" \
                    and self.meter is not None:
                self.log.info("%s meter: %d nonsensical answers, detecting the device again", self.role,
                              self._errors_since_detect)
                self.meter.close()
                self.meter = None
                self._errors_since_detect = 0
        return retry_delay_s(self.role, self.poll_interval_s, count, kind)


# ---------------------------------------------------------------- relay

def relay_credentials(url: str, meters: dict) -> tuple[Credentials, Optional[str]]:
    """The URL's own `user:pass@` (role "url"), else the credentials of the meter whose host:port equals the
    URL's, else none. Returns (credentials, role)."""
    own = url_credentials(url)
    if own is not None:
        return own, "url"
    key = netloc_key(url)
    for role, section in meters.items():
        if section is not None and netloc_key(section.host) == key:
            return credentials_for(section), role
    return Credentials(), None


def check_keepalive_url(url: str) -> Optional[str]:
    """A warning if the keep-alive URL arms no flip-back timer (then the relay would never open by itself)."""
    low = url.lower()
    if "timer=" not in low and "toggle_after=" not in low:
        return ("keepalive_url has neither timer= (Gen1) nor toggle_after= (Gen2): the relay would stay on "
                "when commands stop; every keep-alive will be reported as not ok")
    return None


@dataclass
class RelayCommand:
    on: bool
    seq: int
    t_mono: float
    key: tuple


class RelayWorker:
    """Carries out the controller's `ctrl.relay` commands, one request per command, and reports `relay.state`.

    It never acts on its own: no command, no request; when the controller stops, the relay's own flip-back
    timer runs out and the relay opens. Commands are deduplicated by their envelope (src, seq, t_mono); when
    several are waiting only the newest is carried out, the others are reported as superseded.
    """

    def __init__(self, section, meters: dict, emit: Callable[[str, dict], None], stop: threading.Event,
                 rundir: str, clock=SYSTEM_CLOCK, log: Optional[logging.Logger] = None):
        self.section = section
        self.emit = emit
        self.stop = stop
        self.rundir = rundir
        self.clock = clock
        self.log = log or logging.getLogger("shelly_poller.relay")
        self.clients = {}
        for on, url in ((True, section.keepalive_url), (False, section.switchoff_url)):
            creds, role = relay_credentials(url, meters)
            self.clients[on] = RelayClient(url, section.timeout, creds, clock)
            self.log.info("relay %s URL %s: %s", "on" if on else "off", redact_url(url),
                          "credentials from the URL" if role == "url" else
                          f"credentials of the {role} meter" if role else "no credentials")
        warning = check_keepalive_url(section.keepalive_url)
        if warning:
            self.log.warning("relay: %s", warning)
        self._seen: deque = deque(maxlen=64)
        self.thread = threading.Thread(target=self.run, name="relay", daemon=True)

    def run(self) -> None:
        from common.bus import Subscriber   # the socket lives in this thread only
        sub = Subscriber(self.rundir, topics=[m.CTRL_RELAY])
        guard = StepGuard(self.log, "relay command")
        try:
            while not self.stop.is_set():
                msg = sub.recv(5.0)          # the timeout only bounds noticing the stop (a daemon thread)
                if msg is None:
                    continue
                pending = [msg] + sub.drain()
                with guard:
                    self.handle([p for p in pending if p.topic == m.CTRL_RELAY])
        finally:
            sub.close()
            for client in self.clients.values():
                client.close()

    def handle(self, messages: list) -> None:
        commands = []
        for msg in messages:
            key = (msg.src, msg.seq, msg.t_mono)
            if key in self._seen:
                continue
            self._seen.append(key)
            commands.append(RelayCommand(bool(msg.body["on"]), msg.seq, msg.t_mono, key))
        if not commands:
            return
        *older, latest = commands
        for cmd in older:
            self._report(cmd, RelayResult(False, None, None, "superseded", "a newer command was waiting"))
        age_s = self.clock.monotonic() - latest.t_mono
        if age_s > MAX_COMMAND_AGE_S:
            self._report(latest, RelayResult(False, None, None, "expired",
                                             f"command {age_s:.0f} s old, not carried out"))
            return
        result = self.clients[latest.on].switch(latest.on)
        self._report(latest, result)

    def _report(self, cmd: RelayCommand, result: RelayResult) -> None:
        body = {"command_on": cmd.on, "command_seq": cmd.seq, "ok": result.ok, "on": result.on}
        if result.timer_remaining_s is not None:
            body["timer_remaining_s"] = result.timer_remaining_s
        if result.error_kind is not None:
            body["error_kind"] = result.error_kind
        if result.detail is not None:
            body["detail"] = result.detail
        level = logging.INFO if result.ok else logging.WARNING
        self.log.log(level, "relay %s (command %d): %s%s", "on" if cmd.on else "off", cmd.seq,
                     "ok" if result.ok else f"NOT ok ({result.error_kind})",
                     f": {result.detail}" if result.detail else "")
        self.emit(m.RELAY_STATE, body)
