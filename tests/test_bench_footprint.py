"""bench.footprint: the reaction-time pairing on hand-made setpoints and acks (the stack run itself is the
benchmark, not a test)."""
from __future__ import annotations

import pytest

from bench.footprint import percentile, reaction_times


def _ack(serial, seq, sent, latency):
    return {"serial": serial, "command": "limit", "outcome": "ok", "setpoint_seq": seq, "sent_t_mono": sent,
            "latency_s": latency}


def test_reaction_counts_only_commands_that_found_their_inverter_idle():
    setpoints = {10: (100.000, 99.990), 11: (101.000, 100.995), 12: (105.000, 104.998)}
    acks = [
        _ack("A", 10, 100.002, 2.0),     # idle: 12 ms from the sample, 2 ms in the writer
        _ack("A", 11, 102.002, 0.5),     # setpoint 11 came while A was busy until 102.002: not counted
        _ack("B", 11, 101.001, 0.5),     # B idle: counted
        _ack("A", 12, 105.004, 0.5),
    ]
    total, controller, writer = reaction_times(setpoints, acks)
    assert total == pytest.approx([0.012, 0.006, 0.006])
    assert controller == pytest.approx([0.010, 0.005, 0.002])
    assert writer == pytest.approx([0.002, 0.001, 0.004])


def test_a_command_from_before_the_window_still_occupies_its_inverter():
    # seq 7 was published during the warm-up (not in `setpoints`); its ack came 1.5 s after sending, so
    # setpoint 8 found A busy and waited for it: that wait is not the software's reaction time
    setpoints = {8: (100.0, 99.99)}
    acks = [_ack("A", 7, 99.5, 1.5), _ack("A", 8, 101.0, 0.4)]
    assert reaction_times(setpoints, acks) == ([], [], [])


def test_percentile_interpolates():
    assert percentile([], 99) is None
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == pytest.approx(2.5)
    assert percentile([5.0], 99) == 5.0


def test_a_refresh_or_retry_of_the_same_setpoint_is_not_a_reaction():
    setpoints = {5: (100.0, 99.99)}
    acks = [_ack("A", 5, 100.002, 0.5), _ack("A", 5, 161.0, 0.5)]     # the writer's 60 s refresh
    total, _c, _w = reaction_times(setpoints, acks)
    assert total == pytest.approx([0.012])


def test_the_writers_refresh_is_not_a_reaction_but_occupies_the_inverter():
    setpoints = {5: (100.0, 99.99), 6: (160.9, 100.5)}       # 6: a repeat carrying an old decision's sample
    refresh = {**_ack("A", 6, 161.0, 0.5), "detail": "refresh (unchanged for 60 s)"}
    acks = [_ack("A", 5, 100.002, 0.5), refresh]
    total, _c, _w = reaction_times(setpoints, acks)
    assert total == pytest.approx([0.012])


def test_cpu_seconds_are_those_the_threads_ran():
    import os
    import time

    from bench.footprint import cpu_s
    before, start = cpu_s(os.getpid()), time.process_time()
    while time.process_time() - start < 0.05:      # 50 ms of work, however loaded the machine is
        pass
    spent = cpu_s(os.getpid()) - before
    assert 0.04 <= spent < 5
