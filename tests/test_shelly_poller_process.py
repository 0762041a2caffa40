"""The real shelly_poller process on a real bus against the Shelly simulators.

The test plays the controller: it publishes `ctrl.relay` and watches `meter.*` and `relay.state`.
"""
import signal
import time

import pytest

from common import messages as m
from common.bus import Publisher, Subscriber
from common.clock import SYSTEM_CLOCK
from sim.plant import Plant, RealtimeRunner
from sim.shelly import ShellySimulator
from tests.support import base_sections, wait_for, write_config

PASSWORD = "grid-Secret-7"


@pytest.fixture
def plant():
    p = Plant.demo(n_inverters=1, seed=2, scenario="demo")
    runner = RealtimeRunner(p).start()
    yield p
    runner.stop()


@pytest.fixture
def sims(plant):
    started = []

    def make(model, role, password=None):
        sim = ShellySimulator(plant, model, role, password=password).start()
        started.append(sim)
        return sim

    yield make
    for sim in started:
        sim.stop()


class Tap:
    """Collects everything shelly_poller publishes."""

    def __init__(self, rundir):
        self.sub = Subscriber(rundir, topics=["meter.", "relay."])
        self.msgs = []

    def pump(self):
        msg = self.sub.recv(0.05)
        while msg is not None:
            self.msgs.append(msg)
            msg = self.sub.recv(0)
        return self.msgs

    def find(self, topic, pred=lambda body: True, since=0.0):
        self.pump()
        return [x for x in self.msgs if x.topic == topic and x.t_mono >= since and pred(x.body)]

    def wait(self, topic, pred=lambda body: True, timeout_s=15.0, since=0.0, what=None):
        return wait_for(lambda: self.find(topic, pred, since), timeout_s, interval_s=0.05,
                        what=what or f"{topic} matching")[-1]

    def close(self):
        self.sub.close()


def relay_command(controller, tap, on, timeout_s=15.0):
    """Publish ctrl.relay until its relay.state comes back (the first ones may precede the SUB's connection)."""
    deadline = time.monotonic() + timeout_s
    while True:
        seq = controller.publish(m.CTRL_RELAY, {"on": on, "reason": "test"})
        try:
            return tap.wait(m.RELAY_STATE, lambda b: b["command_seq"] == seq, timeout_s=3.0).body
        except AssertionError:
            if time.monotonic() > deadline:
                raise


def test_service_polls_meters_carries_out_relay_commands_and_isolates_a_hanging_meter(
        rundir, procs, plant, sims):
    grid = sims("pro_3em", "grid", PASSWORD)
    balcony = sims("shem", "balcony")
    relay = sims("shsw1", "relay")
    path = write_config(rundir, base_sections(
        rundir,
        grid_meter={"host": f"127.0.0.1:{grid.port}", "password": PASSWORD, "poll_interval": 0.5},
        balcony_meter={"host": f"127.0.0.1:{balcony.port}", "poll_interval": 1, "timeout": 1},
        relay={"keepalive_url": f"{relay.url}/relay/0?turn=on&timer=2",
               "switchoff_url": f"{relay.url}/relay/0?turn=off", "timeout": 2}))
    tap = Tap(rundir)
    controller = Publisher("controller", rundir)
    proc = procs.python("shelly_poller", "services.shelly_poller", "--config", path)
    try:
        # meters: fresh samples on both topics, status ok, the arrival time is recent
        sample = tap.wait(m.METER_GRID, timeout_s=20, what="a grid sample")
        assert sample.body["device"].startswith("SPEM-003") and len(sample.body["phases"]) == 3
        assert sample.body["sign"] == "positive_is_import"
        assert 0 <= SYSTEM_CLOCK.monotonic() - sample.body["sample_t_mono"] < 5
        assert tap.wait(m.METER_BALCONY).body["device"] == "SHEM"
        tap.wait(m.METER_STATUS, lambda b: b["role"] == "grid" and b["ok"])
        tap.wait(m.METER_STATUS, lambda b: b["role"] == "balcony" and b["ok"])
        assert PASSWORD not in proc.output()

        # no command yet: the relay was never touched
        relay_requests = relay.requests_served
        assert relay_requests == 0

        # the controller says on: one request, verified, reported with the command's seq
        state = relay_command(controller, tap, True)
        assert state["ok"] and state["on"] is True and 0 < state["timer_remaining_s"] <= 2
        assert plant.relay_on
        # the controller falls silent: no request, the timer runs out, the relay opens
        served = relay.requests_served
        wait_for(lambda: not plant.relay_on, 10.0, what="relay flip-back")
        time.sleep(1.0)
        assert relay.requests_served == served, "shelly_poller re-armed the relay on its own"

        # a hanging balcony meter blocks neither the grid meter nor the relay
        balcony.set_fault("hang")
        since = SYSTEM_CLOCK.monotonic()
        tap.wait(m.METER_STATUS, lambda b: b["role"] == "balcony" and b["error_kind"] == "timeout", since=since)
        mark = SYSTEM_CLOCK.monotonic()
        wait_for(lambda: len(tap.find(m.METER_GRID, since=mark)) >= 4, 10.0, what="grid samples during the hang")
        state = relay_command(controller, tap, False)
        assert state["ok"] and state["on"] is False and not plant.relay_on
        balcony.set_fault(None)
        tap.wait(m.METER_STATUS, lambda b: b["role"] == "balcony" and b["ok"], since=SYSTEM_CLOCK.monotonic())

        # a frozen grid meter: status stale, no sample published as new meanwhile
        grid.set_fault("stale")
        since = SYSTEM_CLOCK.monotonic()
        tap.wait(m.METER_STATUS, lambda b: b["role"] == "grid" and b["error_kind"] == "stale", since=since,
                 timeout_s=20)
        frozen = tap.find(m.METER_GRID, since=since + 1.5)
        assert len(frozen) <= 1, f"{len(frozen)} frozen samples published as new"
        grid.set_fault(None)
        tap.wait(m.METER_GRID, since=SYSTEM_CLOCK.monotonic())

        assert procs.stop(proc, signal.SIGTERM) == 0
    finally:
        controller.close()
        tap.close()


