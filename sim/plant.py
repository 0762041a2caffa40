"""The physical plant behind the simulators: household load, battery-fed Hoymiles inverters, a battery, an optional
balcony solar system, the grid meter's view and the life-signal relay.

Physics (docs/control.md §1, recommended plant model):
* grid_w = load_w − Σ inverter AC − balcony_w (positive = import). Per phase (for a 3EM) the load splits 45/35/20 %
  and the inverters and the balcony system feed phase A.
* An inverter applies an acknowledged limit (floored to its resolution `quantum_pct`, 0 = exact) after
  `dead_time_s`, then follows it with a first-order lag, faster up (`tau_up_s`) than down (`tau_down_s`), within
  optional slew limits (`ramp_up_w_per_s`, `ramp_down_w_per_s`). `InverterSpec` describes one unit the way the
  benchmark's plant JSON does; `Inverter.from_spec` builds it. Below `min_limit_pct` it produces 0 W (HM stuck at
  low limits); HMS models undershoot below 15 % of nominal. Efficiency η(P) = 0.967·P/(P + P0) with P0 = 4 W,
  so DC = (AC + P0)/0.967; DC current = DC power / battery voltage; the per-input current saturates at 12.5 A.
  Temperature follows output (22 °C + 33 K × output / rating, 120 s time constant).
* Relay off (the life signal) = no grid for the inverters: AC voltage 0, output 0 at once; after the relay closes
  again they wait `grid_reconnect_s` before producing. A flip-back timer switches the relay by itself.
* Load and balcony solar come from one `loadgen.Trace`, read cyclically from `offset_s` on.
* Battery: SOC integrates the current; voltage = OCV(SOC) − R·I for a 16-cell LFP pack; DCL falls to 0 between 10
  and 5 % SOC, CCL between 95 and 100 %; an empty battery stops the inverters.

`plant.step(dt_s)` advances simulated time; it is cheap (no allocation besides floats) so a benchmark can run a day
in seconds. `RealtimeRunner(plant).start()` steps it at ~10 Hz in a thread for the HTTP simulators. All state
changes happen under `plant.lock` (an RLock); hooks added with `add_hook(fn)` run inside `step` with the lock held.
"""
from __future__ import annotations

import math
import random
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional

from common.clock import SYSTEM_CLOCK
from sim import loadgen
from sim.loadgen import Trace

ETA_PEAK = 0.967
ETA_P0_W = 4.0
PHASE_SHARES = (0.45, 0.35, 0.20)
INPUT_CURRENT_MAX_A = 12.5


@dataclass(frozen=True)
class ModelInfo:
    """What a model is (the DTU's catalogue), not how one unit behaves."""
    model: str               # hw_model_name, e.g. "HM-800"
    dtu_type: str            # OpenDTU /api/inverter/list "type"
    max_power_w: float
    n_inputs: int
    serial_prefix: str
    hms: bool = False


MODELS: dict[str, ModelInfo] = {
    "HM-400": ModelInfo("HM-400", "HM-300/350/400-1T", 400.0, 1, "1121"),
    "HM-600": ModelInfo("HM-600", "HM-600/700/800-2T", 600.0, 2, "1161"),
    "HM-800": ModelInfo("HM-800", "HM-600/700/800-2T", 800.0, 2, "1161"),
    "HM-1500": ModelInfo("HM-1500", "HM-1000/1200/1500-4T", 1500.0, 4, "1141"),
    "HMS-800": ModelInfo("HMS-800", "HMS-800/1000-2T", 800.0, 2, "1144", hms=True),
    "HMS-2000": ModelInfo("HMS-2000", "HMS-1600/1800/2000-4T", 2000.0, 4, "1164", hms=True),
}


@dataclass
class InverterSpec:
    """One inverter as the benchmark's plant JSON describes it (bench/plantcfg.py documents every field);
    `Inverter.from_spec` builds it. Defaults: an HM-600 with the recommended plant model of docs/control.md §1."""
    serial: str = "116100000001"
    model: str = "HM-600"
    max_w: float = 600.0
    min_limit_pct: float = 5.0
    dead_time_s: float = 2.0
    tau_up_s: float = 1.5
    tau_down_s: float = 2.5
    ramp_up_w_per_s: float = 300.0
    ramp_down_w_per_s: float = 150.0
    quantum_pct: float = 0.1
    ripple_w: float = 0.0
    eta_peak: float = ETA_PEAK

    @property
    def min_w(self) -> float:
        return self.max_w * self.min_limit_pct / 100.0


