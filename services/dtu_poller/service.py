"""The dtu_poller process: one poll thread (reader), one writer thread, the main thread on the bus.

At start the gateway is found (gateway.py: OpenDTU or AhoyDTU, retried with backoff and reported on dtu.status
while it cannot be told); then each thread has its own client of that kind. HTTP never blocks the bus handling:
the main thread only receives `ctrl.setpoint` and hands it to the writer's queue. The Publisher is not
thread-safe, so every publish goes through one lock.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from typing import Callable, Optional

from common import messages as m
from common.bus import LockedPublisher, Publisher, Subscriber
from common.cadence import StatusGate
from common.clock import SYSTEM_CLOCK
from common.config import inverter_options
from common.service import StepGuard
from services.dtu_poller.client import DtuError, DtuRateLimited, LimitStatus, OpenDtuClient
from services.dtu_poller.gateway import Gateway, GatewayChanged, detect, open_gateway, read_only_reason, rechecker
from services.dtu_poller.rating import ProvenRatings
from services.dtu_poller.reader import STATUS_INTERVAL_S, PollResult, Reader, limit_fields, max_power_w
from services.dtu_poller.writer import Inventory, WriterLoop

RATINGS_FILE = "dtu-ratings.json"      # in [control] state_dir: ratings the AC power proved (rating.py)

log = logging.getLogger("dtu_poller")

BACKOFF_CAP_S = 10.0      # a local gateway: after it recovers, control resumes within 10 s
RETRY_AFTER_CAP_S = 300.0
FIRMWARE_RETRY_S = 300.0
MODEL_RETRY_S = 30.0
RATING_REFRESH_S = 600.0   # /api/limit/status is read for max_power only until each inverter's rating is known
SAMPLE_MARGIN_S = 1.0      # a DTU with a fixed refresh (AhoyDTU): poll this long after the next sample is due
OVERDUE_POLL_S = 1.0       # ... and again this soon while it is late
THREAD_CHECK_S = 5.0       # the main thread notices a dead or stuck thread within this (stuck: 30 s and more)
HEARTBEAT_SLACK_S = 2.0    # a dtu.status heartbeat waits at most this long for the next poll's status


def backoff_s(poll_interval_s: float, error_count: int, error: Optional[DtuError] = None) -> float:
    """Exponential from the poll interval, capped at 10 s; a 429's Retry-After is honoured (up to 300 s)."""
    delay = min(BACKOFF_CAP_S, poll_interval_s * (2 ** max(0, min(error_count - 1, 10))))
    if isinstance(error, DtuRateLimited) and error.retry_after_s:
        delay = max(delay, min(error.retry_after_s, RETRY_AFTER_CAP_S))
    return delay


