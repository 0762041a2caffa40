"""End to end, control: load steps, settings over D-Bus, a cap below the minimum output, a failed limit."""
from __future__ import annotations

import os
import subprocess
import time

import pytest

from common import messages as m
from tests.support import wait_for
from tests.system_support import (CAP_W, CONTROL_BACK_S, MIN_PERCENT, QUANTUM_W, SETTLE_S, assert_never_over_cap,
                                  commanded_totals_w, export_wh, module_stack, settle)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    yield from module_stack(tmp_path_factory, "control")


def test_the_loop_closes_after_load_steps(stack):
    first = settle(stack, 300, timeout_s=90)
    up_start = export_wh(stack)
    stack.set_load(1800)                                    # +1500 W: more than the cap can cover
    wait_for(lambda: stack.sim_state()["ac_total_w"] >= CAP_W - 120, SETTLE_S, 0.2, "output up to the cap")
    state = stack.sim_state()
    assert state["ac_total_w"] <= CAP_W + QUANTUM_W + 10
    before_drop = export_wh(stack)
    down = settle(stack, 300)                                # -1500 W
    export_on_drop = export_wh(stack) - before_drop
    print(f"settled in {first:.1f} s from start, {down:.1f} s after -1500 W; export on the drop "
          f"{export_on_drop:.2f} Wh; export while rising {before_drop - up_start:.2f} Wh")
    assert before_drop - up_start < 0.05
    assert export_on_drop < 2.0                              # ~700 W for < 10 s
    assert_never_over_cap(stack)


def test_settings_written_on_dbus_reach_the_controller_and_cap_the_output(stack):
    env = {**os.environ, **stack.env()}
    out = subprocess.run(["dbus-send", "--system", "--print-reply", "--dest=com.victronenergy.acload.http_59",
                          "/MaxFeedIn", "com.victronenergy.BusItem.SetValue", "variant:int32:400"],
                         capture_output=True, text=True, env=env, timeout=20)
    assert "int32 0" in out.stdout, out.stdout + out.stderr
    stack.set_load(1500)
    wait_for(lambda: abs(stack.sim_state()["ac_total_w"] - 400) <= 40, SETTLE_S, 0.2, "output at the new cap 400 W")
    log_len = len(stack.sim_state()["limit_log"])
    time.sleep(3)   # observe a window at the new cap: no command above it
    later = stack.sim_state()["limit_log"][log_len:]
    assert all(total <= 400 + QUANTUM_W for total in commanded_totals_w(stack.sim_state()["limit_log"])[log_len:]), later
    bad = subprocess.run(["dbus-send", "--system", "--print-reply", "--dest=com.victronenergy.acload.http_59",
                          "/MaxFeedIn", "com.victronenergy.BusItem.SetValue", "variant:int32:900"],
                         capture_output=True, text=True, env=env, timeout=20)
    assert "int32 0" not in bad.stdout
    ok = subprocess.run(["dbus-send", "--system", "--print-reply", "--dest=com.victronenergy.acload.http_59",
                         "/MaxFeedIn", "com.victronenergy.BusItem.SetValue", f"variant:int32:{CAP_W}"],
                        capture_output=True, text=True, env=env, timeout=20)
    assert "int32 0" in ok.stdout
    settle(stack, 300)


def _set_max_feed_in(stack, watts: int) -> None:
    out = subprocess.run(["dbus-send", "--system", "--print-reply", "--dest=com.victronenergy.acload.http_59",
                          "/MaxFeedIn", "com.victronenergy.BusItem.SetValue", f"variant:int32:{watts}"],
                         capture_output=True, text=True, env={**os.environ, **stack.env()}, timeout=20)
    assert "int32 0" in out.stdout, out.stdout + out.stderr


def test_a_cap_of_0_w_stops_the_inverters_and_they_start_again(stack):
    """MaxFeedIn 0 is below every inverter's minimum limit: they are stopped over /api/power/config (a limit
    cannot go below min_percent), deliver nothing, and start again once the cap allows (after stop_hold_s, 5 s
    here)."""
    settle(stack, 300)
    _set_max_feed_in(stack, 0)
    try:
        wait_for(lambda: not any(inv["enabled"] for inv in stack.sim_state()["inverters"]), 20, 0.2,
                 "every inverter stopped")
        wait_for(lambda: stack.sim_state()["ac_total_w"] == 0, 20, 0.2, "no output at a cap of 0 W")
    finally:
        _set_max_feed_in(stack, CAP_W)
    wait_for(lambda: all(inv["enabled"] for inv in stack.sim_state()["inverters"]), 30, 0.2,
             "every inverter started again")
    settle(stack, 300)


def test_limit_failure_is_reported_not_applied(stack):
    settle(stack, 300)
    sub = stack.subscriber([m.DTU_ACK])
    stack.fault("opendtu", "limit_failure")
    try:
        stack.set_load(600)
        ack = wait_for(lambda: (lambda msg: msg is not None and msg.body["command"] == "limit"
                                and msg.body["outcome"] in ("failure", "timeout") and msg)(sub.recv(timeout_s=0.2)),
                       40, 0, "a failed limit acknowledgement")
        assert ack.body["serial"]
    finally:
        stack.fault("opendtu", None)
        sub.close()
    settle(stack, 300)


def test_a_stop_the_inverters_ack_but_ignore_still_ends_at_their_minimum(stack):
    """MaxFeedIn 0 while the inverters acknowledge power off but keep running: the minimum limit went out before
    each power off, so what they still deliver is their minimum (at most STOP_CONFIRM_W each, which the writer then
    takes as stopped); dtu.inverter reports `stopping` until a sample shows it; no limit above the minimum is sent
    while the cap is 0; control is back after the cap is restored."""
    settle(stack, 300)
    sub = stack.subscriber([m.DTU_INVERTER])
    log_len = len(stack.sim_state()["limit_log"])
    stack.fault("opendtu", "power_ignored")
    _set_max_feed_in(stack, 0)
    try:
        seen: dict = {}

        def reported(state):
            def check():
                msg = sub.recv(timeout_s=0.2)
                if msg is not None and "power_state" in msg.body:
                    seen.setdefault(msg.body["serial"], []).append(msg.body["power_state"])
                return len(seen) == 2 and all(states[-1] == state for states in seen.values())
            return check

        wait_for(reported("off"), 40, 0, "every stop taken as confirmed by a sample at the minimum")
        assert all("stopping" in states for states in seen.values()), seen
        sim = stack.sim_state()
        assert all(inv["enabled"] for inv in sim["inverters"]), "the fault: power off was ignored"
        assert sim["ac_total_w"] <= 2 * 5.0, sim["ac_total_w"]                 # at most their minimum
        new = sim["limit_log"][log_len:]
        for serial in {entry["serial"] for entry in new}:        # from its first minimum on, only the minimum
            mine = [entry["pct"] for entry in new if entry["serial"] == serial]
            assert MIN_PERCENT in mine and all(p == MIN_PERCENT for p in mine[mine.index(MIN_PERCENT):]), mine
    finally:
        stack.fault("opendtu", None)
        _set_max_feed_in(stack, CAP_W)
        sub.close()
    back_s = settle(stack, 300, timeout_s=60)
    assert back_s <= CONTROL_BACK_S + 10          # + stop_hold_s (5 s here) before a start, and the start itself
    assert_never_over_cap(stack)
