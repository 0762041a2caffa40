"""venus_publisher's pure model: how alarms from the bus become alarm levels and notification texts."""
from __future__ import annotations

from common import messages as m
from services.venus_publisher.model import ALARM, BatteryView, Inputs, Params, alarm_levels
from services.venus_publisher.notify import cause_texts


def inverter(serial, index, ac_power_w, t):
    return {"serial": serial, "name": serial, "index": index, "reachable": True, "producing": True,
            "data_age_s": 0, "sample_t_mono": t, "ac_power_w": ac_power_w}


def test_an_inverters_unconfirmed_stop_stays_an_alarm_whatever_the_watchdog_says():
    """dtu.alarm is kept per kind and inverter: the setpoint watchdog clearing must not hide an unconfirmed stop."""
    params, now = Params(), 100.0
    inputs = Inputs(started_t=0.0)
    inputs.on_message(m.DTU_INVERTER, inverter("A", 0, 0.0, now), now)
    inputs.on_message(m.DTU_ALARM, {"kind": "stop_unconfirmed", "serial": "A", "active": True,
                                    "detail": "inverter A: 40 W 45 s after power off"}, now)
    inputs.on_message(m.DTU_ALARM, {"kind": "setpoint_watchdog", "active": False}, now + 1)
    levels = alarm_levels(inputs, BatteryView(present=True, voltage_v=52.0), now + 1, params)
    assert levels["inverter"] == ALARM
    text = cause_texts(inputs, BatteryView(present=True, voltage_v=52.0), levels, now + 1, params)["inverter"]
    assert "stop not confirmed" in text and "40 W" in text
    inputs.on_message(m.DTU_ALARM, {"kind": "stop_unconfirmed", "serial": "A", "active": False}, now + 2)
    assert alarm_levels(inputs, BatteryView(present=True, voltage_v=52.0), now + 2, params)["inverter"] != ALARM


def test_a_step_that_keeps_failing_gives_up_after_the_step_guard_limit():
    """venus_publisher's GLib callbacks: a failing step is skipped and the source kept; MAX_FAILED_STEPS in a row
    give up (the loop quits, the process exits 1 for a restart) and remove the source; a success in between
    resets the count."""
    import logging

    from common.service import MAX_FAILED_STEPS, StepGuard
    from services.venus_publisher.app import stepped

    outcomes, given_up = [], []

    def step():
        if outcomes.pop(0):
            raise ValueError("a bug")

    callback = stepped(step, StepGuard(logging.getLogger("test")), given_up.append)
    outcomes[:] = [True] * (MAX_FAILED_STEPS - 1) + [False] + [True] * MAX_FAILED_STEPS
    kept = [callback() for _ in range(2 * MAX_FAILED_STEPS)]
    assert kept == [True] * (2 * MAX_FAILED_STEPS - 1) + [False]
    assert len(given_up) == 1 and f"failed {MAX_FAILED_STEPS} times in a row" in str(given_up[0])
