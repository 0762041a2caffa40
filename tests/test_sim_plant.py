"""Plant physics in simulated time (no HTTP): energy balance, dead time and ramps, efficiency, DC current from the
battery voltage, relay and its timer, battery limits, load traces."""
import math
import time

import pytest

from sim import loadgen
from sim.loadgen import Trace
from sim.dtu import DtuModel
from sim.plant import (MODELS, Battery, Inverter, InverterSpec, Plant, RealtimeRunner, battery_ocv_v, efficiency,
                       make_inverters)


def stepped(plant, seconds, dt=0.1):
    for _ in range(int(round(seconds / dt))):
        plant.step(dt)


def small_plant(load_w=500.0, balcony_w=None, **kw):
    inv = Inverter("116180000001", MODELS["HM-800"], dead_time_s=2.0, tau_up_s=1.0, tau_down_s=3.0,
                   persistent_limit_pct=0.0)
    balcony = [balcony_w] if balcony_w is not None else None
    return Plant([inv], Trace([load_w], balcony), Battery(soc_pct=60.0), grid_reconnect_s=kw.pop("reconnect", 5.0),
                 **kw), inv


def test_energy_balance_over_a_lively_hour():
    plant = Plant.demo(n_inverters=2, seed=3)
    for i, inv in enumerate(plant.inverters):
        inv.apply_limit(30 + 20 * i, plant.now_s)
    for k in range(3600):
        plant.step(1.0)
        assert abs(plant.grid_w - (plant.load_w - plant.ac_total_w - plant.balcony_w)) < 1e-9
        assert abs(sum(plant.phase_w) - plant.grid_w) < 1e-6
        if k == 1800:
            plant.inverters[0].apply_limit(5, plant.now_s)
    net_grid = plant.grid_import_wh - plant.grid_export_wh
    assert net_grid == pytest.approx(plant.load_wh - plant.ac_wh - plant.balcony_wh, abs=1e-6)
    assert plant.grid_import_wh > 0 and plant.ac_wh > 100 and plant.balcony_wh > 10
    # the battery delivered the DC energy: AC / η plus the P0 loss
    dc_wh = (80.0 - plant.battery.soc_pct) / 100 * plant.battery.capacity_ah * 52.3
    assert dc_wh == pytest.approx(plant.ac_wh / 0.967, rel=0.05)


def test_dead_time_then_ramp_up_faster_than_down():
    plant, inv = small_plant()
    stepped(plant, 10)
    assert inv.ac_power_w == 0.0
    inv.apply_limit(50.0, plant.now_s)                 # 400 W, acknowledged now
    t0 = plant.now_s
    stepped(plant, 1.9)
    assert inv.ac_power_w == 0.0, "nothing moves during the dead time"
    stepped(plant, 1.0)                                # 0.9 s after the dead time, tau_up 1 s
    up_after_1s = inv.ac_power_w
    assert 150 < up_after_1s < 400
    stepped(plant, 8.0)
    assert inv.ac_power_w == pytest.approx(400.0, abs=1.0)
    inv.apply_limit(0.0, plant.now_s)
    stepped(plant, 1.9)
    assert inv.ac_power_w == pytest.approx(400.0, abs=1.0), "dead time on the way down too"
    stepped(plant, 1.1)
    down_after_1s = 400.0 - inv.ac_power_w
    assert 0 < down_after_1s < up_after_1s, "reducing is slower than increasing"
    assert plant.now_s - t0 > 13


def test_inverter_from_a_plant_description_slews_and_quantises():
    spec = InverterSpec(serial="116100000009", model="HM-600", max_w=600.0, min_limit_pct=5.0, dead_time_s=0.0,
                        tau_up_s=0.1, tau_down_s=0.1, ramp_up_w_per_s=100.0, ramp_down_w_per_s=50.0, quantum_pct=1.0)
    inv = Inverter.from_spec(spec)
    assert inv.spec is MODELS["HM-600"] and inv.limit_pct == 0.0, "a known model; nothing produced until commanded"
    plant = Plant([inv], Trace([1000.0]), Battery(fixed_voltage_v=51.2))
    inv.apply_limit(50.7, plant.now_s)
    assert inv.limit_pct == 50.0, "floored to the inverter's 1 % resolution"
    stepped(plant, 1.0)
    assert inv.ac_power_w == pytest.approx(100.0, abs=0.5), "the lag alone would be near 300 W: slew 100 W/s"
    stepped(plant, 4.0)
    assert inv.ac_power_w == pytest.approx(300.0, abs=0.5)
    inv.apply_limit(0.0, plant.now_s)
    stepped(plant, 2.0)
    assert inv.ac_power_w == pytest.approx(200.0, abs=0.5), "down at 50 W/s"
    assert plant.battery.voltage_v == 51.2, "a fixed battery voltage stays"
    assert inv.dc_power_w == pytest.approx((200.0 + 4.0) / 0.967, abs=0.5)
    odd = Inverter.from_spec(InverterSpec(serial="116400000001", model="HMS-700", max_w=700.0, eta_peak=0.9))
    assert odd.max_power_w == 700.0 and odd.spec.hms
    plant = Plant([odd], Trace([1000.0]), Battery())
    odd.apply_limit(50.0, plant.now_s)
    stepped(plant, 30.0)
    assert odd.dc_power_w == pytest.approx((odd.ac_power_w + 4.0) / 0.9), "a less efficient unit draws more DC"


