"""bench.control_quality: the metrics on hand-made traces, the oracle, and short closed-loop runs of every policy."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from bench import metrics, oracle
from bench.control_quality import run_policies
from bench.plantcfg import PlantConfigError, load_plant, parse_plant
from bench.policies import POLICIES, allocate_w
from bench.sweep import goals
from sim.loadgen import SCENARIOS, Trace, TraceError, builtin, read_csv, write_csv

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ------------------------------------------------------------------ metrics on hand-made traces
def test_constant_load_with_known_output_gives_known_energies():
    n = 3600
    load = np.full(n, 300.0)
    balcony = np.zeros(n)
    # first half: 350 W output -> 50 W export for 1800 s = 25 Wh; second half: 200 W -> 100 W import = 50 Wh
    u = np.concatenate([np.full(n // 2, 350.0), np.full(n // 2, 200.0)])
    m = metrics.score(load, balcony, u, tau_w=25.0, p_max_w=800.0, p_min_w=20.0, commands=2)
    assert m["export_wh"] == pytest.approx(25.0)
    assert m["grid_export_wh"] == pytest.approx(25.0)
    assert m["import_wh"] == pytest.approx(50.0)
    # avoidable: g - tau = 75 W for 1800 s = 37.5 Wh (nothing unavoidable at 300 W load)
    assert m["avoidable_import_wh"] == pytest.approx(37.5)
    assert m["peak_export_w"] == pytest.approx(50.0)
    assert m["commands_per_h"] == pytest.approx(2.0)
    assert m["cost_wh"] == pytest.approx(62.5)


def test_avoidable_import_excludes_saturation_and_the_minimum_limit():
    # 1 h at 2000 W with the inverters at their 800 W maximum: all import beyond tau is unavoidable
    n = 3600
    m = metrics.score(np.full(n, 2000.0), np.zeros(n), np.full(n, 800.0), 25.0, 800.0, 20.0)
    assert m["import_wh"] == pytest.approx(1200.0)
    assert m["unavoidable_import_wh"] == pytest.approx(1175.0)
    assert m["avoidable_import_wh"] == pytest.approx(0.0)
    # ... at 600 W output 200 W of it was avoidable: 200 Wh
    m = metrics.score(np.full(n, 2000.0), np.zeros(n), np.full(n, 600.0), 25.0, 800.0, 20.0)
    assert m["avoidable_import_wh"] == pytest.approx(200.0)
    # 35 W load, P_min 20 W: 35 - 25 = 10 W < P_min, so the whole import is unavoidable with the inverter off
    m = metrics.score(np.full(n, 35.0), np.zeros(n), np.zeros(n), 25.0, 800.0, 20.0)
    assert m["avoidable_import_wh"] == pytest.approx(0.0)
    assert m["export_wh"] == 0.0
    # a lower P_max (e.g. the balcony takes part of the feed-in cap) raises the unavoidable part per second
    p_max = np.concatenate([np.full(n // 2, 800.0), np.full(n // 2, 400.0)])
    m = metrics.score(np.full(n, 1000.0), np.zeros(n), np.full(n, 400.0), 25.0, p_max, 20.0)
    assert m["avoidable_import_wh"] == pytest.approx(400.0 * 0.5)


def test_balcony_export_is_not_counted_as_battery_export():
    n = 100
    load, balcony = np.full(n, 200.0), np.full(n, 500.0)      # the balcony alone exports 300 W
    m = metrics.score(load, balcony, np.zeros(n), 25.0, 300.0, 20.0)
    assert m["export_wh"] == 0.0
    assert m["grid_export_wh"] == pytest.approx(300.0 * n / 3600.0)
    m = metrics.score(load, balcony, np.full(n, 50.0), 25.0, 300.0, 20.0)
    assert m["export_wh"] == pytest.approx(50.0 * n / 3600.0)


def test_mae_against_the_oracle():
    n = 10
    load = np.full(n, 300.0)
    m = metrics.score(load, np.zeros(n), np.full(n, 265.0), 25.0, 800.0, 20.0, g_oracle_w=np.full(n, 25.0))
    assert m["mae_vs_oracle_w"] == pytest.approx(10.0)


def test_oracle_is_ramp_limited_and_never_exports():
    net = np.array([100.0] * 5 + [1000.0] * 20 + [100.0] * 10 + [30.0] * 5)
    u = oracle.clairvoyant_output_w(net, 25.0, 800.0, 20.0, ramp_up_w_per_s=200.0, ramp_down_w_per_s=100.0)
    assert np.all(np.abs(np.diff(u)) <= 200.0 + 1e-9)
    assert np.all(np.diff(u) >= -100.0 - 1e-9)
    assert np.all(net - u >= 25.0 - 1e-9)                        # grid never below the target: no export
    assert u.max() == pytest.approx(800.0)
    assert u[-1] == 0.0                                           # 30 - 25 = 5 W < P_min: off


def test_allocate_uses_fewer_inverters_below_their_minimum():
    assert allocate_w(600.0, [(600.0, 30.0), (600.0, 30.0)]) == [300.0, 300.0]
    assert allocate_w(40.0, [(600.0, 30.0), (600.0, 30.0)]) == [40.0, 0.0]
    assert allocate_w(-5.0, [(600.0, 30.0)]) == [0.0]
    assert allocate_w(5000.0, [(600.0, 30.0), (400.0, 20.0)]) == [600.0, 400.0]


# ------------------------------------------------------------------ inputs
def test_scenarios_are_deterministic_and_shaped():
    for name in SCENARIOS:
        if name == "day":
            continue
        a, b = builtin(name, 3), builtin(name, 3)
        assert a.load_w == b.load_w and a.balcony_w == b.balcony_w
        assert a.duration_s <= 3 * 3600
        assert min(a.load_w) >= 0.0
    assert max(builtin("overload").load_w) > 2000.0
    assert max(builtin("balcony_clouds").balcony_w) > 300.0
    assert builtin("day").duration_s == 86400


def test_csv_round_trip_and_bad_files(tmp_path):
    trace = Trace([100.0 + i for i in range(20)], [0.0] * 10 + [50.0] * 10, "x")
    path = str(tmp_path / "t.csv")
    write_csv(path, trace)
    back = read_csv(path)
    assert back.load_w == trace.load_w and back.balcony_w == trace.balcony_w
    bad = tmp_path / "bad.csv"
    bad.write_text("time,power\n1,2\n")
    with pytest.raises(TraceError):
        read_csv(str(bad))
    bad.write_text("t_s,load_w\n" + "".join(f"{i},nan\n" for i in range(20)))
    with pytest.raises(TraceError):
        read_csv(str(bad))


def test_plant_json_is_checked():
    plant = load_plant()
    assert len(plant.inverters) == 2 and plant.dead_time_s == 2.0
    assert plant.with_dead_time(12).dead_time_s == 12.0 and plant.dead_time_s == 2.0
    with pytest.raises(PlantConfigError):
        parse_plant({"inverters": [{"max_w": "lots"}]})
    with pytest.raises(PlantConfigError):
        parse_plant({"meter": {"interval_s": 1, "colour": "red"}})
    with pytest.raises(PlantConfigError):
        parse_plant({"dtu": {"ack_latency_s": [2.0, 0.2]}})
    with pytest.raises(PlantConfigError):
        parse_plant({"inverters": [{"serial": "not-hex"}]})
    assert parse_plant({"inverters": [{"serial": "1161ABCD0001"}]}).inverters[0].serial == "1161abcd0001"


# ------------------------------------------------------------------ closed loop
def _short_trace() -> Trace:
    load = [200.0] * 60 + [650.0] * 60 + [2100.0] * 60 + [150.0] * 60 + [400.0] * 60
    return Trace(load, name="steps")


def test_every_policy_runs_on_a_short_trace_with_valid_messages():
    plant = load_plant()
    rows = run_policies(_short_trace(), plant, POLICIES, seed=1, validate=True)
    by = {r["policy"]: r for r in rows}
    assert set(by) == set(POLICIES)
    for row in rows:
        for key in ("export_wh", "import_wh", "avoidable_import_wh", "mae_vs_oracle_w", "peak_export_w",
                    "commands_per_h"):
            assert isinstance(row[key], float) and row[key] >= 0.0, (row["policy"], key)
    assert by["oracle"]["export_wh"] == 0.0 and by["oracle"]["mae_vs_oracle_w"] == 0.0
    for name in ("project", "seed", "dpl", "hze", "oracle_delay"):
        assert by[name]["commands_per_h"] > 0, name          # every closed-loop policy actually commanded
        assert by[name]["avoidable_import_wh"] < 30.0, name   # and followed the load (doing nothing: ~60 Wh)
    # a longer dead time cannot make the delay-limited oracle better
    slow = run_policies(_short_trace(), plant.with_dead_time(12), ["oracle_delay"], seed=1)[0]
    assert slow["cost_wh"] > by["oracle_delay"]["cost_wh"]


def test_goal_verdicts():
    rows = [{"policy": "project", "export_wh": 1.0, "avoidable_import_wh": 5.0, "cost_wh": 6.0},
            {"policy": "seed", "export_wh": 2.0, "avoidable_import_wh": 6.0, "cost_wh": 8.0},
            {"policy": "dpl", "export_wh": 3.0, "avoidable_import_wh": 4.0, "cost_wh": 7.0},
            {"policy": "hze", "export_wh": 9.0, "avoidable_import_wh": 1.0, "cost_wh": 10.0},
            {"policy": "oracle_delay", "export_wh": 1.0, "avoidable_import_wh": 4.0, "cost_wh": 5.0}]
    verdict = goals(rows)
    assert verdict["export"][0] and verdict["export"][2] == 1.0           # half of seed's 2.0
    assert verdict["avoidable"][0] and verdict["avoidable"][2] == 6.0     # seed: the best exporter
    assert verdict["cost"][0] and verdict["cost"][2] == pytest.approx(6.25)
    rows[0]["cost_wh"] = 6.5
    assert not goals(rows)["cost"][0]


def test_command_line_json_and_plot(tmp_path):
    csv_path = str(tmp_path / "t.csv")
    write_csv(csv_path, _short_trace())
    png = str(tmp_path / "p.png")
    proc = subprocess.run([sys.executable, "-m", "bench.control_quality", "--trace", csv_path, "--policy", "dpl",
                           "oracle", "--json", "--plot", png, "--dead-time", "5"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["policy"] for r in rows] == ["dpl", "oracle"]
    assert all(r["dead_time_s"] == 5.0 and r["scenario"] == "t" for r in rows)
    assert os.path.getsize(png) > 10000
    proc = subprocess.run([sys.executable, "-m", "bench.control_quality", "--policy", "nonsense"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2


def test_project_law_learns_the_dead_time_in_the_bench_and_controls():
    from bench.loop import ClosedLoop
    from bench.policies import CorePolicy
    plant = load_plant().with_dead_time(8.0)
    policy = CorePolicy("project", dead_time_initial_s=2.0)
    result = ClosedLoop(_short_trace(), plant, policy, seed=1, validate=True).run()
    learned = [bank.dead_time_s for bank in policy.state.project.banks.values()]
    assert learned and all(6.0 <= d <= 10.0 for d in learned), learned
    rows = run_policies(_short_trace(), plant, ["project", "oracle_delay"], seed=1)
    assert rows[0]["cost_wh"] < 2.0 * rows[1]["cost_wh"]
    assert result.commands > 0


class _Scripted:
    """Sends the setpoint bodies of `script` [(t_s, body)] once each, and records what comes back."""
    name = "scripted"
    wake_interval_s = 0.5
    repeat_setpoint_s = 1.0

    def __init__(self, script):
        self.script = list(script)
        self.acks = []

    def reset(self, loop) -> None:
        self.loop = loop

    def step(self, events, now):
        t = now - self.loop.mono(0.0)
        self.acks += [(t, body) for topic, body in events if topic == "dtu.ack"]
        if self.script and t >= self.script[0][0]:
            return [("ctrl.setpoint", self.script.pop(0)[1])]
        return []


def test_limits_reach_the_plant_only_through_the_product_writer():
    """The real WriterMachine in the loop: its send threshold, its 0.5 s status polls, stop/start."""
    from bench.loop import ClosedLoop
    plant = load_plant()
    a, b = (inv.serial for inv in plant.inverters)

    def body(pct_a, pct_b, on_b=None):
        second = {"serial": b, "limit_pct": pct_b}
        if on_b is not None:
            second["on"] = on_b
        return {"limits": [{"serial": a, "limit_pct": pct_a}, second]}
    policy = _Scripted([(5.0, body(20.0, 20.0)), (20.0, body(20.3, 20.0)), (35.0, body(25.0, 20.0, on_b=False))])
    loop = ClosedLoop(Trace([900.0] * 50), plant, policy, seed=1, validate=True)
    result = loop.run()
    limits = [(t, x) for t, x in policy.acks if x["command"] == "limit"]
    # the writer commands the minimum as soon as the DTU lists an inverter, before any setpoint; a stop sends the
    # minimum before the power off
    assert sorted((x["serial"], x["limit_pct"], x["outcome"]) for _, x in limits) \
        == [(a, 1.0, "ok"), (a, 20.0, "ok"), (a, 25.0, "ok"), (b, 1.0, "ok"), (b, 1.0, "ok"), (b, 20.0, "ok")]
    assert result.commands == 6, "20.3 % is within the writer's send threshold of the acknowledged 20 %"
    for _, ack in limits:                # acks are seen at the writer's status polls, 0.5 s apart
        assert ack["latency_s"] >= 0.5 and (ack["latency_s"] * 2) == pytest.approx(round(ack["latency_s"] * 2))
    stops = [x for _, x in policy.acks if x["command"] == "power_off"]
    assert [(x["serial"], x["outcome"]) for x in stops] == [(b, "ok")]
    by = {inv.serial: inv for inv in loop.inverters}
    assert by[a].limit_pct == 25.0 and not by[b].enabled and by[b].ac_power_w == 0.0
