"""bench.robust: the plant draw covers the issue's ranges, the table has one row per scenario, and a policy that
commands above the cap or too often is caught."""
import json

from bench import robust
from bench.policies import OracleDelayPolicy


def test_plants_drawn_over_the_ranges_and_repeatable():
    plants = robust.draw_plants(40)
    assert [d for _, d in plants] == [d for _, d in robust.draw_plants(40)]
    dead = [d["dead_time_s"] for _, d in plants]
    assert 0.5 <= min(dead) < 1.5 and 10.0 < max(dead) <= 15.0
    for plant, d in plants:
        assert 1 <= len(plant.inverters) <= 4
        assert all(300 <= inv.max_w <= 2000 for inv in plant.inverters)
        assert 50 <= d["ramp_up_w_per_s"] <= 1000 and 50 <= d["ramp_down_w_per_s"] <= 1000
        assert 0.2 <= plant.dtu.ack_latency_s[0] <= plant.dtu.ack_latency_s[1] <= 5.0
        assert 0.5 <= plant.meter.interval_s <= 2.0 and 1.0 <= plant.dtu.http_poll_interval_s <= 5.0
    assert {len(p.inverters) for p, _ in plants} == {1, 2, 3, 4}


class FullPower(OracleDelayPolicy):
    """Broken on purpose: every inverter at 100 %, re-commanded up and down every second."""
    name = "candidate"

    def step(self, events, now):
        t = now - self.loop.mono(0.0)
        factor = 1.0 if int(t) % 2 else 0.5
        return self.publish([m * factor for m in self.max_ws], "broken")


def test_tiny_sweep_table_shape_and_a_broken_policy_is_caught(capsys):
    cells = robust.run(2, 120, ["steady", "kettle"], candidate=FullPower)
    assert len(cells) == 4
    summary = robust.summarise(cells)
    assert [r["scenario"] for r in summary] == ["steady", "kettle"]
    steady = summary[0]
    assert steady["above_cap"] > 0 and steady["above_cap_met"] == "0/2"
    assert steady["max_changes_per_h"] > robust.STEADY_CMD_PER_H and steady["commands_met"] == "0/2"
    assert summary[1]["commands_met"] == "-"
    assert not any(c["pass"] for c in cells)
    text = robust.format_summary(summary)
    assert len(text.splitlines()) == 2 + len(summary) + 3


def test_oracle_delay_itself_meets_cost_and_cap(capsys):
    """The reference against itself: ratio 1, nothing above the cap (the detector does not cry wolf)."""
    class Same(OracleDelayPolicy):
        name = "candidate"
    cells = robust.run(2, 120, ["kettle"], candidate=Same)
    assert all(c["above_cap"] == 0 and abs(c["cost_ratio"] - c["oracle_cost_wh"] / max(
        c["oracle_cost_wh"], robust.FLOOR_WH)) < 1e-9 for c in cells)


def test_main_json_lines(capsys):
    code = robust.main(["--plants", "1", "--seconds", "60", "--scenario", "steady", "--json"])
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert code in (0, 1)
    assert lines[0]["scenario"] == "steady" and "cost_ratio" in lines[0]
    assert lines[-1]["scenario"] == "steady" and "worst_cost_ratio" in lines[-1]
