"""The closed loop in simulated time: trace -> plant -> meter / DTU timing model -> policy -> DTU writer -> plant.

Timing model of the real chain (all parameters in `bench.plantcfg`):
* grid meter: a sample every `meter.interval_s` (phase 0.3 s), value = gain x (L - B - u) + N(0, noise), delivered
  as `meter.grid` after a uniform transport latency (`sample_t_mono` = arrival, as the shelly_poller stamps it);
* balcony meter (only when the trace has balcony solar): the same every `balcony_meter.interval_s`;
* DTU radio: one inverter's stats per `dtu.radio_interval_s`, round-robin; our poller fetches every
  `dtu.http_poll_interval_s` and forwards each fresh sample as `dtu.inverter` (`sample_t_mono` = radio time,
  `data_age_s` = age at the fetch), together with `dtu.status` and `venus.battery`;
* DTU writer: takes every `ctrl.setpoint`; per inverter one limit command in flight; a new command when the wanted
  limit differs from the last acked one by >= 0.05 %; ack after a log-uniform latency in `dtu.ack_latency_s`, with
  probability `nok_probability` plus `resend_after_s` (OpenDTU's internal resend); each ack is a `dtu.ack`;
* plant: `sim.plant.Plant` (the simulators' physics: load and balcony traces, inverters with dead time after the ack
  and a first-order lag faster up than down, 0 W below the minimum limit, efficiency, input-current saturation, an
  LFP battery whose SOC and voltage move) with two bench additions: slew-rate limits (W/s, up and down) and limit
  quantisation (`BenchInverter`), and optionally a fixed battery voltage (`BenchBattery`).
Physics advances in fixed ticks (`tick_s`, default 0.25 s); events are processed in time order between ticks; a
policy is called only when a message arrives for it or its own timer (`wake_interval_s`) fires.
All random draws come from per-purpose generators seeded from `seed`, so every policy sees the same meter noise.
"""
from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass
from typing import Optional

import numpy as np

from bench.plantcfg import BatterySpec, InverterSpec, PlantConfig
from bench.scenarios import Trace
from common import messages as M
from sim import plant as simplant

T0_MONO = 1000.0          # simulated CLOCK_MONOTONIC at t = 0
T0_WALL = 1.76e9          # simulated wall clock at t = 0
_PCT_EPS = 0.05


class BenchInverter(simplant.Inverter):
    """sim.plant's inverter (dead time, lag up/down, min limit, efficiency, input-current saturation) plus the
    bench's slew-rate limits and limit quantisation."""

    def __init__(self, spec: InverterSpec):
        model = simplant.MODELS.get(spec.model)
        if model is None or model.max_power_w != spec.max_w:
            model = simplant.InverterSpec(spec.model, "bench", float(spec.max_w), 2, spec.serial[:4],
                                          hms=spec.model.upper().startswith("HMS"))
        super().__init__(spec.serial, model, name=spec.model, min_limit_pct=spec.min_limit_pct,
                         dead_time_s=spec.dead_time_s, tau_up_s=spec.tau_up_s, tau_down_s=spec.tau_down_s,
                         persistent_limit_pct=0.0)
        self.ripple_w = spec.ripple_w
        self.ramp_up_w_per_s = spec.ramp_up_w_per_s or float("inf")
        self.ramp_down_w_per_s = spec.ramp_down_w_per_s or float("inf")
        self.quantum_pct = spec.quantum_pct

    def apply_limit(self, pct: float, now_s: float, persistent: bool = False) -> None:
        if self.quantum_pct > 0:
            pct = math.floor(pct / self.quantum_pct + 1e-6) * self.quantum_pct
        super().apply_limit(pct, now_s, persistent)

    def step(self, now_s, dt_s, grid_ok, battery_v, battery_ok, rng) -> None:
        before = self.ac_power_w
        super().step(now_s, dt_s, grid_ok, battery_v, battery_ok, rng)
        ac = self.ac_power_w
        if ac - before > self.ramp_up_w_per_s * dt_s:
            ac = before + self.ramp_up_w_per_s * dt_s
        elif before - ac > self.ramp_down_w_per_s * dt_s:
            ac = before - self.ramp_down_w_per_s * dt_s
        else:
            return
        self.ac_power_w = ac
        self.dc_power_w = (ac + simplant.ETA_P0_W) / simplant.ETA_PEAK if ac > 0 else 0.0
        self.dc_current_a = self.dc_power_w / battery_v if battery_v > 0 else 0.0


