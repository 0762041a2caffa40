"""End to end: a battery that disappears, and garbage on the bus."""
from __future__ import annotations

import time

import pytest

from common import messages as m
from tests.support import wait_for
from tests.system_support import (assert_never_over_cap, module_stack, settle)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    yield from module_stack(tmp_path_factory, "bus_battery")


def test_battery_gone_means_minimum_output_and_no_keepalive(stack):
    settle(stack, 300)
    sub = stack.subscriber([m.CTRL_STATUS, m.VENUS_BATTERY, m.CTRL_RELAY])
    keepalives = []

    def take(pred):
        def check():
            msg = sub.recv(timeout_s=0.2)
            if msg is not None and msg.topic == m.CTRL_RELAY and msg.body["on"]:
                keepalives.append(msg.body)
            return msg is not None and pred(msg)
        return check

    stack.fault("battery", "absent")
    try:
        wait_for(take(lambda msg: msg.topic == m.VENUS_BATTERY and not msg.body["present"]), 30, 0,
                 "venus.battery present=false")
        wait_for(take(lambda msg: msg.topic == m.CTRL_STATUS and "battery" in msg.body["stale"]), 30, 0,
                 "the controller to mark the battery stale")
        wait_for(lambda: take(lambda msg: False)() or stack.sim_state()["ac_total_w"] <= 60, 30, 0.2,
                 "output down to the minimum")
        end = time.monotonic() + 3
        while time.monotonic() < end:
            take(lambda msg: False)()
        assert keepalives == [], "a relay keep-alive was sent without a battery"
    finally:
        stack.fault("battery", None)
        sub.close()


def test_garbage_on_the_bus_is_dropped_and_the_services_carry_on(stack):
    """A rogue publisher takes the shelly_poller's endpoint and sends garbage, an unknown version and bad bodies
    between valid grid samples: every subscriber drops them, nobody crashes, the valid samples still count."""
    import msgpack
    import zmq
    from common.bus import encode, endpoint

    settle(stack, 300)
    pids = {name: pid for name, (state, pid) in stack.status().items()}
    stack.supervisorctl("stop", "shelly_poller")
    rogue = zmq.Context.instance().socket(zmq.PUB)
    rogue.bind(endpoint(stack.rundir, "shelly_poller"))
    sub = stack.subscriber([m.CTRL_STATUS])
    try:
        valid = {"device": "SHEM", "power_w": 4000.0, "sign": "positive_is_import",
                 "phases": [{"power_w": 4000.0}], "sample_t_mono": 0.0}
        hostile = [
            [b"meter.grid", b"\xc1 not msgpack"],
            [b"meter.grid", msgpack.packb({"v": 2, "src": "shelly_poller", "seq": 1, "t_mono": 0, "t_wall": 0,
                                           "body": valid})],
            [b"meter.grid", msgpack.packb({"v": 1, "src": "shelly_poller", "seq": 2, "t_mono": 0, "t_wall": 0,
                                           "body": {**valid, "power_w": "lots"}})],
            [b"meter.grid", msgpack.packb({"v": 1, "src": "shelly_poller", "seq": 3, "t_mono": 0, "t_wall": 0,
                                           "body": {**valid, "power_w": float("nan")}})],
            [b"ctrl.setpoint", msgpack.packb({"v": 1, "src": "shelly_poller", "seq": 4, "t_mono": 0, "t_wall": 0,
                                              "body": {"limits": [{"serial": "x", "limit_pct": 100}]}})],
            [b"meter.grid"],
        ]
        seq = 10
        deadline = time.monotonic() + 8
        saw_high_grid = False
        while time.monotonic() < deadline:
            for frames in hostile:
                rogue.send_multipart(frames)
            seq += 1
            from common.clock import SYSTEM_CLOCK
            body = {**valid, "sample_t_mono": SYSTEM_CLOCK.monotonic()}
            rogue.send_multipart(encode("shelly_poller", seq, m.METER_GRID, body))
            msg = sub.recv(timeout_s=0.3)
            if msg is not None and msg.body["grid_w"] == 4000.0:
                saw_high_grid = True
        assert saw_high_grid, "the controller ignored the valid samples between the garbage"
        after = {name: pid for name, (state, pid) in stack.status().items() if state == "RUNNING"}
        for name in ("dtu_poller", "controller", "venus_publisher"):
            assert after.get(name) == pids[name], f"{name} restarted: garbage on the bus crashed it"
        assert_never_over_cap(stack)
    finally:
        rogue.close(0)
        sub.close()
        stack.supervisorctl("start", "shelly_poller")
    wait_for(lambda: stack.status()["shelly_poller"][0] == "RUNNING", 20, 0.2, "shelly_poller back")
    settle(stack, 300, timeout_s=60)
