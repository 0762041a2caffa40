"""Pulse prediction (services/controller/pulses.py) and its use by the project law: hand-made load traces."""
from __future__ import annotations

import pytest

from common import messages as m
from services.controller import pulses
from tests.test_controller_rules import _project
from tests.test_controller_support import battery, grid, inverter

MIN_W, TOL, FORGET, CYCLES, PMIN, PMAX = 200.0, 1.5, 150.0, 1, 10.0, 60.0


def square(t, period=20, on=8, size=850.0, base=130.0, start=5, stop=None, jitter=()):
    """A pulsed load at second t: on for `on` s every `period` s from `start` (periods from `jitter` if given)."""
    if t < start or (stop is not None and t >= stop):
        return base
    k, t0 = 0, start
    while True:
        p = jitter[k % len(jitter)] if jitter else period
        if t < t0 + p:
            return base + size if t - t0 < on else base
        t0 += p
        k += 1


def feed(tracker, load, until, lead=3.5):
    """Samples every second (phase 0.3) up to `until`; returns {t: anticipation} after each sample."""
    out = {}
    for k in range(until):
        t = k + 0.3
        tracker.observe(t, load(k), MIN_W, TOL, FORGET)
        out[k] = tracker.anticipation_w(t, lead, CYCLES, TOL, PMIN, PMAX)
    return out


def test_edges_below_the_minimum_form_no_train():
    tr = pulses.PulseTracker()
    got = feed(tr, lambda k: square(k, size=150.0), 120)
    assert tr.trains == [] and set(got.values()) == {0.0}


@pytest.mark.parametrize("second, expected", [
    (30, 0.0),          # 2nd pulse on (rises at 5, 25): only one period seen, nothing predicted yet
    (48, 0.0),          # 3rd pulse (rise 45) on: period 20 twice, on-time 8 twice -> steady; fall at 53 beyond 48 + 3.5
    (50, -850.0),       # 50.3 + 3.5 lies after the fall at 53: command as if the pulse had ended
    (52, -850.0),
    (53, 0.0),          # the fall seen: nothing more to anticipate until the next rise comes close
    (60, 0.0),
    (62, 850.0),        # next rise at 65: 62.3 + 3.5 is past it
    (64, 850.0),
])
def test_a_steady_train_is_anticipated_by_the_lead(second, expected):
    tr = pulses.PulseTracker()
    got = feed(tr, square, second + 1)
    assert got[second] == pytest.approx(expected, abs=1.0)


@pytest.mark.parametrize("second, lead, fall_lead, expected", [
    (49, 3.5, None, 0.0),          # 49.3 + 3.5 < 53: the fall is not yet within the lead
    (49, 3.5, 4.0, -850.0),        # with a longer lead before falls it is
    (61, 3.5, 4.0, 0.0),           # the rise at 65 still uses the shorter lead: 61.3 + 3.5 < 65
    (62, 3.5, 4.0, 850.0),
])
def test_falls_may_be_anticipated_with_a_longer_lead(second, lead, fall_lead, expected):
    tr = pulses.PulseTracker()
    for k in range(second + 1):
        tr.observe(k + 0.3, square(k), MIN_W, TOL, FORGET)
    assert tr.anticipation_w(second + 0.3, lead, CYCLES, TOL, PMIN, PMAX, fall_lead) == pytest.approx(expected, abs=1)


@pytest.mark.parametrize("second, min_cycles, fall_min_cycles, expected", [
    (30, 1, None, 0.0),            # 2nd pulse (rise 25, fall due at 33): one on-time seen, one wanted steady
    (30, 1, 0, -850.0),            # falls predicted from the first on-time seen
    (30, 0, 0, -850.0),
    (42, 1, 0, 0.0),               # the 3rd rise (45) needs a steady period ...
    (42, 0, 0, 850.0),             # ... unless rises are predicted from the first period seen
])
def test_falls_and_rises_need_their_own_number_of_steady_cycles(second, min_cycles, fall_min_cycles, expected):
    tr = pulses.PulseTracker()
    for k in range(second + 1):
        tr.observe(k + 0.3, square(k), MIN_W, TOL, FORGET)
    got = tr.anticipation_w(second + 0.3, 3.5, min_cycles, TOL, PMIN, PMAX, None, fall_min_cycles)
    assert got == pytest.approx(expected, abs=1)