def efficiency(ac_w: float) -> float:
    """η(P) = 0.967·P/(P + P0) (docs/control.md §1)."""
    return ETA_PEAK * ac_w / (ac_w + ETA_P0_W) if ac_w > 0 else 0.0


class Inverter:
    """One battery-fed micro-inverter. Limits arrive acknowledged (`apply_limit`); the radio is the DTU's business."""

    def __init__(self, serial: str, spec: ModelInfo, name: str = "", *, min_limit_pct: float = 2.0,
                 dead_time_s: float = 1.5, tau_up_s: float = 1.5, tau_down_s: float = 2.5,
                 ramp_up_w_per_s: float = math.inf, ramp_down_w_per_s: float = math.inf, quantum_pct: float = 0.0,
                 eta_peak: float = ETA_PEAK, persistent_limit_pct: float = 100.0, restart_s: float = 20.0, yield_total_kwh: float = 0.0):
        self.serial = serial.lower()
        int(self.serial, 16)                       # must be hex
        self.spec = spec
        self.name = name or f"{spec.model} {self.serial[-4:]}"
        self.min_limit_pct = min_limit_pct
        self.dead_time_s = dead_time_s
        self.tau_up_s = tau_up_s
        self.tau_down_s = tau_down_s
        self.ramp_up_w_per_s = ramp_up_w_per_s or math.inf       # slew limits on top of the lag (0 = none)
        self.ramp_down_w_per_s = ramp_down_w_per_s or math.inf
        self.quantum_pct = quantum_pct                           # limit resolution the inverter applies (0 = exact)
        self.eta_peak = eta_peak                                 # η(P) = eta_peak·P/(P + P0)
        self.persistent_limit_pct = persistent_limit_pct
        self.restart_s = restart_s
        self.limit_pct = persistent_limit_pct      # last limit applied (acknowledged)
        self.target_pct = persistent_limit_pct     # what the output follows (after the dead time)
        self._pending: list[tuple[float, float]] = []   # (effective_at_s, pct)
        self.enabled = True                        # power on/off by command
        self.restart_until_s: Optional[float] = None
        self.ac_power_w = 0.0
        self.dc_power_w = 0.0
        self.dc_voltage_v = 0.0
        self.dc_current_a = 0.0
        self.ac_voltage_v = 0.0
        self.frequency_hz = 0.0
        self.temperature_c = 22.0
        self.yield_day_wh = 0.0
        self.yield_total_wh = yield_total_kwh * 1000.0
        self.ripple_w = 0.0

    @classmethod
    def from_spec(cls, spec: InverterSpec, persistent_limit_pct: float = 0.0) -> "Inverter":
        """The unit a plant description names; a model not in MODELS (or of another size) gets a catalogue entry of
        its own. Starts at `persistent_limit_pct` (the benchmark: 0 %, nothing produced until commanded)."""
        model = MODELS.get(spec.model)
        if model is None or model.max_power_w != spec.max_w:
            model = ModelInfo(spec.model, "custom", float(spec.max_w), 2, spec.serial[:4],
                                  hms=spec.model.upper().startswith("HMS"))
        inv = cls(spec.serial, model, name=spec.model, min_limit_pct=spec.min_limit_pct, dead_time_s=spec.dead_time_s,
                  tau_up_s=spec.tau_up_s, tau_down_s=spec.tau_down_s, ramp_up_w_per_s=spec.ramp_up_w_per_s,
                  ramp_down_w_per_s=spec.ramp_down_w_per_s, quantum_pct=spec.quantum_pct, eta_peak=spec.eta_peak,
                  persistent_limit_pct=persistent_limit_pct)
        inv.ripple_w = spec.ripple_w
        return inv

    @property
    def max_power_w(self) -> float:
        return self.spec.max_power_w

    def apply_limit(self, pct: float, now_s: float, persistent: bool = False) -> None:
        """An acknowledged limit: takes effect after the dead time (floored to the inverter's resolution)."""
        pct = min(100.0, max(0.0, float(pct)))
        if self.quantum_pct > 0:
            pct = math.floor(pct / self.quantum_pct + 1e-6) * self.quantum_pct
        self.limit_pct = pct
        if persistent:
            self.persistent_limit_pct = pct
        self._pending.append((now_s + self.dead_time_s, pct))

    def set_enabled(self, on: bool) -> None:
        self.enabled = bool(on)

    def restart(self, now_s: float) -> None:
        """Off for `restart_s`, then back at the persistent limit with YieldDay reset."""
        self.restart_until_s = now_s + self.restart_s
        self._pending.clear()
        self.limit_pct = self.target_pct = self.persistent_limit_pct
        self.yield_day_wh = 0.0
        self.enabled = True

    def restarting(self, now_s: float) -> bool:
        return self.restart_until_s is not None and now_s < self.restart_until_s

    def _target_w(self, battery_v: float) -> float:
        pct = self.target_pct
        if pct < self.min_limit_pct or pct <= 0:
            return 0.0
        target = pct / 100.0 * self.spec.max_power_w
        if self.spec.hms and pct < 15.0:
            target *= 1.0 - 0.012 * (15.0 - pct)          # undershoot at low limits (OnBattery PR #1756)
        # DC current per input saturates: AC <= η · V · I_max · inputs
        cap = self.eta_peak * battery_v * INPUT_CURRENT_MAX_A * self.spec.n_inputs - ETA_P0_W
        return min(target, max(0.0, cap))

    def step(self, now_s: float, dt_s: float, grid_ok: bool, battery_v: float, battery_ok: bool,
             rng: random.Random) -> None:
        pending = self._pending
        while pending and pending[0][0] <= now_s:
            self.target_pct = pending.pop(0)[1]
        if self.restart_until_s is not None and now_s >= self.restart_until_s:
            self.restart_until_s = None
        alive = battery_ok and self.restart_until_s is None
        self.dc_voltage_v = battery_v if battery_ok else 0.0
        if grid_ok and alive:
            self.ac_voltage_v = 230.0
            self.frequency_hz = 50.0
        else:
            self.ac_voltage_v = 0.0
            self.frequency_hz = 0.0
        if not (grid_ok and alive and self.enabled):
            ac = 0.0
        else:
            target = self._target_w(battery_v)
            before = ac = self.ac_power_w
            tau = self.tau_up_s if target > ac else self.tau_down_s
            ac += (target - ac) * (1.0 - math.exp(-dt_s / tau)) if tau > 0 else (target - ac)
            if self.ripple_w > 0 and ac > 0:
                ac = max(0.0, ac + rng.gauss(0.0, self.ripple_w))
            ac = min(max(ac, before - self.ramp_down_w_per_s * dt_s), before + self.ramp_up_w_per_s * dt_s)
        self.ac_power_w = ac
        self.dc_power_w = (ac + ETA_P0_W) / self.eta_peak if ac > 0 else 0.0
        self.dc_current_a = self.dc_power_w / battery_v if battery_v > 0 else 0.0
        wh = ac * dt_s / 3600.0
        self.yield_day_wh += wh
        self.yield_total_wh += wh
        target_c = 22.0 + 33.0 * ac / self.spec.max_power_w
        self.temperature_c += (target_c - self.temperature_c) * min(1.0, dt_s / 120.0)