def test_dtu_model_acks_within_its_range_and_loses_commands_when_told():
    inv = Inverter("116100000001", MODELS["HM-600"], dead_time_s=0.0)
    plant = Plant([inv], Trace([300.0]), Battery())
    dtu = DtuModel(plant, ack_min_s=0.5, ack_max_s=4.0, ack_log_uniform=True, resend_chance=0.0, seed=3)
    delays = []
    for _ in range(200):
        dtu.submit_limit(inv.serial, 1, 20.0, persistent=False, relative=True)
        delays.append(dtu.radios[0].limit_inflight.ack_at_s - plant.now_s)
        dtu.radios[0].limit_inflight = None
    assert 0.5 <= min(delays) and max(delays) <= 4.0
    below = sum(1 for d in delays if d < 1.414) / len(delays)        # geometric mean of 0.5 and 4: half below
    assert 0.35 < below < 0.65, below
    lossy = Plant([Inverter("116100000002", MODELS["HM-600"])], Trace([300.0]), Battery())
    dtu = DtuModel(lossy, failure_chance=1.0, failure_timeout_s=3.0)
    dtu.submit_limit("116100000002", 1, 20.0, persistent=False, relative=True)
    stepped(lossy, 3.5)
    assert dtu.radios[0].limit_status in ("Failure", "Pending") and lossy.inverters[0].limit_pct == 100.0
    assert dtu.limit_log[0]["status"] in ("Failure", "Pending") and "ack_t_s" not in dtu.limit_log[0]


def test_min_limit_and_undershoot():
    plant, inv = small_plant()
    inv.apply_limit(1.5, plant.now_s)                  # below min_limit_pct 2 → stuck at 0 W
    stepped(plant, 15)
    assert inv.ac_power_w == 0.0
    hms = Inverter("1164a0000001", MODELS["HMS-2000"], dead_time_s=0.0, persistent_limit_pct=5.0)
    plant2 = Plant([hms], Trace([300.0]), Battery())
    stepped(plant2, 20)
    assert 80 < hms.ac_power_w < 96, "HMS undershoots at 5 % of 2000 W"


def test_efficiency_and_dc_current_follow_battery_voltage():
    assert efficiency(400.0) == pytest.approx(0.967 * 400 / 404)
    for soc in (15.0, 90.0):
        plant, inv = small_plant()
        plant.set_battery(soc_pct=soc)
        inv.apply_limit(50.0, plant.now_s)
        stepped(plant, 20)
        v = plant.battery.voltage_v
        assert inv.dc_power_w == pytest.approx((inv.ac_power_w + 4.0) / 0.967)
        assert inv.dc_power_w > inv.ac_power_w
        assert inv.dc_current_a == pytest.approx(inv.dc_power_w / v, rel=0.01)
        assert plant.battery.current_a == pytest.approx(-inv.dc_power_w / v, rel=0.02)
    assert battery_ocv_v(15.0) < battery_ocv_v(90.0)


def test_input_current_saturates_at_low_voltage():
    import random
    inv = Inverter("116180000002", MODELS["HM-800"], dead_time_s=0.0, persistent_limit_pct=100.0)
    rng = random.Random(1)
    for k in range(300):                     # a 24 V battery: 12.5 A per input caps the output (OnBattery#613)
        inv.step(k * 0.1, 0.1, True, 24.0, True, rng)
    cap = 0.967 * 24.0 * 12.5 * 2 - 4.0
    assert inv.ac_power_w == pytest.approx(cap, rel=0.01) and cap < 600
    assert inv.dc_current_a == pytest.approx(25.0, rel=0.01)


def test_temperature_rises_with_output():
    plant, inv = small_plant()
    t_cold = inv.temperature_c
    inv.apply_limit(100.0, plant.now_s)
    stepped(plant, 300, dt=1.0)
    assert inv.temperature_c > t_cold + 15


