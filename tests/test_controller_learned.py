"""The project law's learned response (dead time, ack delay): identified in closed loop on the bench's plant model
(the real writer machine, sim's DTU and inverters), kept across a restart by the state file's `learned` part,
and harmless while it is still wrong."""
import json

import numpy as np

from bench.loop import ClosedLoop
from bench.plantcfg import PlantConfig
from bench.policies import CorePolicy
from services.controller import core, project_law
from sim.loadgen import Trace

SERIALS = ("116100000001", "116100000002")


def steps_trace(levels=(300.0, 650.0, 250.0, 500.0), each_s=240) -> Trace:
    rng = np.random.default_rng(3)
    load = np.concatenate([np.full(each_s, level) for level in levels]) + rng.normal(0.0, 2.0, each_s * len(levels))
    return Trace(load.tolist(), name="steps")


class Restored(CorePolicy):
    """The project law started from a state file's content."""

    def __init__(self, persisted, **changes):
        super().__init__("project", **changes)
        self.persisted = persisted

    def reset(self, loop):
        super().reset(loop)
        self.state = core.initial_state(self.params, self.persisted)
        self.reasons = []

    def step(self, events, now):
        outputs = super().step(events, now)
        self.reasons += [line for topic, body in outputs if topic == "ctrl.status" for line in body["reasons"]]
        return outputs


def run(dead_time_s: float, policy, trace=None):
    trace = trace or steps_trace()
    loop = ClosedLoop(trace, PlantConfig().with_dead_time(dead_time_s), policy, seed=5)
    res = loop.run()
    return trace, res


def settled(trace: Trace, res, each_s=240, tail_s=80) -> list[tuple[float, float]]:
    """Per load level: (std of the output, mean grid) over the last `tail_s` of the level."""
    load = np.asarray(trace.load_w)
    out = []
    for end in range(each_s, trace.duration_s + 1, each_s):
        u = res.output_w[end - tail_s:end]
        out.append((float(u.std()), float((load[end - tail_s:end] - u).mean())))
    return out


def test_a_long_dead_time_is_learned_kept_across_a_restart_and_used_from_the_start():
    policy = CorePolicy("project")
    run(10.0, policy)
    saved = json.loads(json.dumps(core.persistable(policy.state)))
    assert set(saved["learned"]) == set(SERIALS)
    assert all(v["dead_time_s"] == 10.0 for v in saved["learned"].values())
    assert all(0.2 <= v["ack_delay_s"] <= 3.0 for v in saved["learned"].values())
    again = Restored(saved)
    run(10.0, again, steps_trace(levels=(300.0, 650.0), each_s=60))
    first = next(r for r in again.reasons if r.startswith("project raise"))
    assert "dead time 10/10 s" in first
    restored = core.initial_state(again.params, saved)
    assert "learned response: " in restored.reasons[-1]


def test_invalid_learned_entries_are_dropped():
    state = core.initial_state(core.Params())
    note = project_law.restore_learned(state, {"A": {"dead_time_s": 4.5, "ack_delay_s": 1.0},
                                               "B": {"dead_time_s": -1, "ack_delay_s": 1.0},
                                               "C": {"dead_time_s": True, "ack_delay_s": 1.0},
                                               "D": "x", "E": {"dead_time_s": 1e9, "ack_delay_s": 0.0},
                                               "F": {"dead_time_s": 2, "ack_delay_s": 1.0, "ramp_w_per_s": -5},
                                               "G": {"dead_time_s": 2, "ack_delay_s": 1.0, "ramp_w_per_s": 100}})
    assert state.project.learned == {"A": {"dead_time_s": 4.5, "ack_delay_s": 1.0, "ramp_w_per_s": 0.0},
                                     "G": {"dead_time_s": 2.0, "ack_delay_s": 1.0, "ramp_w_per_s": 100.0}}
    assert "5 invalid dropped" in note
    assert project_law.restore_learned(state, ["not", "a", "dict"]) == "learned response invalid"


def _assert_calm(trace, res, max_cmd_per_h):
    hours = trace.duration_s / 3600.0
    assert res.commands / hours <= max_cmd_per_h, res.commands / hours
    for std_w, grid_w in settled(trace, res):
        assert std_w < 15.0, (std_w, grid_w)             # no sustained oscillation once the load is steady
        assert -10.0 < grid_w < 60.0, (std_w, grid_w)    # and at the target (25 W), give or take the noise


def test_starting_far_too_short_on_a_slow_plant_does_not_oscillate():
    trace, res = run(10.0, CorePolicy("project", dead_time_initial_s=0.5))
    _assert_calm(trace, res, 320)


def test_starting_far_too_long_on_a_fast_plant_does_not_oscillate():
    trace, res = run(0.5, CorePolicy("project", dead_time_initial_s=15.0))
    _assert_calm(trace, res, 320)


def test_the_learned_part_is_saved_on_a_change_at_most_every_ten_minutes():
    from services.controller.response_model import DeadTimeBank
    state = core.initial_state(core.Params())
    bank = DeadTimeBank(1.5, 3.0, 0.0, 0.0, initial_s=2.0)
    state.project.banks["A"] = bank
    v0 = core.persist_version(state)
    project_law._note_learned(state, 100.0)
    assert core.persist_version(state) == v0 + 1 and state.project.learned["A"]["dead_time_s"] == 2.0
    bank.best = len(bank.models) - 1                          # now a different dead time and ramp
    project_law._note_learned(state, 100.0 + project_law.LEARNED_SAVE_S - 1.0)
    assert core.persist_version(state) == v0 + 1               # too soon: the flash is spared
    project_law._note_learned(state, 100.0 + project_law.LEARNED_SAVE_S)
    assert core.persist_version(state) == v0 + 2 and state.project.learned["A"]["dead_time_s"] == 18.0
    project_law._note_learned(state, 100.0 + 3 * project_law.LEARNED_SAVE_S)
    assert core.persist_version(state) == v0 + 2               # unchanged: nothing written