_OCV = ((0.0, 44.0), (5.0, 48.0), (10.0, 50.4), (20.0, 51.6), (50.0, 52.3), (80.0, 53.0), (95.0, 53.6),
        (100.0, 55.0))


def battery_ocv_v(soc_pct: float) -> float:
    """Open-circuit voltage of a 16-cell LFP pack."""
    if soc_pct <= 0:
        return _OCV[0][1]
    for (s0, v0), (s1, v1) in zip(_OCV, _OCV[1:]):
        if soc_pct <= s1:
            return v0 + (v1 - v0) * (soc_pct - s0) / (s1 - s0)
    return _OCV[-1][1]


class Battery:
    """A BMS-managed 48 V LFP battery. Current is positive when charging (Victron convention)."""

    def __init__(self, capacity_ah: float = 200.0, soc_pct: float = 80.0, ccl_a: float = 100.0,
                 dcl_a: float = 100.0, r_int_ohm: float = 0.015, temperature_c: float = 22.0,
                 charge_w: float = 0.0, fixed_voltage_v: Optional[float] = None):
        self.capacity_ah = capacity_ah
        self.soc_pct = soc_pct
        self.ccl_max_a = ccl_a
        self.dcl_max_a = dcl_a
        self.r_int_ohm = r_int_ohm
        self.temperature_c = temperature_c
        self.charge_w = charge_w                   # external charger (e.g. MPPT), W
        self.present = True                        # is the battery service on D-Bus
        self.dcl_override_a: Optional[float] = None
        self.current_a = 0.0
        self.fixed_voltage_v = fixed_voltage_v     # a number: the voltage stays there (a benchmark option)
        self.voltage_v = fixed_voltage_v or battery_ocv_v(soc_pct)

    @property
    def power_w(self) -> float:
        return self.voltage_v * self.current_a

    @property
    def dcl_a(self) -> float:
        if self.dcl_override_a is not None:
            return self.dcl_override_a
        soc = self.soc_pct
        return self.dcl_max_a * min(1.0, max(0.0, (soc - 5.0) / 5.0))

    @property
    def ccl_a(self) -> float:
        return self.ccl_max_a * min(1.0, max(0.0, (100.0 - self.soc_pct) / 5.0))

    @property
    def max_charge_voltage_v(self) -> float:
        return 55.2

    @property
    def usable(self) -> bool:
        return self.soc_pct > 0.0

    def step(self, dt_s: float, draw_w: float) -> None:
        v = self.voltage_v if self.voltage_v > 1 else battery_ocv_v(self.soc_pct)
        self.current_a = (self.charge_w - draw_w) / v
        self.soc_pct = min(100.0, max(0.0, self.soc_pct + self.current_a * dt_s / 3600.0 / self.capacity_ah * 100))
        self.voltage_v = self.fixed_voltage_v or battery_ocv_v(self.soc_pct) + self.r_int_ohm * self.current_a