def test_irregular_pulses_are_not_predicted():
    tr = pulses.PulseTracker()
    got = feed(tr, lambda k: square(k, jitter=(20, 27, 16, 31, 22)), 200)
    assert set(got.values()) == {0.0}


def test_a_train_that_stops_is_predicted_at_most_once_more():
    tr = pulses.PulseTracker()
    got = feed(tr, lambda k: square(k, stop=100), 200)      # last rise at 85, fall at 93; no rise at 105
    assert got[102] == pytest.approx(850.0, abs=1.0)        # the rise expected at 105 is anticipated ...
    assert all(got[k] == 0.0 for k in range(107, 200))      # ... and once overdue the train predicts nothing
    assert tr.trains[0].steady_periods == 0


def test_two_plates_of_different_size_are_separate_trains():
    def load(k):
        return square(k, period=20, on=8, size=850.0) + square(k, period=30, on=12, size=1400.0, start=7, base=0.0)
    tr = pulses.PulseTracker()
    feed(tr, load, 200)
    sizes = sorted(round(t.size_w) for t in tr.trains)
    assert len(sizes) == 2 and abs(sizes[0] - 850) < 30 and abs(sizes[1] - 1400) < 30
    periods = sorted(round(t.period_s) for t in tr.trains)
    assert periods == [20, 30]


def test_edges_of_two_trains_in_the_same_sample_are_split_between_them():
    # A: 850 W, rises 5 + 20 k, falls 13 + 20 k; B: 1400 W, rises 63 + 30 k, falls 73 + 30 k.
    # At 73 both fall (-2250 W), at 93 A falls while B rises (+550 W): neither jump fits one train.
    def load(k):
        return square(k, period=20, on=8, size=850.0) + square(k, period=30, on=10, size=1400.0, start=63, base=0.0)
    tr = pulses.PulseTracker()
    feed(tr, load, 200)
    assert len(tr.trains) == 2
    a, b = sorted(tr.trains, key=lambda x: x.size_w)
    assert (round(a.period_s), round(a.on_s), round(b.period_s), round(b.on_s)) == (20, 8, 30, 10)
    assert abs(a.size_w - 850) < 30 and abs(b.size_w - 1400) < 30


# ------------------------------------------------------------------ in the project law

def _run_law(**changes):
    """A pulsed 600 W load on a 110 W base; two inverters of 400 W each reporting a constant 40 W and never
    acknowledging (so the output model is the report and the load estimate is exact). Returns {second: total W}."""
    d = _project(("A", "B"), limit=5.0, **{"max_feed_in": 800, "pulse_lead_s": 1.5, "pulse_fall_extra_s": 0.0,
                                           "ack_delay_initial_s": 0.0,
                                           **changes})     # 20 W each
    t0 = d.now
    totals = {}
    for k in range(90):
        t = t0 + k + 0.3
        events = [grid(square(k, size=600.0, base=110.0) - 40.0, t)]
        if k % 5 == 0:
            events += [inverter(s, t - 0.2, limit_pct=5.0, index=i) for i, s in enumerate("AB")]
            events.append(battery(voltage_v=52.0, dcl_a=20.0))
        d.step(events, dt=1.0)
        totals[k] = sum(pct * 4.0 for pct in d.limits().values())
    return totals


def test_project_law_reduces_ahead_of_a_predicted_pulse_end_and_raises_ahead_of_the_next():
    with_prediction, without = _run_law(), _run_law(pulse_min_w=0.0)
    # pulse 3 rises at 45, falls at 53; lead = dead time 2 s (initial) + 1.5 s
    assert with_prediction[48] > 500 and without[48] > 500                  # the pulse is followed
    assert with_prediction[50] < 150 < without[50]                           # reduced before the fall
    assert with_prediction[62] > 500 > without[62]                           # raised before the rise at 65
    assert without[53] < 150 and without[66] > 500                           # without: only after the edges


def test_project_law_prediction_never_exceeds_the_cap():
    totals = _run_law(max_feed_in=300)
    assert max(totals.values()) <= 300.0 + 1e-6
    assert totals[62] > 250                                                  # the anticipated rise, up to the cap
