"""The closed loop in simulated time: trace -> plant -> meter / DTU -> policy -> DTU writer -> DTU -> plant.

One model of each part of the chain (parameters in `bench.plantcfg`):
* plant: `sim.plant.Plant`, the simulators' physics: load and balcony from the trace, inverters built by
  `Inverter.from_spec` (dead time after the ack, first-order lag faster up than down, slew limits, limit resolution,
  0 W below the minimum limit, efficiency, input-current saturation), an LFP battery whose SOC and voltage move
  (or a fixed voltage);
* DTU: `sim.dtu.DtuModel` on that plant: stats of one inverter per `dtu.radio_interval_s` (round-robin), one limit
  in flight per inverter, acks after a log-uniform `dtu.ack_latency_s`, `nok_probability` internal resends,
  `failure_probability` lost commands;
* DTU writer: the product's own state machine, `services.dtu_poller.writer.WriterMachine` (send threshold, refresh,
  stop/start, watchdog, status polls every 0.5 s while a command is in flight), driven by `SimWriter` the way
  `WriterLoop` drives it, its HTTP calls replaced by calls into the DtuModel (taking no simulated time);
* our DTU poller: every `dtu.http_poll_interval_s` each new stats sample becomes `dtu.inverter` (`sample_t_mono` =
  radio time), with `dtu.status` and `venus.battery`; the inventory (serials, reachable, read-back limits) is
  handed to the writer, which reads it when it next wakes;
* grid meter: a sample every `meter.interval_s` (phase 0.3 s), value = gain x (L - B - u) + N(0, noise), delivered
  as `meter.grid` after a uniform transport latency (`sample_t_mono` = arrival, as the shelly_poller stamps it);
  the balcony meter the same every `balcony_meter.interval_s` (only when the trace has balcony solar).
Physics and the DTU advance in fixed ticks (`tick_s`, default 0.25 s: DTU polls and acks fall on ticks); events
are processed in time order between ticks; a policy is called only when a message arrives for it or its own timer
(`wake_interval_s`) fires. The bus contract wants a full `ctrl.setpoint` at least every 2 s (the writer's watchdog
acts after 10 s): the project's controller repeats its own; the baselines, which send only changes, get their last
one repeated every `repeat_setpoint_s`. All random draws come from per-purpose generators seeded from `seed`, so
every policy sees the same meter noise and ack latencies.
"""
from __future__ import annotations

import heapq
import random
from dataclasses import dataclass
from typing import Optional

import numpy as np

from bench.plantcfg import PlantConfig, product_config
from common import messages as M
from services.dtu_poller.client import LimitStatus
from services.dtu_poller.writer import FLAGS_REFRESH_S, WriterMachine, WriterParams
from sim import plant as simplant
from sim.dtu import DtuModel
from sim.loadgen import Trace

T0_MONO = 1000.0          # simulated CLOCK_MONOTONIC at t = 0
T0_WALL = 1.76e9          # simulated wall clock at t = 0


@dataclass
class RunResult:
    policy: str
    output_w: np.ndarray                # mean inverter AC output per second (what the plant produced)
    p_max_w: np.ndarray                 # per second: min(max_feed_in - balcony, sum max, 0.967 V DCL)
    commands: int                       # limit commands the writer sent (POSTs)
    resends: int                        # DTU-internal resends
    policy_calls: int
    last_status: Optional[dict] = None
    above_cap: int = 0                  # commands after which the limits that may be on the wire sum above the cap
    max_commanded_w: float = 0.0        # the highest such sum (W), SimWriter.possible_w
    refreshes: int = 0                  # limit commands repeating the limit last sent to that inverter