class BenchBattery(simplant.Battery):
    """sim.plant's LFP battery; optionally at a fixed voltage."""

    def __init__(self, spec: BatterySpec):
        super().__init__(capacity_ah=spec.capacity_ah, soc_pct=spec.soc_pct, ccl_a=spec.ccl_a, dcl_a=spec.dcl_a)
        self.fixed_v = spec.voltage_v
        if self.fixed_v is not None:
            self.voltage_v = self.fixed_v

    def step(self, dt_s: float, draw_w: float) -> None:
        super().step(dt_s, draw_w)
        if self.fixed_v is not None:
            self.voltage_v = self.fixed_v


class _Series:
    """The `.at(t_s)` view sim.plant wants of a 1 Hz list (held at the last value past the end)."""

    __slots__ = ("values", "last")

    def __init__(self, values):
        self.values = values
        self.last = len(values) - 1

    def at(self, t_s: float) -> float:
        i = int(t_s)
        return self.values[i if i < self.last else self.last]


@dataclass
class RunResult:
    policy: str
    output_w: np.ndarray                # mean inverter AC output per second (what the plant produced)
    p_max_w: np.ndarray                 # per second: min(max_feed_in - balcony, sum max, 0.967 V DCL)
    commands: int
    resends: int
    policy_calls: int
    last_status: Optional[dict] = None


class Writer:
    """The DTU writer: one limit command in flight per inverter; acks after a random latency."""

    def __init__(self, loop: "ClosedLoop"):
        self.loop = loop
        self.desired: dict[str, float] = {}
        self.acked: dict[str, float] = {inv.serial: inv.limit_pct for inv in loop.inverters}
        self.in_flight: dict[str, Optional[float]] = {}
        self.commands = 0
        self.resends = 0

    def on_setpoint(self, body: dict, t: float, seq: int) -> None:
        for item in body.get("limits", []):
            serial = item["serial"]
            if serial in self.acked:
                self.desired[serial] = float(item["limit_pct"])
                self.maybe_send(serial, t, seq)

    def maybe_send(self, serial: str, t: float, seq: Optional[int] = None) -> None:
        if self.in_flight.get(serial) is not None or serial not in self.desired:
            return
        pct = min(100.0, max(0.0, self.desired[serial]))
        if abs(pct - self.acked[serial]) < _PCT_EPS:
            return
        self.in_flight[serial] = pct
        self.commands += 1
        dtu = self.loop.plant.dtu
        lo, hi = dtu.ack_latency_s
        rng = self.loop.ack_rng
        latency = math.exp(rng.uniform(math.log(max(lo, 1e-3)), math.log(max(hi, lo, 1e-3))))
        if rng.random() < dtu.nok_probability:
            latency += dtu.resend_after_s
            self.resends += 1
        self.loop.schedule(t + latency, "ack", (serial, pct, t, latency, seq))

    def on_ack(self, serial: str, pct: float, t: float) -> None:
        self.in_flight[serial] = None
        self.acked[serial] = pct
        self.loop.by_serial[serial].apply_limit(pct, t)


