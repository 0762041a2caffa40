"""The acload values venus_publisher adds for the GX page (gui/): which limit sets the cap, the inverters' total
AC output. Pure functions of the bus messages (services/venus_publisher/model.py)."""
from __future__ import annotations

import pytest

from services.venus_publisher.model import CAP_BY_TEXT, Inputs, Params, acload_values, cap_by


@pytest.mark.parametrize("budget_w, max_feed_in_w, balcony_w, expected", [
    (700.0, 700, 0.0, 1),          # MaxFeedIn alone
    (500.0, 700, 200.0, 2),        # MaxFeedIn - balcony
    (540.0, 700, 0.0, 3),          # V x DCL below it
    (300.0, 700, 200.0, 3),
    (699.8, 700, 0.0, 1),          # rounding is not a battery limit
    (None, 700, 0.0, 0),           # battery state unusable: only minimum limits
    (500.0, None, 0.0, None),      # no ctrl.settings yet
    (float("nan"), 700, 0.0, 0),   # hostile numbers never become a limit
])
def test_cap_by_names_the_term_of_the_budget(budget_w, max_feed_in_w, balcony_w, expected):
    assert cap_by(budget_w, max_feed_in_w, balcony_w) == expected
    assert expected is None or expected in CAP_BY_TEXT


def inverter(serial, index, ac_power_w, t):
    return {"serial": serial, "name": serial, "index": index, "reachable": True, "producing": True,
            "data_age_s": 0, "sample_t_mono": t, "ac_power_w": ac_power_w}


def test_inverter_power_sums_fresh_inverters_only():
    params = Params(dtu_stale_s=30.0)
    inputs = Inputs(started_t=0.0)
    inputs.on_message("dtu.status", {"serials": ["a", "b", "c"]}, 100.0)
    inputs.on_message("dtu.inverter", inverter("a", 0, 200.0, 100.0), 100.0)
    inputs.on_message("dtu.inverter", inverter("b", 1, 150.5, 100.0), 100.0)
    inputs.on_message("dtu.inverter", inverter("c", 2, None, 100.0), 100.0)
    assert acload_values(inputs, 110.0, params)["/Control/InverterPower"] == 350.5
    inputs.on_message("dtu.inverter", inverter("b", 1, 150.5, 60.0), 60.0)       # b's sample is old
    assert acload_values(inputs, 110.0, params)["/Control/InverterPower"] == 200.0
    assert acload_values(inputs, 200.0, params)["/Control/InverterPower"] is None   # all stale: unknown, not 0


def test_cap_by_on_the_acload_uses_the_settings_in_force():
    inputs = Inputs(started_t=0.0)
    inputs.on_message("ctrl.status", {"budget_w": 650.0, "balcony_w": 0.0}, 10.0)
    assert acload_values(inputs, 11.0, Params())["/Control/CapBy"] is None
    inputs.on_message("ctrl.settings", {"max_feed_in": 700}, 10.0)
    assert acload_values(inputs, 11.0, Params())["/Control/CapBy"] == 3
    inputs.on_message("ctrl.settings", {"max_feed_in": 600}, 10.0)
    assert acload_values(inputs, 11.0, Params())["/Control/CapBy"] == 1
    assert acload_values(inputs, 100.0, Params())["/Control/CapBy"] is None     # ctrl.status stale: not known