class WireCount:
    """What a bench writer counts of the commands on the wire, for SimWriter (OpenDTU) and bench.ahoy's AhoyWriter:
    limit commands, refreshes (a limit repeating the one last sent to that inverter), and commands after which the
    limits that may be on the wire (the writer's `possible_w`, at the inverters' real ratings) sum above the cap."""

    def __init__(self):
        self.commands = 0
        self.wire_w: dict = {}                         # serial -> last limit sent (W), to count refreshes
        self.above_cap = 0
        self.max_commanded_w = 0.0
        self.refreshes = 0

    def _limit_sent(self, serial: str, limit_w: float) -> None:
        if self.wire_w.get(serial) == limit_w:
            self.refreshes += 1
        self.wire_w[serial] = limit_w

    def _check_total(self, possible_w: float, cap_w: float) -> None:
        """Above the site's feed-in cap (+1 W for rounding) the command counts as one above the cap."""
        self.max_commanded_w = max(self.max_commanded_w, possible_w)
        if possible_w > cap_w + 1.0:
            self.above_cap += 1


class SimWriter(WireCount):
    """WriterLoop in simulated time: the same machine, the same order of calls, the DtuModel instead of HTTP.

    WriterLoop wakes on a setpoint or after `next_wakeup`; then: setpoints, inventory (if new), tick, send what is
    due, command flags, status poll, send again."""

    def __init__(self, loop: "ClosedLoop", params: WriterParams):
        super().__init__()
        self.loop, self.dtu = loop, loop.dtu
        self.machine = WriterMachine(params, start_t=loop.mono(0.0))
        self.inbox: list = []
        self.inventory: Optional[tuple] = None
        self.serials: list = []
        self.flags_t: Optional[float] = None
        self.wake_gen = 0
        self.woken = False
        self.power_states: dict = {}

    # WriterLoop.submit / Inventory.update
    def submit(self, body: dict, seq: int, t: float) -> None:
        self.inbox.append((body, seq, self.loop.mono(t)))
        if not self.woken:
            self.woken = True
            self.loop.schedule(t, "writer", None)

    def hand_over(self, serials: list, reachable: set, limits: dict, poll_t: float, samples: dict) -> None:
        """samples: {serial: (ac_power_w, sample_t_mono)}, from which the machine confirms stops and starts."""
        self.inventory = (serials, reachable, limits, poll_t, samples)

    def wake(self, t: float, gen: Optional[int]) -> list:
        """One pass of WriterLoop.run. gen None: woken by a setpoint; else the timeout of pass `gen`."""
        if gen is None:
            self.woken = False
        elif gen != self.wake_gen:
            return []                                  # a later pass has set a new timeout
        machine, now, out = self.machine, self.loop.mono(t), []
        for body, seq, msg_t in self.inbox:
            out += machine.on_setpoint(body, seq, msg_t, now)
        self.inbox.clear()
        if self.inventory is not None:
            self.serials = list(self.inventory[0])
            machine.on_inventory(*self.inventory, now)
            self.inventory = None
        out += machine.tick(now)
        if not set(self.serials) <= set(machine.command_flags):
            self._refresh_flags(now)           # a first-seen inverter's commands wait for its flags
        out += self._send_due(now)
        self._refresh_flags(now)
        out += self._poll_status(now)
        out += self._send_due(now)
        self.power_states = machine.power_states()     # WriterLoop: Inventory.set_power_states, for dtu.inverter
        self.wake_gen += 1
        self.loop.schedule(t + machine.next_wakeup(now), "writer", self.wake_gen)
        return out

    def _send_due(self, now: float) -> list:
        out = []
        for _ in range(32):
            cmd = self.machine.next_command(now)
            if cmd is None:
                break
            dtu = self.dtu
            if cmd.kind == "limit":
                self.commands += 1
                dtu.submit_limit(cmd.serial, 1, round(min(100.0, max(0.0, cmd.limit_pct)), 1), persistent=False,
                                 relative=True)
            elif cmd.kind in ("power_on", "power_off"):
                dtu.submit_power(cmd.serial, "on" if cmd.kind == "power_on" else "off")
            elif cmd.kind == "restart":
                dtu.submit_power(cmd.serial, "restart")
            elif cmd.kind == "dtu_reboot":
                dtu.reboot()
            self._check_cap(cmd)
            out += self.machine.on_sent(cmd, now, None, now)
        return out

    def _check_cap(self, cmd) -> None:
        """After a limit or power command: the sum over the inverters that may run of the highest limit that may be
        on the wire (`possible_w`); above the site's feed-in cap (+1 W for rounding) the command counts as one above
        the cap. Counting only the limits last sent missed a reduction not yet applied (the old, higher limit is
        still in force while the new one is in flight) and a failed raise the DTU re-sends on its own."""
        if cmd.kind == "limit":
            radio = self.dtu.by_serial.get(cmd.serial)
            if radio is None:
                return
            self._limit_sent(cmd.serial, min(100.0, max(0.0, cmd.limit_pct)) * self.dtu.max_power_w(radio) / 100.0)
        elif cmd.kind not in ("power_off", "power_on", "restart"):
            return
        self._check_total(self.possible_w(), self.loop.plant.site.max_feed_in_w)

    def possible_w(self) -> float:
        """Sum over the inverters that run or may start (not switched off, or a power on / restart on its way) of
        the highest of: the limit in force (acknowledged by the inverter), the one in flight, the one queued in
        the DTU, and a failed one the DTU may still re-send. At the inverters' real ratings."""
        total = 0.0
        for radio in self.dtu.radios:
            inv = radio.inv
            power = radio.power_inflight.value if radio.power_inflight is not None else None
            if not inv.enabled and power not in ("on", "restart"):
                continue
            pcts = [inv.limit_pct] + [c.value[0] for c in (radio.limit_inflight, radio.limit_queued,
                                                             radio.limit_last) if c is not None]
            total += min(100.0, max(pcts)) * inv.max_power_w / 100.0
        return total

    def _refresh_flags(self, now: float) -> None:
        machine = self.machine
        if not machine.params.can_control or not self.serials:
            return
        if self.flags_t is not None and now - self.flags_t < FLAGS_REFRESH_S \
                and set(self.serials) <= set(machine.command_flags):
            return
        self.flags_t = now
        machine.on_command_flags({r.inv.serial: (r.command_enable, True) for r in self.dtu.radios})

    def _poll_status(self, now: float) -> list:
        kind = self.machine.status_poll_due(now)
        if kind is None:
            return []
        dtu, out = self.dtu, []
        if kind == "limit":
            out += self.machine.on_limit_status(
                {r.inv.serial: LimitStatus(dtu.limit_relative(r), dtu.max_power_w(r), r.limit_status)
                 for r in dtu.radios}, now)
        # WriterLoop reads /api/power/status only with a power command in flight; on_power_status ignores the
        # answer otherwise, so asking always is the same
        out += self.machine.on_power_status({r.inv.serial: r.power_status for r in dtu.radios}, now)
        return out


