"""dtu_poller against the OpenDTU simulator, safety cases of the writer: the start-up export and the first-seen
minimum, the one-time persistent minimum, an ignored stop, an understated rating (real HTTP, real processes)."""
from __future__ import annotations

import time

from common import messages as m
from services.dtu_poller.client import OpenDtuClient
from tests.support import base_sections, write_config
# the fixtures (plant, sim, bus) and helpers of the module these cases came from
from tests.test_dtu_poller_sim import (PASSWORD, Plant, RealtimeRunner, bus, make_sim, plant,  # noqa: F401
                                       serials_of, sim, start_service)


def _startup_export(with_writer: bool, seconds: float = 15.0, persistent_pct: float = 100.0) -> tuple:
    """Export (Wh) and peak export (W) in the first `seconds` after the dtu_poller's threads start, no controller:
    the inverters start at their persistent limit, the house takes 200 W."""
    import threading
    from services.dtu_poller.reader import Reader
    from services.dtu_poller.service import PollLoop
    from services.dtu_poller.writer import Inventory, WriterLoop, WriterParams
    plant = Plant.demo(n_inverters=2, seed=1, scenario="quiet")
    plant.set_load_override(200.0)
    plant.set_balcony_override(0.0)
    for inv in plant.inverters:
        inv.persistent_limit_pct = inv.limit_pct = inv.target_pct = persistent_pct
    peak = [0.0]
    plant.add_hook(lambda now: peak.__setitem__(0, max(peak[0], -plant.grid_w)))
    runner = RealtimeRunner(plant).start()
    sim = make_sim(plant)
    host = sim.url.replace("http://", "")
    inventory = Inventory()
    poller = PollLoop(OpenDtuClient(host, "admin", PASSWORD, 2.0), Reader(can_control=True), lambda t, b: None,
                      inventory, 1.0)
    loops = [poller] + ([WriterLoop(OpenDtuClient(host, "admin", PASSWORD, 2.0), WriterParams(min_pct=1.0),
                                    lambda t, b: None, inventory)] if with_writer else [])
    threads = [threading.Thread(target=loop.run, daemon=True) for loop in loops]
    try:
        with plant.lock:
            start_wh = plant.grid_export_wh
        for thread in threads:
            thread.start()
        time.sleep(seconds)                 # the measurement window itself, not a wait for a condition
        with plant.lock:
            return plant.grid_export_wh - start_wh, peak[0]
    finally:
        for loop in loops:
            loop.stop_event.set()
        for thread in threads:
            thread.join(5)
        sim.stop()
        runner.stop()


def test_start_up_export_is_cut_by_the_first_seen_minimum():
    before_wh, before_peak_w = _startup_export(with_writer=False)
    after_wh, after_peak_w = _startup_export(with_writer=True)
    step_wh, step_peak_w = _startup_export(with_writer=True, persistent_pct=1.0)
    print(f"start-up export, first 15 s: before {before_wh:.2f} Wh (peak {before_peak_w:.0f} W), "
          f"after {after_wh:.2f} Wh (peak {after_peak_w:.0f} W), with the persistent minimum {step_wh:.2f} Wh "
          f"(peak {step_peak_w:.0f} W)")
    assert after_wh < before_wh / 3
    assert step_wh < 0.05 and step_peak_w < 50


def test_set_persistent_minimum_is_a_one_time_step(procs, rundir, sim, plant):
    path = write_config(rundir, base_sections(rundir, opendtu={"host": sim.url, "password": PASSWORD},
                                              control={"min_percent": 2}))
    proc = procs.python("persist", "services.dtu_poller", "--config", path, "--set-persistent-minimum")
    assert proc.popen.wait(60) == 0, proc.output()
    assert all(inv.persistent_limit_pct == 2.0 for inv in plant.inverters)
    assert {e["type"] for e in sim.limit_log} == {3}             # v25.9.11: relative persistent is type 3
    assert "now start at 2 % after a restart" in proc.output()


def test_an_ignored_stop_is_not_believed_min_limit_first_and_stopped_again(procs, rundir, sim, plant, bus):
    serials = serials_of(plant)
    sim.set_fault("power_ignored", serials[0])          # power off acknowledged, the inverter keeps running
    path = write_config(rundir, base_sections(rundir, opendtu={
        "host": sim.url, "password": PASSWORD, "poll_interval": 0.5, "timeout": 1.0, "setpoint_timeout_s": 30,
        "limit_ack_timeout_s": 8}, control={"min_percent": 5}))
    procs.python("dtu", "services.dtu_poller", "--config", path)
    bus.wait(lambda: any(b["ok"] and b["serials"] == serials for b in bus.bodies(m.DTU_STATUS)), 15, "dtu up")
    bus.setpoint = {"limits": [{"serial": s, "limit_pct": 40} for s in serials]}
    bus.wait(lambda: {b["serial"] for b in bus.bodies(m.DTU_ACK) if b["outcome"] == "ok" and b["limit_pct"] == 40}
             == set(serials), 15, "running at 40 %")
    mark = bus.mark()
    bus.setpoint = {"limits": [{"serial": serials[0], "limit_pct": 5, "on": False}]
                    + [{"serial": s, "limit_pct": 40} for s in serials[1:]]}
    offs = bus.wait(lambda: [b for b in bus.bodies(m.DTU_ACK, mark) if b["command"] == "power_off"
                             and b["outcome"] == "ok"] or None, 15, "power off acknowledged")
    first = [b for b in bus.bodies(m.DTU_ACK, mark) if b["serial"] == serials[0]]
    assert first[0]["command"] == "limit" and first[0]["limit_pct"] == 5           # the minimum went first
    assert plant.inverters[0].enabled is True
    bus.wait(lambda: [b for b in bus.bodies(m.DTU_INVERTER) if b["serial"] == serials[0]
                      and b.get("power_state") == "stopping" and b["ac_power_w"] > 5], 10, "still stopping")
    again = bus.wait(lambda: [b for b in bus.bodies(m.DTU_ACK, mark) if b["command"] == "power_off"][1:] or None, 25,
                     "a second stop round")
    assert again[0]["sent_t_mono"] - offs[0]["sent_t_mono"] >= 15 - 0.5           # rate-limited
    assert not [b for b in bus.bodies(m.DTU_INVERTER) if b["serial"] == serials[0] and b.get("power_state") == "off"]
    # what it delivers meanwhile: about its minimum (5 %), not its old 40 %
    assert plant.inverters[0].ac_power_w <= 0.10 * plant.inverters[0].max_power_w


def test_a_dtu_that_understates_the_rating_is_not_believed(procs, rundir, sim, plant, bus):
    serials = serials_of(plant)
    sim.dtu.set_rating_lie(serials[0], 100.0)
    start_service(procs, rundir, sim, setpoint_timeout_s=30)
    got = bus.wait(lambda: [b for b in bus.bodies(m.DTU_INVERTER) if b["serial"] == serials[0]
                            and b.get("dtu_max_power_w") == 100.0], 15, "a sample with the lie")
    assert got[-1]["rating_plausible"] is False and got[-1]["max_power_w"] >= plant.inverters[0].max_power_w
    honest = [b for b in bus.bodies(m.DTU_INVERTER) if b["serial"] == serials[1] and b.get("dtu_max_power_w")]
    assert honest and honest[-1]["rating_plausible"] is True
