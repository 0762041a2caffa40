"""Absurd numbers at the controller's input (issue 14.5): the core never raises on them, its filters and
estimators never become non-finite, a sample time from the future does not keep an input fresh; a step that keeps
failing ends the process with a non-zero code (common.service.StepGuard)."""
from __future__ import annotations

import collections
import dataclasses
import logging
import math
import signal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.config import load_config
from common.service import MAX_FAILED_STEPS, STEP_FAILURE_EXIT_CODE, Stop, StepGuard, TooManyFailures, run_service
from services.controller.service import ControllerService
from tests.support import base_sections, write_config
from tests.test_controller_support import Driver, ack, balcony, battery, dtu_status, grid, inverter

ABSURD = [1.8e308, -1.8e308, math.inf, -math.inf, math.nan, 10 ** 400, -(10 ** 30), 1e12]


def _floats_ok(obj, where="state", seen=None):
    """No NaN anywhere in the state (the output model and the pulse tracker included), and no +inf (-inf is the
    'never' sentinel of a few times)."""
    seen = seen if seen is not None else set()
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, float):
        assert not math.isnan(obj) and obj != math.inf, where
    elif dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            _floats_ok(getattr(obj, f.name), f"{where}.{f.name}", seen)
    elif isinstance(obj, dict):
        for key, value in obj.items():
            _floats_ok(value, f"{where}[{key!r}]", seen)
    elif isinstance(obj, (list, tuple, set, collections.deque)):
        for i, value in enumerate(obj):
            _floats_ok(value, f"{where}[{i}]", seen)
    elif hasattr(type(obj), "__slots__"):     # the output model, the pulse tracker
        for name in type(obj).__slots__:
            _floats_ok(getattr(obj, name, None), f"{where}.{name}", seen)


def _running(law):
    d = Driver(law=law)
    for _ in range(3):
        d.step([dtu_status(["A"]), inverter("A", d.now, limit_pct=d.limits().get("A", 1.0)), battery(),
                grid(300.0, d.now)], 1.0)
    return d


@pytest.mark.parametrize("law", ["project", "seed"])
@pytest.mark.parametrize("value", ABSURD)
def test_absurd_grid_samples_are_not_taken_and_control_resumes(law, value):
    d = _running(law)
    for _ in range(4):            # two samples of 1.8e308 W used to make the seed filter inf, then NaN
        d.step([grid(value, d.now), inverter("A", d.now, limit_pct=d.limits()["A"]), battery()], 3.0)
        _floats_ok(d.state)
    assert "grid" in d.last("ctrl.status")["stale"]          # only absurd samples for 12 s: the grid is stale
    assert d.limits()["A"] == d.params.min_percent
    for _ in range(8):
        d.step([grid(300.0, d.now), inverter("A", d.now, limit_pct=d.limits()["A"]), battery()], 3.0)
        _floats_ok(d.state)
    assert d.last("ctrl.status")["stale"] == []
    assert d.limits()["A"] > d.params.min_percent             # 300 W import: the law raises the output again


@pytest.mark.parametrize("value", [1e300, 1e9, 10 ** 400, math.inf])
def test_absurd_battery_values_make_the_battery_unusable_not_the_budget_huge(value):
    d = _running("project")
    d.step([battery(voltage_v=value, dcl_a=value), grid(3000.0, d.now), inverter("A", d.now)], 1.0)
    status = d.last("ctrl.status")
    assert "battery" in status["stale"] and status["budget_w"] is None
    assert d.limits()["A"] == d.params.min_percent
    _floats_ok(d.state)


def test_a_grid_sample_from_the_future_does_not_stay_fresh():
    d = _running("project")
    d.step([grid(300.0, d.now + 3600.0)], 0.1)     # would be "fresh" for an hour
    d.step([inverter("A", d.now), battery()], 6.0)
    assert "grid" in d.last("ctrl.status")["stale"]
    assert d.limits()["A"] == d.params.min_percent


