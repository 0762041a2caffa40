"""The controller's imperative shell: bus messages in, `core.step`, bus messages out, state file."""
from __future__ import annotations

import logging

from common import messages as m
from common.bus import Publisher, Subscriber
from common.clock import SYSTEM_CLOCK
from common.service import StepGuard
from services.controller import core
from services.controller.persist import StateStore

# time-driven work is woken by core.next_wake_t; this bounds anything it does not list (messages come every
# second: the meter's samples, the DTU's every poll; a wake-up of its own each second would double the controller's)
MAX_WAIT_S = 5.0
INPUT_TOPICS = ("meter.", "dtu.", "venus.", "relay.")


class ControllerService:
    def __init__(self, cfg, log: logging.Logger, clock=SYSTEM_CLOCK):
        self.log = log
        self.clock = clock
        self.params = core.Params.from_config(cfg)
        self.store = StateStore(cfg.control.state_dir, log)
        self.state = core.initial_state(self.params, self.store.load())
        self.saved_version = None
        self._persist()
        self.pub = Publisher("controller", cfg.bus.rundir, clock=clock)
        self.sub = Subscriber(cfg.bus.rundir, topics=INPUT_TOPICS)
        self.last_relay = None
        self.last_answers = []
        self.guard = StepGuard(log)
        log.info("%s law, MaxFeedIn %d W, ZeroPoint %d W, SocFloatingMax %d %%, state file %s",
                 self.params.law, self.state.settings.max_feed_in, self.state.settings.zero_point,
                 self.state.season.sfm, self.store.path)

    def _persist(self) -> None:
        version = core.persist_version(self.state)
        if version != self.saved_version and self.store.save(core.persistable(self.state)):
            self.saved_version = version

    def handle(self, events) -> None:
        # a failed step is a bug: the writer's watchdog sends the inverters to their minimum if no setpoint
        # follows; the same failure MAX_FAILED_STEPS times in a row (a state that stays broken) ends the process
        # with a non-zero code and supervisord starts it afresh (settings and season come from the state file)
        with self.guard:
            self.state, outputs = core.step(self.state, events, self.clock.monotonic(), self.params)
        if self.guard.failed:
            return
        for topic, body in outputs:
            try:
                self.pub.publish(topic, body)
            except m.SchemaError as exc:     # our bug: say so, keep running
                self.log.error("invalid %s body not published: %s", topic, exc)
                continue
            self._log_output(topic, body)
        self._persist()

    def _log_output(self, topic: str, body: dict) -> None:
        if topic == m.CTRL_RELAY:
            if body["on"] != self.last_relay:
                self.log.info("life signal: %s", body["reason"])
            self.last_relay = body["on"]
        elif topic == m.CTRL_SETTINGS:
            if body.get("answers") != self.last_answers:
                self.log.info("settings now MaxFeedIn %d W, PowerFeedInSoc %d %%, SocFloatingMax %d %%, "
                              "ZeroPoint %d W", body["max_feed_in"], body["power_feed_in_soc"],
                              body["soc_floating_max"], body["zero_point"])
                self.last_answers = body.get("answers")
        elif topic == m.CTRL_STATUS and self.log.isEnabledFor(logging.DEBUG):
            for line in body["reasons"][1:]:
                self.log.debug("%s", line)

    def run(self) -> None:
        wake_t = self.clock.monotonic()
        while True:
            now = self.clock.monotonic()
            msg = self.sub.recv(max(0.0, wake_t - now))
            events = []
            if msg is not None:
                events.append((msg.topic, msg.body))
                events.extend((more.topic, more.body) for more in self.sub.drain())
            now = self.clock.monotonic()
            if events or now >= wake_t:
                self.handle(events)
                now = self.clock.monotonic()
                wake_t = min(core.next_wake_t(self.state, self.params, now), now + MAX_WAIT_S)

    def close(self) -> None:
        self.sub.close()
        self.pub.close()


def main(cfg, log) -> int:
    service = ControllerService(cfg, log)
    try:
        service.run()
    finally:
        service.close()
    return 0