def test_wrong_password_is_reported_with_the_device_and_without_the_password(rundir, procs, sims):
    grid = sims("em_gen3", "grid", PASSWORD)
    path = write_config(rundir, base_sections(
        rundir, grid_meter={"host": f"127.0.0.1:{grid.port}", "password": "not-" + PASSWORD}))
    tap = Tap(rundir)
    proc = procs.python("shelly_poller", "services.shelly_poller", "--config", path)
    try:
        status = tap.wait(m.METER_STATUS, lambda b: b["role"] == "grid" and b["error_kind"] == "auth",
                          timeout_s=20).body
        assert f"127.0.0.1:{grid.port}" in status["detail"] and PASSWORD not in status["detail"]
        assert not tap.find(m.METER_GRID)
        wait_for(lambda: "auth" in proc.output(), 10.0, what="the auth error in the log")
        assert PASSWORD not in proc.output()
    finally:
        tap.close()


def test_relay_on_the_meter_host_uses_the_meter_credentials(rundir, procs, sims):
    grid = sims("pro_em", "grid", PASSWORD)           # its switch:0 is the relay; digest with the grid password
    base = f"{grid.url}/rpc/Switch.Set?id=0"
    path = write_config(rundir, base_sections(
        rundir, grid_meter={"host": f"127.0.0.1:{grid.port}", "password": PASSWORD},
        relay={"keepalive_url": f"{base}&on=true&toggle_after=900", "switchoff_url": f"{base}&on=false"}))
    tap = Tap(rundir)
    controller = Publisher("controller", rundir)
    proc = procs.python("shelly_poller", "services.shelly_poller", "--config", path)
    try:
        tap.wait(m.METER_GRID, timeout_s=20)

        state = relay_command(controller, tap, True)
        assert state["ok"] and state["on"] is True and state["timer_remaining_s"] == 900, state
        state = relay_command(controller, tap, False)
        assert state["ok"] and state["on"] is False, state
        assert "credentials of the grid meter" in proc.output()
    finally:
        controller.close()
        tap.close()


def test_status_keeps_coming_while_a_request_hangs(rundir, procs, sims):
    grid = sims("shem3", "grid")
    path = write_config(rundir, base_sections(
        rundir, grid_meter={"host": f"127.0.0.1:{grid.port}", "timeout": 20}))
    tap = Tap(rundir)
    proc = procs.python("shelly_poller", "services.shelly_poller", "--config", path)
    try:
        tap.wait(m.METER_GRID, timeout_s=20)
        grid.set_fault("hang")
        since = SYSTEM_CLOCK.monotonic()
        status = tap.wait(m.METER_STATUS, lambda b: b["role"] == "grid" and not b["ok"], since=since,
                          timeout_s=15).body
        assert status["error_kind"] == "timeout" and "pending" in status["detail"]
        assert SYSTEM_CLOCK.monotonic() - since < 12
        grid.set_fault(None)
        tap.wait(m.METER_GRID, since=SYSTEM_CLOCK.monotonic(), timeout_s=15)
        assert proc.alive()
    finally:
        tap.close()
