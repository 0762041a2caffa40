"""Per-inverter protections of both laws (docs/original-project.md §4.5 steps 1-4): producing grace, over-temperature
hysteresis, eligibility, and rate-limited recovery requests (inverter restart, DTU reboot)."""
from __future__ import annotations

from typing import Optional

from services.controller.model import Inverter, State
from services.controller.params import Params


PARKED_PCT = 5.0     # below this limit a Hoymiles may rightly produce nothing (HM at 2 % stuck at 0 W, HM-400 off)


def note_producing(inv: Inverter, sample_t: float) -> None:
    """Grace counter: reset when producing, off grid or parked at a limit below PARKED_PCT (a law that spreads a
    small load over few inverters parks the others at the minimum percent, where many models produce nothing:
    that is not a fault, and counting it would take the inverter out of control for good), else remember since
    when it does not produce."""
    parked = inv.applied_pct is not None and inv.applied_pct < PARKED_PCT
    if inv.producing or not inv.on_grid() or parked:
        inv.not_producing_since = None
    elif inv.not_producing_since is None:
        inv.not_producing_since = sample_t


def producing_or_grace(inv: Inverter, now: float, p: Params) -> bool:
    return inv.not_producing_since is None or now - inv.not_producing_since < p.producing_grace_s


def update_temperature(inv: Inverter, wants_more: bool, p: Params) -> Optional[str]:
    """Alarm when hotter than max_temperature while more power is asked; cleared below max - hysteresis."""
    temp = inv.temperature_c
    if temp is None:
        return None
    if not inv.temp_alarm and temp > p.max_temperature and wants_more:
        inv.temp_alarm = True
        return f"{inv.serial}: {temp:g} °C > {p.max_temperature:g} °C: over-temperature, held at minimum"
    if inv.temp_alarm and temp < p.max_temperature - p.temperature_hysteresis:
        inv.temp_alarm = False
        return f"{inv.serial}: {temp:g} °C < {p.max_temperature - p.temperature_hysteresis:g} °C: temperature ok"
    return None


def fresh(inv: Inverter, now: float, p: Params) -> bool:
    return inv.sample_t is not None and now - inv.sample_t <= p.dtu_stale_s


def ineligible_reason(inv: Inverter, now: float, p: Params) -> Optional[str]:
    """Why this inverter must sit at its minimum, or None when it may be controlled."""
    if inv.stopped:
        return "stopped (the cap is below its minimum output)"
    if not fresh(inv, now, p):
        return "no fresh data"
    if inv.max_w() <= 0:
        return "max power unknown"
    if not inv.reachable:
        return "unreachable"
    if not inv.on_grid():
        return "off grid"
    if not producing_or_grace(inv, now, p):
        return "not producing"
    if inv.temp_alarm:
        return "over-temperature"
    return None


def recovery_requests(state: State, now: float, p: Params) -> None:
    """Restart an inverter that is on grid but has not produced for the grace time; reboot the DTU when no
    inverter is reachable. Each request at most once per its minimum interval (the writer rate-limits too)."""
    any_reachable = False
    unreachable = []
    for serial in state.order:
        inv = state.inverters[serial]
        if not fresh(inv, now, p):
            continue
        if inv.reachable:
            any_reachable = True
        else:
            unreachable.append(serial)
        if inv.reachable and inv.on_grid() and not inv.stopped and not producing_or_grace(inv, now, p):
            last = inv.last_restart_req_t
            if last is None or now - last >= p.restart_min_interval_s:
                inv.last_restart_req_t = now
                state.restart_requests.append(serial)
                state.setpoint_dirty = True
                state.reasons.append(f"{serial}: on grid but not producing for {p.producing_grace_s:g} s: "
                                     f"restart requested")
    if unreachable and not any_reachable:
        last = state.last_dtu_reboot_req_t
        if last is None or now - last >= p.dtu_reboot_min_interval_s:
            state.last_dtu_reboot_req_t = now
            state.dtu_reboot_request = True
            state.setpoint_dirty = True
            state.reasons.append(f"no inverter reachable ({', '.join(unreachable)}): DTU reboot requested")
