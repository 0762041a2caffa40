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


def _idle_loop():
    from bench.loop import ClosedLoop
    from bench.plantcfg import load_plant
    from sim.loadgen import Trace
    plant = load_plant()                   # 2 x HM-600 under an 800 W cap
    loop = ClosedLoop(Trace([0.0] * 10), plant, OracleDelayPolicy(), seed=1)
    for radio in loop.dtu.radios:
        radio.devinfo_known = True         # the DTU knows the ratings (as after its first poll)
    return loop, [inv.serial for inv in plant.inverters]


def test_cap_count_sees_a_reduction_still_in_flight():
    """A at 100 % in force, its reduction to 10 % sent but not acknowledged, then B raised to 100 %: 1200 W may
    be on the wire under an 800 W cap. The count of the limits last sent (60 + 600 W) missed it."""
    from services.dtu_poller.writer import Command
    loop, (a, b) = _idle_loop()
    writer, dtu = loop.writer, loop.dtu
    dtu.by_serial[a].inv.apply_limit(100.0, 0.0)
    for serial, pct in ((a, 10.0), (b, 100.0)):
        dtu.submit_limit(serial, 1, pct, persistent=False, relative=True)
        writer._check_cap(Command("limit", serial, pct))
    assert writer.above_cap == 1 and writer.max_commanded_w == 1200.0
    assert writer.wire_w == {a: 60.0, b: 600.0}          # what the old count summed (660 W: not above)


def test_cap_count_sees_a_failed_raise_the_dtu_may_resend():
    """A's raise to 100 % was lost (Failure; the DTU re-sends it at A's next poll), A still at 10 % in force;
    B then raised to 50 %: 600 + 300 W may be on the wire. A switched off: it no longer counts."""
    from services.dtu_poller.writer import Command
    loop, (a, b) = _idle_loop()
    writer, dtu = loop.writer, loop.dtu
    radio_a = dtu.by_serial[a]
    radio_a.inv.apply_limit(10.0, 0.0)
    dtu.set_inverter_fault("limit_failure", a)
    dtu.submit_limit(a, 1, 100.0, persistent=False, relative=True)
    radio_a.poll_enabled = False                          # its next poll slot (the re-send) has not come yet
    for _ in range(80):                                   # past the DTU's 10 s failure timeout
        loop.sim.step(0.25)
        if radio_a.limit_status == "Failure":
            break
    assert radio_a.limit_status == "Failure" and radio_a.limit_inflight is None and radio_a.inv.limit_pct == 10.0
    dtu.submit_limit(b, 1, 50.0, persistent=False, relative=True)
    writer._check_cap(Command("limit", b, 50.0))
    assert writer.above_cap == 1 and writer.max_commanded_w == 900.0
    radio_a.inv.set_enabled(False)
    writer._check_cap(Command("power_off", a))
    assert writer.above_cap == 1 and writer.max_commanded_w == 900.0   # 300 W now: not counted again