class PollLoop:
    """The reader thread: discover, fetch ?inv= per inverter and the limit status, publish, back off on errors."""

    def __init__(self, client: OpenDtuClient, reader: Reader, publish, inventory: Inventory,
                 poll_interval_s: float, clock=SYSTEM_CLOCK, recheck: Optional[Callable[[], None]] = None,
                 name: str = "OpenDTU", sample_period_s: Optional[Callable[[], float]] = None):
        self.client, self.reader, self.publish, self.inventory = client, reader, publish, inventory
        self.poll_interval_s = poll_interval_s
        self.clock = clock
        self.recheck = recheck          # after the gateway was unreachable: is it still the same kind?
        self.name = name
        self.sample_period_s = sample_period_s   # AhoyDTU: polls all inverters every `refresh` s
        self._recheck_due = False
        self.stop_event = threading.Event()
        self._firmware_tried_t: Optional[float] = None
        self._model_tried_t: dict = {}
        self._ratings: dict = {}                # serial -> max_power_w (> 0) from /api/limit/status
        self._ratings_t: Optional[float] = None
        # dtu.status goes out when it says something new, else every STATUS_INTERVAL_S (the reader builds one
        # after each poll; the data ages and the time of the last good poll change each time and are no news)
        self.status_gate = StatusGate(STATUS_INTERVAL_S, volatile=m.STATUS_VOLATILE)

    def _publish(self, messages, now: float) -> None:
        for topic, body in messages:
            if topic != m.DTU_STATUS or self.status_gate.offer(body, now):
                self.publish(topic, body)

    def _limits(self, summary) -> dict:
        """serial -> LimitStatus for the reader: only max_power is needed from /api/limit/status (limit_relative
        is the same value livedata carries), and the rating of an inverter does not change, so the endpoint is
        read only while a rating is unknown (0 until the DTU read DevInfo) and every RATING_REFRESH_S. The writer
        reads it on its own while a command is in flight."""
        if not summary:
            return {}
        now = self.clock.monotonic()
        if any(inv.serial not in self._ratings for inv in summary) or self._ratings_t is None \
                or now - self._ratings_t >= RATING_REFRESH_S:
            statuses = self.client.limit_status()
            self._ratings_t = now
            self._ratings = {serial: st.max_power_w for serial, st in statuses.items()
                             if st.max_power_w is not None and st.max_power_w > 0}
            return statuses
        return {inv.serial: LimitStatus(None, self._ratings[inv.serial], "Unknown") for inv in summary}

    def poll_once(self) -> PollResult:
        summary = self.client.livedata_summary()
        lives = {}
        for inv in summary:
            live = self.client.livedata_inverter(inv.serial)
            if live is None:            # gone between the two calls
                continue
            lives[inv.serial] = (live, self.client.last_arrival_t, live.age_resolution_s)
        limits = self._limits(summary)
        return PollResult(summary=summary, lives=lives, limits=limits, t_mono=self.clock.monotonic())

    def _firmware(self, now: float) -> None:
        if self.reader.firmware or (self._firmware_tried_t is not None
                                    and now - self._firmware_tried_t < FIRMWARE_RETRY_S):
            return
        self._firmware_tried_t = now
        try:
            self.reader.firmware = self.client.firmware()
            log.info("%s firmware %s at %s", self.name, self.reader.firmware, self.client.url)
        except DtuError as exc:
            log.info("%s firmware unknown (%s: %s)", self.name, exc.kind, exc)

    def _models(self, serials, now: float) -> None:
        """hw_model_name once per inverter (known after its first stats poll); at most one try per minute."""
        for serial in serials:
            if serial in self.reader.models or now - self._model_tried_t.get(serial, -1e9) < MODEL_RETRY_S:
                continue
            self._model_tried_t[serial] = now
            try:
                model = self.client.model(serial)
            except DtuError as exc:
                log.debug("devinfo %s: %s", serial, exc)
                continue
            if model:
                self.reader.models[serial] = model

    def step(self) -> float:
        """One poll; returns the delay until the next one."""
        started = self.clock.monotonic()
        try:
            if self._recheck_due and self.recheck is not None:
                self.recheck()              # GatewayChanged ends the thread: the service restarts
            self._recheck_due = False
            poll = self.poll_once()
        except DtuError as exc:
            self._recheck_due = self._recheck_due or exc.kind in ("connection", "timeout")
            now = self.clock.monotonic()
            self._publish(self.reader.on_error(exc.kind, str(exc), now), now)
            return backoff_s(self.poll_interval_s, self.reader.error_count, exc)
        self._firmware(started)
        self._models([s for s, st in poll.limits.items() if st.max_power_w], started)   # devinfo read by the DTU
        limits = {}
        for serial, (live, _t, _r) in poll.lives.items():
            status = poll.limits.get(serial)
            limits[serial] = limit_fields(live, status, max_power_w(live, status))[0]
        reachable = {s for s, (live, _t, _r) in poll.lives.items() if live.reachable}
        samples = {s: (live.ac_power_w, arrival_t - live.data_age_s) for s, (live, arrival_t, _r) in poll.lives.items()
                   if live.reachable and live.has_channels and live.ac_power_w is not None}
        self.inventory.update([inv.serial for inv in poll.summary], reachable, limits, poll.t_mono, samples)
        self.reader.power_states = self.inventory.get_power_states()
        self._publish(self.reader.on_poll(poll), self.clock.monotonic())
        return self._next_poll_s(poll, self.clock.monotonic() - started)

    def _next_poll_s(self, poll: PollResult, elapsed_s: float) -> float:
        """The poll interval; with a DTU that samples every inverter each period (AhoyDTU), the next poll is put
        just after the next sample is due, so that a sample is seen ~SAMPLE_MARGIN_S after it was taken instead
        of up to a poll interval later (a fixed interval keeps a fixed, possibly bad, phase to the DTU's)."""
        ages = [live.data_age_s for live, _t, _r in poll.lives.values() if live.reachable and live.has_channels]
        period_s = self.sample_period_s() if self.sample_period_s is not None else None
        if period_s and ages:
            due_s = period_s - min(ages) + SAMPLE_MARGIN_S
            if 0.0 < due_s <= period_s + SAMPLE_MARGIN_S:
                return max(OVERDUE_POLL_S, due_s - elapsed_s)
            if -3.0 * SAMPLE_MARGIN_S < due_s <= 0.0:
                return OVERDUE_POLL_S
        return max(0.0, self.poll_interval_s - elapsed_s)

    def run(self) -> None:
        # a bug in a poll is logged and the poll retried; StepGuard's limit in a row ends the thread (and so the
        # process, for a restart)
        guard = StepGuard(log, "DTU poll")
        next_poll_t = self.clock.monotonic()
        while not self.stop_event.is_set():
            now = self.clock.monotonic()
            if now >= next_poll_t:
                next_poll_t = now + self.poll_interval_s
                with guard:
                    next_poll_t = now + self.step()
                continue
            if self.status_gate.heartbeat_due(now):
                topic, body = self.reader.status(now)
                self.publish(topic, body)
                self.status_gate.sent(body, now)
            # a heartbeat rides on the next poll's status when that comes within HEARTBEAT_SLACK_S
            wait_s = min(next_poll_t, self.status_gate.next_t() + min(self.poll_interval_s, HEARTBEAT_SLACK_S)) - now
            self.stop_event.wait(max(0.01, wait_s))