class Plant:
    """Everything physical. Time is `now_s` (simulated seconds since start); `wall_s` = wall clock at start + now_s."""

    def __init__(self, inverters: list[Inverter], trace: Trace, battery: Optional[Battery] = None, *,
                 offset_s: float = 0.0, grid_reconnect_s: float = 5.0, relay_on: bool = True, seed: int = 1,
                 wall_start_s: Optional[float] = None):
        self.lock = threading.RLock()
        self.inverters = list(inverters)
        self.by_serial = {inv.serial: inv for inv in self.inverters}
        if len(self.by_serial) != len(self.inverters):
            raise ValueError("inverter serials must be unique")
        self.trace = trace                         # load and balcony solar, from second `offset_s` on, cyclic
        self.offset_s = offset_s
        self.battery = battery or Battery()
        self.grid_reconnect_s = grid_reconnect_s
        self.rng = random.Random(seed)
        self.now_s = 0.0
        self.wall_start_s = time.time() if wall_start_s is None else wall_start_s
        self.load_override_w: Optional[float] = None
        self.balcony_override_w: Optional[float] = None
        self.relay_on = relay_on
        self.relay_flip_at_s: Optional[float] = None
        self.relay_timer_duration_s: Optional[float] = None
        self.relay_timer_started_s: Optional[float] = None
        self.relay_source = "init"
        self._grid_since_s = -1e9 if relay_on else None
        self.load_w = 0.0
        self.balcony_w = 0.0
        self.ac_total_w = 0.0
        self.grid_w = 0.0
        self.phase_w = [0.0, 0.0, 0.0]
        self.phase_import_wh = [0.0, 0.0, 0.0]
        self.phase_export_wh = [0.0, 0.0, 0.0]
        self.grid_import_wh = 0.0
        self.grid_export_wh = 0.0
        self.load_wh = 0.0
        self.ac_wh = 0.0
        self.balcony_wh = 0.0
        self._hooks: list[Callable[[float], None]] = []
        self._update_flows()

    # ----- construction helpers -----
    @classmethod
    def demo(cls, n_inverters: int = 2, seed: int = 1, scenario: str = "demo",
             load_csv: Optional[str] = None) -> "Plant":
        """A ready plant. Scenarios: demo (lively load, balcony solar from 09:00), quiet (steady 200 W), step
        (150/650 W every 60 s), day (the benchmark's 24 h day from 06:00, with balcony solar), or any other benchmark
        scenario of `loadgen.SCENARIOS`."""
        inverters = make_inverters(n_inverters, seed)
        offset = 0.0
        if load_csv:
            trace = loadgen.read_csv(load_csv)
        elif scenario == "demo":
            trace = Trace(loadgen.lively_load(seed, loadgen.DAY_S), loadgen.solar_day(seed, peak_w=350.0), "demo")
            offset = 9 * 3600.0
        elif scenario == "quiet":
            trace = Trace(loadgen.quiet_load(seed), name="quiet")
        elif scenario == "step":
            trace = Trace(loadgen.step_load(), name="step")
        elif scenario in loadgen.SCENARIOS:
            trace = loadgen.builtin(scenario, seed)
            offset = 6 * 3600.0 if scenario == "day" else 0.0
        else:
            raise ValueError(f"unknown scenario {scenario!r} (demo, quiet, step, {', '.join(loadgen.SCENARIOS)})")
        plant = cls(inverters, trace, Battery(), offset_s=offset, seed=seed)
        if scenario == "demo":
            for inv in inverters:
                inv.ripple_w = 3.0
        return plant

    # ----- commands (thread-safe) -----
    def add_hook(self, fn: Callable[[float], None]) -> None:
        with self.lock:
            self._hooks.append(fn)

    def remove_hook(self, fn: Callable[[float], None]) -> None:
        with self.lock:
            if fn in self._hooks:
                self._hooks.remove(fn)

    def set_load_override(self, load_w: Optional[float]) -> None:
        with self.lock:
            self.load_override_w = None if load_w is None else max(0.0, float(load_w))
            self._update_flows()

    def set_balcony_override(self, balcony_w: Optional[float]) -> None:
        with self.lock:
            self.balcony_override_w = None if balcony_w is None else max(0.0, float(balcony_w))
            self._update_flows()

    def set_relay(self, on: bool, flip_after_s: Optional[float] = None, source: str = "http") -> None:
        """Switch the relay; with `flip_after_s` it flips back to the opposite state by itself (Shelly `timer`)."""
        with self.lock:
            self._switch_relay(bool(on))
            self.relay_source = source
            if flip_after_s is not None and flip_after_s > 0:
                self.relay_flip_at_s = self.now_s + float(flip_after_s)
                self.relay_timer_duration_s = float(flip_after_s)
                self.relay_timer_started_s = self.now_s
            else:
                self.relay_flip_at_s = self.relay_timer_duration_s = self.relay_timer_started_s = None
            self._update_flows()

    def relay_timer_remaining_s(self) -> Optional[float]:
        with self.lock:
            return None if self.relay_flip_at_s is None else max(0.0, self.relay_flip_at_s - self.now_s)

    def set_battery(self, soc_pct: Optional[float] = None, dcl_a: Optional[float] = None,
                    present: Optional[bool] = None, clear_dcl: bool = False) -> None:
        with self.lock:
            if soc_pct is not None:
                self.battery.soc_pct = min(100.0, max(0.0, float(soc_pct)))
                self.battery.voltage_v = battery_ocv_v(self.battery.soc_pct)
            if dcl_a is not None:
                self.battery.dcl_override_a = max(0.0, float(dcl_a))
            elif clear_dcl:
                self.battery.dcl_override_a = None
            if present is not None:
                self.battery.present = bool(present)

    def grid_ok(self) -> bool:
        """Do the inverters see a grid (relay closed long enough)?"""
        return (self.relay_on and self._grid_since_s is not None
                and self.now_s - self._grid_since_s >= self.grid_reconnect_s)

    # ----- simulation -----
    def step(self, dt_s: float) -> None:
        if dt_s <= 0:
            return
        with self.lock:
            self.now_s += dt_s
            now = self.now_s
            if self.relay_flip_at_s is not None and now >= self.relay_flip_at_s:
                self._switch_relay(not self.relay_on)
                self.relay_source = "timer"
                self.relay_flip_at_s = self.relay_timer_duration_s = self.relay_timer_started_s = None
            battery = self.battery
            grid_ok = self.grid_ok()
            battery_ok = battery.usable
            v = battery.voltage_v
            draw_w = 0.0
            for inv in self.inverters:
                inv.step(now, dt_s, grid_ok, v, battery_ok, self.rng)
                draw_w += inv.dc_power_w
            battery.step(dt_s, draw_w)
            self._update_flows()
            h = dt_s / 3600.0
            grid = self.grid_w
            if grid >= 0:
                self.grid_import_wh += grid * h
            else:
                self.grid_export_wh -= grid * h
            for i in range(3):
                p = self.phase_w[i]
                if p >= 0:
                    self.phase_import_wh[i] += p * h
                else:
                    self.phase_export_wh[i] -= p * h
            self.load_wh += self.load_w * h
            self.ac_wh += self.ac_total_w * h
            self.balcony_wh += self.balcony_w * h
            for hook in self._hooks:
                hook(now)

    def _switch_relay(self, on: bool) -> None:
        if on and not self.relay_on:
            self._grid_since_s = self.now_s
        elif not on:
            self._grid_since_s = None
        self.relay_on = on

    def _update_flows(self) -> None:
        t = self.now_s
        t += self.offset_s
        load = self.load_override_w if self.load_override_w is not None else self.trace.load_at(t)
        balcony = self.balcony_override_w if self.balcony_override_w is not None else self.trace.balcony_at(t)
        ac = 0.0
        for inv in self.inverters:
            ac += inv.ac_power_w
        self.load_w = load
        self.balcony_w = balcony
        self.ac_total_w = ac
        self.grid_w = load - ac - balcony
        a, b, c = PHASE_SHARES
        self.phase_w[0] = load * a - ac - balcony
        self.phase_w[1] = load * b
        self.phase_w[2] = load * c

    @property
    def wall_s(self) -> float:
        return self.wall_start_s + self.now_s

    def state(self) -> dict:
        """A JSON-able snapshot of everything (the control endpoint's GET /state)."""
        with self.lock:
            b = self.battery
            return {
                "t_s": round(self.now_s, 3),
                "load_w": round(self.load_w, 2),
                "grid_w": round(self.grid_w, 2),
                "balcony_w": round(self.balcony_w, 2),
                "ac_total_w": round(self.ac_total_w, 2),
                "phase_w": [round(p, 2) for p in self.phase_w],
                "load_override_w": self.load_override_w,
                "relay_on": self.relay_on,
                "relay_timer_remaining_s": (None if self.relay_flip_at_s is None
                                            else round(self.relay_flip_at_s - self.now_s, 1)),
                "grid_ok": self.grid_ok(),
                "energy_wh": {"grid_import": round(self.grid_import_wh, 3),
                              "grid_export": round(self.grid_export_wh, 3),
                              "load": round(self.load_wh, 3), "inverters_ac": round(self.ac_wh, 3),
                              "balcony": round(self.balcony_wh, 3)},
                "battery": {"present": b.present, "soc_pct": round(b.soc_pct, 3), "voltage_v": round(b.voltage_v, 3),
                            "current_a": round(b.current_a, 3), "power_w": round(b.power_w, 2),
                            "ccl_a": round(b.ccl_a, 2), "dcl_a": round(b.dcl_a, 2),
                            "temperature_c": b.temperature_c, "capacity_ah": b.capacity_ah},
                "inverters": [{
                    "serial": inv.serial, "name": inv.name, "model": inv.spec.model,
                    "max_power_w": inv.spec.max_power_w, "limit_pct": round(inv.limit_pct, 2),
                    "target_pct": round(inv.target_pct, 2), "persistent_limit_pct": inv.persistent_limit_pct,
                    "enabled": inv.enabled, "restarting": inv.restarting(self.now_s),
                    "ac_power_w": round(inv.ac_power_w, 2), "ac_voltage_v": inv.ac_voltage_v,
                    "dc_power_w": round(inv.dc_power_w, 2), "dc_voltage_v": round(inv.dc_voltage_v, 3),
                    "dc_current_a": round(inv.dc_current_a, 3), "temperature_c": round(inv.temperature_c, 2),
                    "yield_day_wh": round(inv.yield_day_wh, 3),
                } for inv in self.inverters],
            }