def test_relay_off_means_no_grid_and_the_timer_switches():
    plant, inv = small_plant(reconnect=3.0)
    inv.apply_limit(25.0, plant.now_s)
    stepped(plant, 15)
    assert inv.ac_power_w == pytest.approx(200.0, abs=1.0)
    plant.set_relay(True, flip_after_s=5.0)            # keep-alive with a 5 s flip-back
    stepped(plant, 4.8)
    assert plant.relay_on and inv.ac_power_w > 190
    stepped(plant, 0.4)
    assert not plant.relay_on, "the flip-back timer opened the relay"
    assert inv.ac_power_w == 0.0 and inv.ac_voltage_v == 0.0
    assert plant.grid_w == pytest.approx(500.0)
    plant.set_relay(True)
    stepped(plant, 2.5)
    assert inv.ac_power_w == 0.0, "inverters wait for the grid to be stable"
    stepped(plant, 10)
    assert inv.ac_power_w == pytest.approx(200.0, abs=2.0)


def test_battery_limits_and_empty_battery_stops_inverters():
    b = Battery(soc_pct=7.5, dcl_a=100.0, ccl_a=80.0)
    assert b.dcl_a == pytest.approx(50.0)
    b.soc_pct = 99.0
    assert b.ccl_a == pytest.approx(16.0)
    plant, inv = small_plant()
    inv.apply_limit(100.0, plant.now_s)
    plant.set_battery(soc_pct=0.01)
    stepped(plant, 60, dt=1.0)
    assert plant.battery.soc_pct == 0.0 and inv.ac_power_w == 0.0
    plant.set_battery(dcl_a=12.5)
    assert plant.battery.dcl_a == 12.5
    plant.set_battery(clear_dcl=True)
    assert plant.battery.dcl_a == 0.0


def test_load_override_and_traces(tmp_path):
    plant = Plant.demo(n_inverters=1, seed=1, scenario="step")
    assert plant.load_w == 150.0
    stepped(plant, 61, dt=1.0)
    assert plant.load_w == 650.0
    plant.set_load_override(1234.0)
    assert plant.load_w == 1234.0 and plant.state()["load_override_w"] == 1234.0
    plant.set_load_override(None)
    assert plant.load_w == 650.0
    day = loadgen.builtin("day", seed=5).load_w
    assert len(day) == 86400 and day == loadgen.builtin("day", 5).load_w and day != loadgen.builtin("day", 6).load_w
    assert max(day) > 1800 and min(day) >= 0
    assert 3000 < sum(day) / 3600 < 12000                 # Wh per day
    hob_edges = sum(1 for i in range(12 * 3600, 13 * 3600) if day[i + 1] - day[i] > 500)
    assert hob_edges >= 10, "a pulsed hob at lunch (20-40 s period)"
    assert sum(1 for i in range(0, 5 * 3600) if day[i + 1] - day[i] > 500) == 0, "quiet night"
    path = str(tmp_path / "t.csv")
    loadgen.write_csv(path, Trace([100.0, 200.0, 300.0] * 4, [0.0, 50.0, 60.0] * 4))
    trace = loadgen.read_csv(path)
    assert trace.load_w[:3] == [100.0, 200.0, 300.0] and trace.balcony_w[:3] == [0.0, 50.0, 60.0]
    plant = Plant.demo(n_inverters=1, load_csv=path)
    plant.step(1.0)
    assert (plant.load_w, plant.balcony_w) == (200.0, 50.0)
    kettle = Plant.demo(n_inverters=1, scenario="kettle")                 # any benchmark scenario
    assert kettle.trace.load_w == loadgen.builtin("kettle").load_w


def test_serials_are_lowercase_hex_and_unique():
    invs = make_inverters(6, seed=2)
    serials = [i.serial for i in invs]
    assert len(set(serials)) == 6
    for s in serials:
        assert s == s.lower() and int(s, 16) > 0 and len(s) == 12
    with pytest.raises(ValueError):
        Inverter("xyz", MODELS["HM-400"])


def test_a_day_steps_fast():
    plant = Plant.demo(n_inverters=2, scenario="day")
    start = time.perf_counter()
    for _ in range(86400):
        plant.step(1.0)
    assert time.perf_counter() - start < 15, "a simulated day must take seconds"


def test_realtime_runner_follows_the_clock():
    plant = Plant.demo(n_inverters=1, scenario="quiet")
    runner = RealtimeRunner(plant).start()
    try:
        start = time.monotonic()
        time.sleep(1.0)
        elapsed = time.monotonic() - start
    finally:
        runner.stop()
    assert math.isclose(plant.now_s, elapsed, abs_tol=0.5)