class ClosedLoop:
    def __init__(self, trace: Trace, plant: PlantConfig, policy, seed: int = 1, tick_s: float = 0.25,
                 validate: bool = False, writer_params: Optional[WriterParams] = None):
        """`writer_params`: the writer's settings (default: those of a fresh installation's config.ini)."""
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
        self.inverters = [simplant.Inverter.from_spec(spec) for spec in plant.inverters]
        self.battery = plant.battery.build()
        self.sim = simplant.Plant(self.inverters, trace, self.battery, seed=seed, wall_start_s=T0_WALL)
        d = plant.dtu
        self.dtu = DtuModel(self.sim, poll_interval_s=d.radio_interval_s, ack_min_s=d.ack_latency_s[0],
                            ack_max_s=d.ack_latency_s[1], resend_chance=d.nok_probability,
                            resend_after_s=d.resend_after_s, failure_chance=d.failure_probability,
                            ack_log_uniform=True, seed=seed * 7919 + 3)
        self.writer = SimWriter(self, writer_params or WriterParams.from_config(product_config()))
        self._heap: list = []
        self._seq = 0
        self._bus_seq = 0
        self.has_balcony = trace.has_balcony
        self.forwarded: dict[str, float] = {}
        self.policy_calls = 0
        self.last_status = None
        self.repeat_s = getattr(policy, "repeat_setpoint_s", None)
        self.last_setpoint: Optional[tuple] = None     # (t, body)

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
        sent = False
        for topic, body in self.policy.step(events, self.mono(t)) or ():
            if self.validate:
                body = M.check_body(topic, body)
            if topic == M.CTRL_SETPOINT:
                self._setpoint(body, t)
                sent = True
            elif topic == M.CTRL_STATUS:
                self.last_status = body
        if not sent and self.repeat_s and self.last_setpoint and t - self.last_setpoint[0] >= self.repeat_s:
            self._setpoint(self.last_setpoint[1], t)

    def _setpoint(self, body: dict, t: float) -> None:
        self._bus_seq += 1
        self.last_setpoint = (t, body)
        self.writer.submit(body, self._bus_seq, t)

    # ------------------------------------------------------------ message bodies
    def _meter_body(self, power_w: float, t_rx: float) -> dict:
        power_w = round(power_w, 1)
        return {"device": "SHEM", "power_w": power_w, "sign": "positive_is_import",
                "phases": [{"power_w": power_w, "voltage_v": 230.0}], "sample_t_mono": self.mono(t_rx)}

    def _meter_status(self, role: str, t: float) -> dict:
        return {"role": role, "ok": True, "device": "SHEM", "error_kind": None, "error_count": 0,
                "last_ok_t_mono": self.mono(t)}

    def _inverter_body(self, index: int, radio, t: float) -> dict:
        """What our poller publishes for a new stats sample (the fields the DTU's live data carries)."""
        inv, st, dtu = radio.inv, radio.stats, self.dtu
        pct, max_w = dtu.limit_relative(radio), dtu.max_power_w(radio)
        return {"serial": inv.serial, "name": inv.name, "index": index, "model": inv.spec.model,
                "reachable": radio.reachable, "producing": st["ac_power_w"] > 0,
                "data_age_s": round(t - radio.stats_t_s, 3), "sample_t_mono": self.mono(radio.stats_t_s),
                "ac_power_w": round(st["ac_power_w"], 1), "ac_voltage_v": round(st["ac_voltage_v"], 1),
                "dc_voltage_v": round(st["dc_voltage_v"], 2),
                "dc_current_a": round(st["dc_power_w"] / st["dc_voltage_v"], 2) if st["dc_voltage_v"] > 0 else 0.0,
                "dc_power_w": round(st["dc_power_w"], 1), "temperature_c": round(st["temperature_c"], 1),
                "yield_total_kwh": round(st["yield_total_kwh"], 3),
                "limit_pct": round(pct, 1), "limit_w": round(pct * max_w / 100.0, 1), "max_power_w": max_w,
                **({"power_state": self.writer.power_states[inv.serial]}
                   if inv.serial in self.writer.power_states else {})}

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
            value = self.sim.grid_w * plant.meter.gain + self.meter_rng.gauss(0.0, plant.meter.noise_w)
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
        elif kind == "http":
            dtu = self.dtu
            events = [(M.DTU_STATUS, self._dtu_status_body(t))]
            for index, radio in enumerate(dtu.radios):
                if radio.stats is not None and self.forwarded.get(radio.inv.serial) != radio.stats_t_s:
                    self.forwarded[radio.inv.serial] = radio.stats_t_s
                    events.append((M.DTU_INVERTER, self._inverter_body(index, radio, t)))
            events.append((M.VENUS_BATTERY, self._battery_body()))
            self.writer.hand_over([r.inv.serial for r in dtu.radios],
                                  {r.inv.serial for r in dtu.radios if r.reachable},
                                  {r.inv.serial: dtu.limit_relative(r) for r in dtu.radios}, self.mono(t),
                                  {r.inv.serial: (r.stats["ac_power_w"], self.mono(r.stats_t_s))
                                   for r in dtu.radios if r.stats is not None})
            self.deliver(events, t)
            self.schedule(t + plant.dtu.http_poll_interval_s, "http")
        elif kind == "writer":
            out = self.writer.wake(t, payload)
            if out:
                self.deliver(out, t)
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
        self.schedule(0.0, "writer", 0)
        self.schedule(0.3, "meter")
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
        return RunResult(getattr(self.policy, "name", "?"), out, p_max, self.writer.commands,
                         sum(r.tx_re_request for r in self.dtu.radios), self.policy_calls, self.last_status,
                         self.writer.above_cap, self.writer.max_commanded_w, self.writer.refreshes)
