"""End to end, control: load steps, settings over D-Bus, a cap below the minimum output, a failed limit."""
from __future__ import annotations

import os
import subprocess
import time

import pytest

from common import messages as m
from tests.support import wait_for
from tests.system_support import (CAP_W, QUANTUM_W, SETTLE_S, assert_never_over_cap, commanded_totals_w,
                                  export_wh, module_stack, settle)


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
