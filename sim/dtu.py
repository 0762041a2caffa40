"""The OpenDTU's radio side, without HTTP: round-robin stats polls, limit/power command queue with ack, timeout and
resend, read-back, reboot (docs/opendtu-api.md §4, §5, §7). `OpenDtuSimulator` wraps it in the Web API; the
benchmark (bench/loop.py) uses it directly on a stepped plant (it runs from a plant hook, in plant time).

Per inverter:
* stats are sampled only at its poll slot (one inverter per `poll_interval_s`, round-robin); `data_age` grows between;
* a command goes Pending → (ack after `ack_min_s`..`ack_max_s`, uniform or log-uniform; `resend_chance` of one
  internal resend costing `resend_after_s`) → Ok and the inverter applies it (then its own dead time); a command
  lost on the radio (`failure_chance`, or a fault) gets no ack: Failure after `failure_timeout_s`, and while Failure
  the last limit is re-sent at every poll slot of that inverter (Pending/Failure cycle) until it gets through;
* a newer limit replaces a queued older one; the one in flight is kept;
* `limit_relative` is 0 after boot until the first ack or the read-back `limit_readback_s` after boot;
  `max_power` is 0 until the first successful stats poll.
Faults per inverter: `unreachable` (no answers: polls fail, commands fail, values stale), `limit_failure` (stats work,
limits never acked), `stale` (not polled at all: data_age grows, `reachable` stays true), `power_ignored` (power
commands are acknowledged, Ok, but the inverter keeps running: a stop that only the output can disprove).
A rating lie (`set_rating_lie(serial, w)`): the DTU reports `w` as the rated power (limit status, limit_absolute,
devinfo max_power) while the inverter delivers its real one.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Optional

from sim.plant import Inverter, Plant

INVERTER_FAULTS = ("unreachable", "limit_failure", "stale", "power_ignored")


@dataclass
class Command:
    kind: str                  # limit | power
    value: object              # limit: (pct, persistent, commanded_value, limit_type); power: "on"|"off"|"restart"
    sent_s: float = 0.0
    ack_at_s: Optional[float] = None
    deadline_s: float = 0.0


def apply_fault(dtu: "DtuModel", http_faults: tuple, set_transport_fault, kind: Optional[str],
                serial: Optional[str] = None) -> bool:
    """The fault control both gateway simulators share (OpenDTU, AhoyDTU): None clears (one inverter's fault, or
    all), an HTTP fault goes to the transport, `stale` without a serial freezes every inverter's data, an
    inverter fault goes to the radio model. False: not one of these (the caller's own kinds, or unknown)."""
    if kind is None:
        dtu.set_inverter_fault(None, serial)
        if serial is None:
            dtu.set_global_stale(False)
            set_transport_fault(None)
    elif kind in http_faults:
        set_transport_fault(kind)
    elif kind == "stale" and serial is None:
        dtu.set_global_stale(True)
    elif kind in INVERTER_FAULTS:
        dtu.set_inverter_fault(kind, serial)
    else:
        return False
    return True


@dataclass
class InverterRadio:
    inv: Inverter
    order: int
    poll_enabled: bool = True
    command_enable: bool = True
    reachable_threshold: int = 2
    stats: Optional[dict] = None
    stats_t_s: Optional[float] = None
    failed_polls: int = 0
    devinfo_known: bool = False
    limit_known: bool = False
    limit_reported_pct: float = 0.0
    limit_status: str = "Ok"
    power_status: str = "Ok"
    limit_inflight: Optional[Command] = None
    limit_queued: Optional[Command] = None
    limit_last: Optional[Command] = None
    last_limit_cmd_s: Optional[float] = None
    power_inflight: Optional[Command] = None
    faults: set = field(default_factory=set)
    rating_lie_w: Optional[float] = None    # reported instead of the real rating
    tx_request: int = 0
    tx_re_request: int = 0
    rx_success: int = 0
    rx_fail_nothing: int = 0
    events: int = 0

    @property
    def reachable(self) -> bool:
        return self.poll_enabled and self.failed_polls <= self.reachable_threshold


class DtuModel:
    def __init__(self, plant: Plant, poll_interval_s: float = 1.0, ack_min_s: float = 0.2, ack_max_s: float = 2.0,
                 failure_timeout_s: float = 10.0, limit_readback_s: float = 30.0, seed: int = 1,
                 resend_chance: float = 0.05, resend_after_s: float = 2.0, ack_log_uniform: bool = False,
                 failure_chance: float = 0.0):
        self.plant = plant
        self.poll_interval_s = poll_interval_s
        self.ack_min_s = ack_min_s
        self.ack_max_s = ack_max_s
        self.ack_log_uniform = ack_log_uniform
        self.resend_after_s = resend_after_s
        self.failure_chance = failure_chance
        self.failure_timeout_s = failure_timeout_s
        self.limit_readback_s = limit_readback_s
        self.resend_chance = resend_chance
        self.rng = random.Random(seed)
        self.radios = [InverterRadio(inv, order=i) for i, inv in enumerate(plant.inverters)]
        self.by_serial = {r.inv.serial: r for r in self.radios}
        self.global_stale = False
        self.boot_s = plant.now_s
        self.uptime_offset_s = 0.0
        self._rr = 0
        self._next_poll_s = plant.now_s
        self.limit_log: list[dict] = []
        plant.add_hook(self._on_step)

    def close(self) -> None:
        self.plant.remove_hook(self._on_step)

    # ----- queries (call with plant.lock held or accept a racy read) -----
    def uptime_s(self) -> float:
        return self.plant.now_s - self.boot_s + self.uptime_offset_s

    def data_age_s(self, radio: InverterRadio) -> float:
        if radio.stats_t_s is None:
            return self.uptime_s()
        return self.plant.now_s - radio.stats_t_s

    def max_power_w(self, radio: InverterRadio) -> float:
        if not radio.devinfo_known:
            return 0.0
        return radio.rating_lie_w if radio.rating_lie_w is not None else radio.inv.max_power_w

    def limit_relative(self, radio: InverterRadio) -> float:
        return radio.limit_reported_pct if radio.limit_known else 0.0

    # ----- faults -----
    def set_inverter_fault(self, kind: Optional[str], serial: Optional[str] = None) -> None:
        if kind is not None and kind not in INVERTER_FAULTS:
            raise ValueError(f"unknown inverter fault {kind!r}")
        with self.plant.lock:
            targets = self.radios if serial is None else [self.by_serial[serial.lower()]]
            for radio in targets:
                if kind is None:
                    radio.faults.clear()
                else:
                    radio.faults.add(kind)

    def set_global_stale(self, on: bool) -> None:
        with self.plant.lock:
            self.global_stale = bool(on)

    def set_rating_lie(self, serial: str, rating_w: Optional[float]) -> None:
        with self.plant.lock:
            self.by_serial[serial.lower()].rating_lie_w = rating_w

    def set_command_enable(self, serial: str, enabled: bool) -> None:
        with self.plant.lock:
            self.by_serial[serial.lower()].command_enable = bool(enabled)

    # ----- commands -----
    def submit_limit(self, serial: str, limit_type: int, value: float, persistent: bool, relative: bool) -> None:
        """A validated limit command (as after "Settings saved!")."""
        with self.plant.lock:
            radio = self.by_serial[serial.lower()]
            now = self.plant.now_s
            raw = value
            if value < 0:                                   # the firmware wraps negatives (uint16 × 10)
                value = (int(value * 10) & 0xFFFF) / 10.0
            if relative:
                pct = min(100.0, value)
            else:
                pct = min(100.0, value / radio.inv.max_power_w * 100.0)
            entry = {"t_s": round(now, 3), "serial": radio.inv.serial, "type": limit_type, "value": raw,
                     "pct": round(pct, 3), "w": round(pct * radio.inv.max_power_w / 100.0, 2),
                     "accepted": radio.command_enable, "status": "Pending" if radio.command_enable else "ignored"}
            self.limit_log.append(entry)
            if len(self.limit_log) > 10000:
                del self.limit_log[:5000]
            if not radio.command_enable:
                return                                      # silent no-op, API still says success
            radio.last_limit_cmd_s = now
            radio.limit_last = None
            cmd = Command("limit", (pct, persistent, raw, limit_type, entry))
            if radio.limit_inflight is None:
                self._send(radio, cmd, now)
            else:
                if radio.limit_queued is not None:
                    radio.limit_queued.value[4]["status"] = "replaced"
                radio.limit_queued = cmd
            radio.limit_status = "Pending"

    def submit_power(self, serial: str, action: str) -> None:
        with self.plant.lock:
            radio = self.by_serial[serial.lower()]
            if not radio.command_enable:
                return
            now = self.plant.now_s
            cmd = Command("power", action)
            self._send(radio, cmd, now)
            radio.power_inflight = cmd
            radio.power_status = "Pending"

    def reboot(self) -> None:
        """DTU reboot: everything it knew is forgotten; the inverters keep running."""
        with self.plant.lock:
            self.boot_s = self.plant.now_s
            self.uptime_offset_s = 0.0
            for radio in self.radios:
                radio.stats = None
                radio.stats_t_s = None
                radio.failed_polls = 0
                radio.devinfo_known = False
                radio.limit_known = False
                radio.limit_reported_pct = 0.0
                radio.limit_status = radio.power_status = "Ok"
                radio.limit_inflight = radio.limit_queued = radio.limit_last = radio.power_inflight = None
                radio.last_limit_cmd_s = None

    # ----- radio -----
    def _link_ok(self, radio: InverterRadio) -> bool:
        inv = radio.inv
        return ("unreachable" not in radio.faults and not inv.restarting(self.plant.now_s)
                and self.plant.battery.usable)

    def _send(self, radio: InverterRadio, cmd: Command, now: float) -> None:
        cmd.sent_s = now
        cmd.deadline_s = now + self.failure_timeout_s
        radio.tx_request += 1
        blocked = cmd.kind == "limit" and "limit_failure" in radio.faults
        if self._link_ok(radio) and not blocked and not (self.failure_chance
                                                         and self.rng.random() < self.failure_chance):
            cmd.ack_at_s = now + self._ack_delay_s(radio)
        else:
            cmd.ack_at_s = None
        if cmd.kind == "limit":
            radio.limit_inflight = cmd

    def _ack_delay_s(self, radio: InverterRadio) -> float:
        if self.ack_log_uniform:
            lo = max(self.ack_min_s, 1e-3)
            delay = math.exp(self.rng.uniform(math.log(lo), math.log(max(self.ack_max_s, lo))))
        else:
            delay = self.rng.uniform(self.ack_min_s, self.ack_max_s)
        if self.rng.random() < self.resend_chance:
            delay += self.resend_after_s
            radio.tx_re_request += 1
        return delay

    def _on_step(self, now: float) -> None:
        for radio in self.radios:
            cmd = radio.limit_inflight
            if cmd is not None:
                if cmd.ack_at_s is not None and now >= cmd.ack_at_s and self._link_ok(radio) \
                        and "limit_failure" not in radio.faults:
                    pct, persistent, _raw, limit_type, entry = cmd.value
                    applied = pct
                    if radio.inv.spec.hms and limit_type in (1, 3, 257):
                        applied = math.floor(pct + 1e-9)      # HMS: relative limits in whole % (OnBattery#1081)
                    radio.inv.apply_limit(applied, now, persistent=persistent)
                    radio.limit_reported_pct = pct
                    radio.limit_known = True
                    radio.rx_success += 1
                    radio.limit_inflight = None
                    radio.limit_last = None
                    entry["status"] = "Ok"
                    entry["ack_t_s"] = round(now, 3)
                    self._start_queued(radio, now, "Ok")
                elif now >= cmd.deadline_s and (cmd.ack_at_s is None or now >= cmd.ack_at_s):
                    radio.rx_fail_nothing += 1
                    radio.limit_inflight = None
                    radio.limit_last = cmd
                    cmd.value[4]["status"] = "Failure"
                    self._start_queued(radio, now, "Failure")
            pcmd = radio.power_inflight
            if pcmd is not None:
                if pcmd.ack_at_s is not None and now >= pcmd.ack_at_s and self._link_ok(radio):
                    if "power_ignored" in radio.faults:
                        pass                                # acknowledged, and nothing happens
                    elif pcmd.value == "restart":
                        radio.inv.restart(now)
                    else:
                        radio.inv.set_enabled(pcmd.value == "on")
                        if pcmd.value == "off":
                            radio.events += 1               # event 124 "Switched off by remote control"
                    radio.power_inflight = None
                    radio.power_status = "Ok"
                elif now >= pcmd.deadline_s and (pcmd.ack_at_s is None or now >= pcmd.ack_at_s):
                    radio.power_inflight = None
                    radio.power_status = "Failure"
            if (not radio.limit_known and radio.devinfo_known and now - self.boot_s >= self.limit_readback_s
                    and (radio.last_limit_cmd_s is None or now - radio.last_limit_cmd_s >= 240.0)):
                radio.limit_known = True                    # read-back of the inverter's current limit
                radio.limit_reported_pct = radio.inv.limit_pct
        if now >= self._next_poll_s and self.radios:
            self._next_poll_s = max(self._next_poll_s + self.poll_interval_s, now)
            radio = self.radios[self._rr % len(self.radios)]
            self._rr += 1
            self._poll(radio, now)

    def _start_queued(self, radio: InverterRadio, now: float, status_if_none: str) -> None:
        if radio.limit_queued is not None:
            queued, radio.limit_queued = radio.limit_queued, None
            self._send(radio, queued, now)
            radio.limit_status = "Pending"
        else:
            radio.limit_status = status_if_none

    def _poll(self, radio: InverterRadio, now: float) -> None:
        if self.global_stale or "stale" in radio.faults or not radio.poll_enabled:
            return
        if radio.limit_status == "Failure" and radio.limit_last is not None and radio.limit_inflight is None:
            last, radio.limit_last = radio.limit_last, None   # the library re-sends the failed limit
            last.value[4]["status"] = "Pending"
            self._send(radio, last, now)
            radio.limit_status = "Pending"
        if not self._poll_answered(radio):
            return
        radio.stats_t_s = now
        radio.stats = self._sample(radio.inv)

    def _poll_answered(self, radio: InverterRadio) -> bool:
        """One poll over the radio, counted in the inverter's radio statistics: did it answer?"""
        radio.tx_request += 1
        if not self._link_ok(radio):
            radio.failed_polls += 1
            radio.rx_fail_nothing += 1
            return False
        radio.failed_polls = 0
        radio.rx_success += 1
        radio.devinfo_known = True
        return True

    @staticmethod
    def _sample(inv: Inverter) -> dict:
        ac = inv.ac_power_w
        v_ac = inv.ac_voltage_v
        n = inv.spec.n_inputs
        dc = inv.dc_power_w
        v_dc = inv.dc_voltage_v
        return {
            "ac_power_w": ac, "ac_voltage_v": v_ac, "ac_current_a": ac / v_ac if v_ac > 0 else 0.0,
            "frequency_hz": inv.frequency_hz, "power_factor": 0.998 if ac > 0 else 0.0,
            "reactive_power_var": -0.9 if ac > 0 else 0.0,
            "dc_power_w": dc, "dc_voltage_v": v_dc,
            # the day's DC energy from the day's AC energy at the peak efficiency: dividing by the efficiency of
            # this instant made it absurd (1e12 Wh) at a few W of output, and AhoyClient rejects such a record
            "inputs": [{"power_w": dc / n, "voltage_v": v_dc, "current_a": inv.dc_current_a / n,
                        "yield_day_wh": inv.yield_day_wh / inv.eta_peak / n,
                        "yield_total_kwh": inv.yield_total_wh / 1000.0 / n} for _ in range(n)],
            "yield_day_wh": inv.yield_day_wh, "yield_total_kwh": inv.yield_total_wh / 1000.0,
            "temperature_c": inv.temperature_c, "efficiency_pct": ac / dc * 100.0 if dc > 0 else 0.0,
        }