NUMBERS = st.one_of(st.sampled_from(ABSURD), st.floats(allow_nan=True, allow_infinity=True),
                    st.integers(-(10 ** 400), 10 ** 400))


@st.composite
def mutated_events(draw):
    t = 1000.0 + draw(st.floats(0, 20))
    event = draw(st.sampled_from([grid(300.0, t), balcony(100.0, t), battery(), inverter("A", t),
                                  ack("A", 10.0, sent_t=t, latency_s=1.0), dtu_status(["A"])]))
    topic, body = event
    body = dict(body)
    names = [k for k, v in body.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    for name in draw(st.lists(st.sampled_from(names), max_size=3)) if names else []:
        body[name] = draw(NUMBERS)
    return topic, body


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from([0.0, 0.5, 3.0]), st.lists(mutated_events(), max_size=4)),
                max_size=12),
       st.sampled_from(["project", "seed"]))
def test_no_number_breaks_the_core(actions, law):
    d = Driver(law=law)
    for dt, events in actions:
        d.step(events, dt)           # raises on any exception; checks every output against its schema
        _floats_ok(d.state)


# ------------------------------------------------------------------ StepGuard

def test_step_guard_swallows_failures_until_the_limit_in_a_row(caplog):
    guard = StepGuard(logging.getLogger("t"), "poll", limit=3)
    for _ in range(2):
        with guard:
            raise ValueError("bad")
        assert guard.failed
    with guard:
        pass                          # a success clears the count
    assert not guard.failed and guard.failures == 0
    for _ in range(2):
        with guard:
            raise ValueError("bad")
    with pytest.raises(TooManyFailures, match="poll failed 3 times in a row"):
        with guard:
            raise KeyError("worse")
    assert caplog.text.count("poll failed (ValueError: bad)") == 2    # once per kind of failure


def test_step_guard_lets_stop_through():
    guard = StepGuard(logging.getLogger("t"))
    with pytest.raises(Stop):
        with guard:
            raise Stop("SIGTERM")
    assert guard.failures == 0


def test_run_service_exits_non_zero_after_too_many_failures(tmp_path, rundir):
    path = write_config(str(tmp_path), base_sections(rundir))

    def main(cfg, log):
        guard = StepGuard(log)
        while True:
            with guard:
                raise ZeroDivisionError("boom")

    handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    try:
        assert run_service("controller", main, ["--config", path]) == STEP_FAILURE_EXIT_CODE != 0
    finally:
        signal.signal(signal.SIGTERM, handlers[0])
        signal.signal(signal.SIGINT, handlers[1])


def test_controller_with_a_broken_state_gives_up_after_n_steps(tmp_path, rundir):
    cfg = load_config(write_config(str(tmp_path), base_sections(rundir, control={"state_dir": str(tmp_path)})))
    service = ControllerService(cfg, logging.getLogger("controller"))
    try:
        service.handle([])
        assert not service.guard.failed
        service.state.battery = None              # a state every later step chokes on
        for _ in range(MAX_FAILED_STEPS - 1):
            service.handle([])
            assert service.guard.failed
        with pytest.raises(TooManyFailures):
            service.handle([])
    finally:
        service.close()


def test_the_state_walk_reaches_the_output_model_and_the_pulse_tracker():
    d = _running("project")
    for _ in range(3):
        d.step([grid(900.0, d.now), inverter("A", d.now, limit_pct=d.limits()["A"]), battery()], 1.0)
    d.state.project.pulses.prev_w = math.nan
    with pytest.raises(AssertionError, match="pulses.prev_w"):
        _floats_ok(d.state)
    next(iter(d.state.project.banks.values())).errors[0] = math.nan
    d.state.project.pulses.prev_w = 0.0
    with pytest.raises(AssertionError, match=r"banks\['A'\].errors\[0\]"):
        _floats_ok(d.state)
