"""The controller and the battery's own age (issue 14.6): venus_publisher republishes the last values it saw every
~1.5 s, so a recent message says nothing about the values; `age_s` does. A battery without a discharge limit uses
the configured fallback, or none (safe minimum); the budget is never unbounded."""
from __future__ import annotations

import pytest

from common import messages as m
from services.controller import core
from tests.test_controller_support import Driver, battery, dtu_status, grid, inverter


def aged(age_s, **fields):
    topic, body = battery(**fields)
    return topic, {**body, "age_s": age_s}


def run(d, battery_event, seconds=12, grid_w=3000.0):
    """A big import for `seconds`, the battery message every second: the law raises what it may."""
    for _ in range(seconds):
        d.step([grid(grid_w, d.now), inverter("A", d.now, limit_pct=d.limits().get("A", 1.0), max_power_w=2000.0),
                battery_event], 1.0)
    return d.last(m.CTRL_STATUS)


def test_a_battery_whose_values_are_two_hours_old_is_stale():
    d = Driver()
    d.step([dtu_status(["A"])])
    status = run(d, aged(7200.0))
    assert "battery" in status["stale"] and status["budget_w"] is None
    assert d.limits()["A"] == d.params.min_percent
    assert "battery stale (values unchanged for 7200 s)" in status["reasons"][0]


def test_fresh_values_give_the_budget_and_it_goes_stale_once_they_stop_changing():
    d = Driver()
    d.step([dtu_status(["A"])])
    status = run(d, aged(2.0))
    assert status["stale"] == [] and status["budget_w"] == 650.0         # min(700, 52 V x 12.5 A)
    assert d.limits()["A"] > d.params.min_percent
    # the driver stops: venus_publisher keeps republishing, with a growing age
    age = 2.0
    while age <= d.params.battery_max_age_s - 5:
        age += 1.0
        d.step([aged(age)], 1.0)
    assert "battery" not in d.last(m.CTRL_STATUS)["stale"]
    wake = core.next_wake_t(d.state, d.params, d.now)
    assert wake <= d.state.battery.value_t + d.params.battery_max_age_s + 0.01     # woken when it turns stale
    d.step([aged(age + 6.0)], 6.0)
    status = d.last(m.CTRL_STATUS)
    assert "battery" in status["stale"] and status["budget_w"] is None
    assert d.limits()["A"] == d.params.min_percent


def test_no_age_is_no_fresh_battery():
    d = Driver()
    d.step([dtu_status(["A"])])
    assert "battery" in run(d, aged(None))["stale"]


def test_no_discharge_limit_and_no_fallback_holds_the_minimum_and_says_why():
    d = Driver()
    d.step([dtu_status(["A"])])
    status = run(d, aged(1.0, dcl_a=None))
    assert "battery" in status["stale"] and status["budget_w"] is None
    assert d.limits()["A"] == d.params.min_percent
    assert "battery reports no discharge limit" in status["reasons"][0]


@pytest.mark.parametrize("fallback_a, budget_w", [(5.0, 260.0), (1000.0, 700.0)])
def test_the_configured_fallback_gives_a_bounded_budget(fallback_a, budget_w):
    d = Driver(battery_fallback_dcl_a=fallback_a)
    d.step([dtu_status(["A"])])
    status = run(d, aged(1.0, dcl_a=None))
    assert status["stale"] == [] and status["budget_w"] == budget_w     # min(MaxFeedIn, 52 V x fallback)
    assert d.inv("A").cmd_pct * 2000.0 / 100.0 <= budget_w + 1e-6


def test_a_reported_limit_wins_over_the_fallback():
    d = Driver(battery_fallback_dcl_a=1000.0)
    d.step([dtu_status(["A"])])
    assert run(d, aged(1.0, dcl_a=2.0))["budget_w"] == 104.0