def _thread(name: str, target, failed: threading.Event) -> threading.Thread:
    def body():
        try:
            target()
        except GatewayChanged as exc:
            log.warning("%s", exc)
            failed.set()
        except Exception:  # a bug: let the process end, supervisord restarts it
            log.exception("thread %s died", name)
            failed.set()
    return threading.Thread(target=body, name=name, daemon=True)


def writer_stuck_after_s(timeout_s: float) -> float:
    """No heartbeat this long: the writer thread is stuck (every HTTP call has a total deadline of a few
    timeouts; a loop makes several)."""
    return max(30.0, 8.0 * timeout_s)


def supervise(sub, writer: WriterLoop, failed: threading.Event, stuck_after_s: float, clock=SYSTEM_CLOCK) -> int:
    """The main thread: setpoints to the writer; returns 1 (supervisord restarts the service) when a thread died
    or the writer's heartbeat is older than stuck_after_s."""
    while not failed.is_set():
        msg = sub.recv(timeout_s=THREAD_CHECK_S)      # the timeout only bounds noticing a dead or stuck thread
        if msg is not None and msg.topic == m.CTRL_SETPOINT:
            writer.submit(msg.body, msg.seq, msg.t_mono)
        silent_s = clock.monotonic() - writer.beat_t
        if silent_s > stuck_after_s:
            log.error("the writer thread is stuck (no heartbeat for %.0f s): exiting so that it is restarted",
                      silent_s)
            return 1
    return 1


def connect(cfg, reader: Reader, publish, clock=SYSTEM_CLOCK, sleep=time.sleep) -> Gateway:
    """Find the gateway (type auto: ask it) and open its clients; until that works every failure goes to
    dtu.status and is retried with the poll loop's backoff (a host that is neither gateway included: one error
    naming the host and what it answered, not a crash loop)."""
    while True:
        try:
            return open_gateway(cfg, detect(cfg, clock), clock)
        except DtuError as exc:
            for topic, body in reader.on_error(exc.kind, str(exc), clock.monotonic()):
                publish(topic, body)
            sleep(backoff_s(cfg.opendtu.poll_interval, reader.error_count, exc))


def main(cfg, logger: logging.Logger) -> int:
    o = cfg.opendtu
    publisher = LockedPublisher(Publisher("dtu_poller", cfg.bus.rundir))
    sub = Subscriber(cfg.bus.rundir, topics=[m.CTRL_SETPOINT])
    inventory = Inventory()
    reader = Reader(can_control=bool(o.password),
                    config_max_w=lambda serial, index: inverter_options(cfg, serial, index).max_power_w,
                    proven=ProvenRatings(os.path.join(cfg.control.state_dir, RATINGS_FILE)))
    try:
        gateway = connect(cfg, reader, publisher.publish)
    except BaseException:
        sub.close()
        publisher.close()
        raise
    params = gateway.params
    reader.can_control = params.can_control
    if read_only_reason(gateway):
        logger.warning("%s", read_only_reason(gateway))
    poll_client, write_client = gateway.poll_client, gateway.write_client
    poller = PollLoop(poll_client, reader, publisher.publish, inventory, gateway.poll_interval_s,
                      recheck=rechecker(cfg, gateway), name=gateway.name, sample_period_s=gateway.sample_period_s)
    writer = WriterLoop(write_client, params, publisher.publish, inventory)
    failed = threading.Event()
    threads = [_thread("dtu-poll", poller.run, failed), _thread("dtu-write", writer.run, failed)]
    logger.info("%s at %s: polling every %g s (timeout %g s), limit ack timeout %g s, setpoint watchdog %g s",
                gateway.name, poll_client.url, gateway.poll_interval_s, o.timeout, params.ack_timeout_s,
                o.setpoint_timeout_s)
    for thread in threads:
        thread.start()
    try:
        return supervise(sub, writer, failed, writer_stuck_after_s(o.timeout))
    finally:
        poller.stop_event.set()
        writer.stop_event.set()
        for thread in threads:
            thread.join(timeout=o.timeout + 1.0)
        sub.close()
        publisher.close()
        poll_client.close()
        write_client.close()