class ClosedLoop:
    def __init__(self, trace: Trace, plant: PlantConfig, policy, seed: int = 1, tick_s: float = 0.25,
                 validate: bool = False):
        if not 0.1 <= tick_s <= 0.5:
            raise ValueError("tick_s must be within 0.1..0.5 s")
        self.trace = trace
        self.plant = plant
        self.policy = policy
        self.seed = seed
        self.tick_s = tick_s
        self.validate = validate
        self.meter_rng = random.Random(seed * 7919 + 1)
        self.balcony_rng = random.Random(seed * 7919 + 2)
        self.ack_rng = random.Random(seed * 7919 + 3)
        self.inverters = [BenchInverter(spec) for spec in plant.inverters]
        self.by_serial = {inv.serial: inv for inv in self.inverters}
        self.battery = BenchBattery(plant.battery)
        self.sim = simplant.Plant(self.inverters, _Series(trace.load_w), self.battery, _Series(trace.balcony_w),
                                  seed=seed, wall_start_s=T0_WALL)
        self.writer = Writer(self)
        self._heap: list = []
        self._seq = 0
        self._bus_seq = 0
        self.has_balcony = any(v > 0 for v in trace.balcony_w)
        self.dtu_cache: dict[str, tuple] = {}        # serial -> (radio time, ac_power_w, acked pct)
        self.forwarded: dict[str, float] = {}
        self.radio_next = 0
        self.policy_calls = 0
        self.last_status = None

    # ------------------------------------------------------------ plumbing
    def schedule(self, t: float, kind: str, payload=None) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, kind, payload))

    @staticmethod
    def mono(t: float) -> float:
        return T0_MONO + t

    def net_load_w(self, t: float) -> float:
        i = min(int(t), self.trace.duration_s - 1)
        return self.trace.load_w[i] - self.trace.balcony_w[i]

    def balcony_w(self, t: float) -> float:
        return self.trace.balcony_w[min(int(t), self.trace.duration_s - 1)]

    def p_max_now_w(self, t: float) -> float:
        return self.plant.p_max_w(self.balcony_w(t), self.battery.voltage_v, self.battery.dcl_a)

    def deliver(self, events: list, t: float) -> None:
        if self.validate:
            events = [(topic, M.check_body(topic, body)) for topic, body in events]
        self.policy_calls += 1
        outputs = self.policy.step(events, self.mono(t))
        for topic, body in outputs or ():
            if self.validate:
                body = M.check_body(topic, body)
            self._bus_seq += 1
            if topic == M.CTRL_SETPOINT:
                self.writer.on_setpoint(body, t, self._bus_seq)
            elif topic == M.CTRL_STATUS:
                self.last_status = body

    # ------------------------------------------------------------ message bodies
    def _meter_body(self, power_w: float, t_rx: float) -> dict:
        power_w = round(power_w, 1)
        return {"device": "SHEM", "power_w": power_w, "sign": "positive_is_import",
                "phases": [{"power_w": power_w, "voltage_v": 230.0}], "sample_t_mono": self.mono(t_rx)}

    def _meter_status(self, role: str, t: float) -> dict:
        return {"role": role, "ok": True, "device": "SHEM", "error_kind": None, "error_count": 0,
                "last_ok_t_mono": self.mono(t)}

    def _inverter_body(self, index: int, inv: BenchInverter, sample: tuple, t: float) -> dict:
        sample_t, ac_w, pct, dc_w, dc_v, temp_c = sample
        return {"serial": inv.serial, "name": inv.name, "index": index, "model": inv.spec.model,
                "reachable": True, "producing": True, "data_age_s": round(t - sample_t, 3),
                "sample_t_mono": self.mono(sample_t), "ac_power_w": round(ac_w, 1), "ac_voltage_v": 230.0,
                "dc_voltage_v": round(dc_v, 2), "dc_current_a": round(dc_w / dc_v, 2) if dc_v > 0 else 0.0,
                "dc_power_w": round(dc_w, 1), "temperature_c": round(temp_c, 1),
                "yield_total_kwh": round(inv.yield_total_wh / 1000.0, 3),
                "limit_pct": round(pct, 1), "limit_w": round(pct * inv.max_power_w / 100.0, 1),
                "max_power_w": inv.max_power_w}

    def _battery_body(self) -> dict:
        b = self.battery
        return {"present": True, "service": "com.victronenergy.battery.bench", "soc_pct": round(b.soc_pct, 1),
                "voltage_v": round(b.voltage_v, 2), "current_a": round(b.current_a, 2), "ccl_a": round(b.ccl_a, 1),
                "dcl_a": round(b.dcl_a, 1), "temperature_c": b.temperature_c, "age_s": 0.5}

    def _dtu_status_body(self, t: float) -> dict:
        return {"ok": True, "error_kind": None, "error_count": 0, "serials": [i.serial for i in self.inverters],
                "firmware": "v25.9.11", "can_control": True, "last_ok_t_mono": self.mono(t)}

    # ------------------------------------------------------------ events
    def _handle(self, t: float, kind: str, payload) -> None:
        plant = self.plant
        if kind == "meter":
            true_g = self.sim.load_w - self.sim.balcony_w - self.sim.ac_total_w
            value = true_g * plant.meter.gain + self.meter_rng.gauss(0.0, plant.meter.noise_w)
            lo, hi = plant.meter.latency_s
            self.schedule(t + self.meter_rng.uniform(lo, hi), "meter_rx", value)
            self.schedule(t + plant.meter.interval_s, "meter")
        elif kind == "meter_rx":
            self.deliver([(M.METER_GRID, self._meter_body(payload, t)),
                          (M.METER_STATUS, self._meter_status("grid", t))], t)
        elif kind == "balcony":
            value = self.sim.balcony_w * plant.balcony_meter.gain \
                + self.balcony_rng.gauss(0.0, plant.balcony_meter.noise_w)
            lo, hi = plant.balcony_meter.latency_s
            self.schedule(t + self.balcony_rng.uniform(lo, hi), "balcony_rx", max(0.0, value))
            self.schedule(t + plant.balcony_meter.interval_s, "balcony")
        elif kind == "balcony_rx":
            self.deliver([(M.METER_BALCONY, self._meter_body(payload, t)),
                          (M.METER_STATUS, self._meter_status("balcony", t))], t)
        elif kind == "radio":
            inv = self.inverters[self.radio_next]
            self.radio_next = (self.radio_next + 1) % len(self.inverters)
            self.dtu_cache[inv.serial] = (t, inv.ac_power_w, self.writer.acked[inv.serial], inv.dc_power_w,
                                          inv.dc_voltage_v, inv.temperature_c)
            self.schedule(t + plant.dtu.radio_interval_s, "radio")
        elif kind == "http":
            events = [(M.DTU_STATUS, self._dtu_status_body(t))]
            for index, inv in enumerate(self.inverters):
                sample = self.dtu_cache.get(inv.serial)
                if sample is not None and self.forwarded.get(inv.serial) != sample[0]:
                    self.forwarded[inv.serial] = sample[0]
                    events.append((M.DTU_INVERTER, self._inverter_body(index, inv, sample, t)))
            events.append((M.VENUS_BATTERY, self._battery_body()))
            self.deliver(events, t)
            self.schedule(t + plant.dtu.http_poll_interval_s, "http")
        elif kind == "ack":
            serial, pct, sent_t, latency, seq = payload
            self.writer.on_ack(serial, pct, t)
            body = {"serial": serial, "command": "limit", "outcome": "ok", "limit_pct": pct,
                    "setpoint_seq": seq, "latency_s": round(latency, 3), "sent_t_mono": self.mono(sent_t)}
            self.deliver([(M.DTU_ACK, body)], t)
            self.writer.maybe_send(serial, t)
        elif kind == "wake":
            self.deliver([], t)
            interval = getattr(self.policy, "wake_interval_s", None)
            if interval:
                self.schedule(t + interval, "wake")

    # ------------------------------------------------------------ run
    def run(self) -> RunResult:
        n = self.trace.duration_s
        if hasattr(self.policy, "reset"):
            self.policy.reset(self)
        self.schedule(0.3, "meter")
        self.schedule(0.05, "radio")
        self.schedule(0.5, "http")
        if self.has_balcony:
            self.schedule(0.7, "balcony")
        if getattr(self.policy, "wake_interval_s", None):
            self.schedule(0.0, "wake")
        ticks_per_s = int(round(1.0 / self.tick_s))
        dt = 1.0 / ticks_per_s
        heap = self._heap
        sim = self.sim
        battery = self.battery
        plant = self.plant
        out = np.zeros(n)
        p_max = np.zeros(n)
        trace_balcony = self.trace.balcony_w
        for second in range(n):
            acc = 0.0
            for k in range(1, ticks_per_s + 1):
                t = second + k * dt
                while heap and heap[0][0] <= t:
                    te, _, kind, payload = heapq.heappop(heap)
                    self._handle(te, kind, payload)
                sim.step(dt)
                acc += sim.ac_total_w
            out[second] = acc / ticks_per_s
            p_max[second] = plant.p_max_w(trace_balcony[second], battery.voltage_v, battery.dcl_a)
        return RunResult(getattr(self.policy, "name", "?"), out, p_max, self.writer.commands, self.writer.resends,
                         self.policy_calls, self.last_status)