def make_inverters(n: int, seed: int = 1, models: Optional[list[str]] = None) -> list[Inverter]:
    """N inverters with distinct seeded lowercase-hex serials; models cycle HM-800, HM-600, HM-400, HM-1500."""
    rng = random.Random(seed * 7919 + n)
    models = models or ["HM-800", "HM-600", "HM-400", "HM-1500"]
    result = []
    for i in range(n):
        spec = MODELS[models[i % len(models)]]
        serial = spec.serial_prefix + "".join(rng.choice("0123456789abcdef") for _ in range(8))
        result.append(Inverter(serial, spec, name=f"{spec.model} #{i + 1}",
                               yield_total_kwh=round(rng.uniform(50, 900), 3)))
    return result


class RealtimeRunner:
    """Steps a plant in real time in a daemon thread (~`rate_hz`)."""

    def __init__(self, plant: Plant, rate_hz: float = 10.0, clock=SYSTEM_CLOCK, speed: float = 1.0):
        self.plant = plant
        self.period_s = 1.0 / rate_hz
        self.clock = clock
        self.speed = speed
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def start(self) -> "RealtimeRunner":
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="plant", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        last = self.clock.monotonic()
        while not self._stop.wait(self.period_s):
            now = self.clock.monotonic()
            dt = now - last
            last = now
            if dt > 0:
                self.plant.step(min(dt, 5.0) * self.speed)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
