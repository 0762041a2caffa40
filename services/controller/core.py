"""The controller's functional core: `step(state, events, now, params) -> (state, outputs)`.

Pure: no I/O, no clock reads; `now` is CLOCK_MONOTONIC seconds, comparable with the bodies' `sample_t_mono`.
`events` are `(topic, body)` exactly as received on the bus; `outputs` are `(topic, body)` to publish
(ctrl.setpoint, ctrl.relay, ctrl.status, ctrl.settings), every body valid per common/messages.py.

The state object is updated in place and returned (for speed: the benchmark calls `step` on every event of a
simulated day); callers must use the returned state and not keep the old reference as a snapshot
(`copy.deepcopy` it for that). `persistable(state)` is the part to store; `persist_version(state)` changes
whenever that part changed.

Layers, in order, on every call: ingest events -> life signal (each interval; while off, every loop) -> the law
(`project_law` with its output model `response_model` on every new meter sample, `seed_law` every
seed_loop_interval_s) -> every seed_loop_interval_s:
recovery requests and the sustained-export counter -> safety (stale grid, no battery or life signal off: only
toward less output, safe minimum limits; ineligible inverters at minimum; total cap) -> outputs.

Defects of the seed not reproduced (docs/original-project.md §7): distinct alarms (`alarms` in ctrl.status), a failed
command is not taken as applied (dtu.ack), inverters from the DTU's inventory, no battery -> safe minimum,
the budget counts every inverter in the same step, settings and season state persisted (`persistable`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from services.controller import budget as budget_mod
from services.controller import (distribution, lifesignal, plausible, project_law, protection, season, seed_law,
                                 stopping)
from services.controller.model import Inverter, Season, Settings, State
from services.controller.params import Params
from common.settings import SEND_THRESHOLD_PCT
from services.controller.settings import RANGES, validate_setting

__all__ = ["Params", "State", "initial_state", "step", "persistable", "persist_version", "PERSIST_FORMAT"]

PERSIST_FORMAT = 1
MAX_REASONS = 40
MAX_ANSWERS = 16
ACK_OK = "ok"
PCT_SAME = 0.05          # limits closer than this are the same command
READBACK_SAME_PCT = SEND_THRESHOLD_PCT + 0.05   # the writer skips smaller changes; HMS apply whole percent


# ------------------------------------------------------------------ state creation and persistence

def _int_in(value, name) -> Optional[int]:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    low, high = RANGES[name]
    return value if low <= value <= high else None


def initial_state(params: Params, persisted: Optional[dict] = None) -> State:
    """A fresh state; `persisted` (from `persistable`) restores settings and season state. Invalid or missing
    entries fall back to the config values (noted in the first status's reasons), never an exception."""
    p = params
    settings = Settings(max_feed_in=p.max_feed_in, power_feed_in_soc=p.power_feed_in_soc, zero_point=p.zero_point,
                        config_max_feed_in=p.max_feed_in, config_power_feed_in_soc=p.power_feed_in_soc,
                        config_zero_point=p.zero_point)
    seas = Season(sfm=p.soc_floating_max)
    state = State(settings=settings, season=seas)
    if persisted is None:
        return state
    notes = []
    if not isinstance(persisted, dict) or persisted.get("format") != PERSIST_FORMAT:
        state.reasons.append("persisted state: unknown format, defaults used")
        return state
    saved = persisted.get("settings")
    saved = saved if isinstance(saved, dict) else {}
    configured = persisted.get("config")
    configured = configured if isinstance(configured, dict) else {}
    for name in ("max_feed_in", "power_feed_in_soc", "zero_point"):
        value = _int_in(saved.get(name), name)
        if value is None:
            if name in saved:
                notes.append(f"{name} invalid")
            continue
        if configured.get(name) not in (None, getattr(p, name)):
            notes.append(f"{name}: config.ini changed, its {getattr(p, name)} wins over the saved {value}")
            continue
        setattr(settings, name, value)
    sea = persisted.get("season")
    sea = sea if isinstance(sea, dict) else {}
    sfm = _int_in(sea.get("soc_floating_max"), "soc_floating_max")
    soc, inc = sea.get("soc"), sea.get("increment")
    if sfm is not None:
        seas.sfm = sfm
    elif "soc_floating_max" in sea:
        notes.append("soc_floating_max invalid")
    if isinstance(soc, int) and not isinstance(soc, bool) and 0 <= soc <= 100 \
            and isinstance(inc, int) and not isinstance(inc, bool) and -100 <= inc <= 100:
        seas.soc, seas.increment = soc, inc
        state.season_known = True
    elif "soc" in sea or "increment" in sea:
        notes.append("SOC tracking invalid")
    learned = project_law.restore_learned(state, persisted.get("learned"))
    if learned:
        notes.append("learned response: " + learned)
    state.reasons.append("persisted state restored: " + (
        f"MaxFeedIn {settings.max_feed_in} W, PowerFeedInSoc {settings.power_feed_in_soc} %, ZeroPoint "
        f"{settings.zero_point} W, SocFloatingMax {seas.sfm} %, SOC {seas.soc} %")
        + (" (" + "; ".join(notes) + ")" if notes else ""))
    return state


def persistable(state: State) -> dict:
    """What survives a restart: the run-time settings, the seasonal SOC tracking and the project law's learned
    response per inverter (JSON-compatible)."""
    s, seas = state.settings, state.season
    return {
        "format": PERSIST_FORMAT,
        "settings": {"max_feed_in": s.max_feed_in, "power_feed_in_soc": s.power_feed_in_soc,
                     "zero_point": s.zero_point},
        "config": {"max_feed_in": s.config_max_feed_in, "power_feed_in_soc": s.config_power_feed_in_soc,
                   "zero_point": s.config_zero_point},
        "season": {"soc_floating_max": seas.sfm, "soc": seas.soc, "increment": seas.increment},
        "learned": project_law.learned(state),
    }


def persist_version(state: State) -> int:
    return state.persist_version


# ------------------------------------------------------------------ ingest

def _num(value) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        return None
    return value


def _inverter(state: State, serial: str, now: float, p: Params) -> Inverter:
    inv = state.inverters.get(serial)
    if inv is None:
        # a new inverter gets the minimum (published at once) until the law has grid and inverter data;
        # that command is in flight like any other
        start_pct = min(p.min_percent, state.known_cmd_pct.get(serial, p.min_percent))
        inv = Inverter(serial=serial, cmd_pct=start_pct, cmd_reason="new inverter: minimum until controlled",
                       max_power_w=state.known_max_w.get(serial), pending_pct=start_pct, pending_t=now,
                       cmd_t=now)
        state.inverters[serial] = inv
        state.order.append(serial)
        state.setpoint_dirty = True
    return inv


def _on_grid(state: State, body: dict, now: float, p: Params) -> None:
    t = _num(body.get("sample_t_mono"))
    power = _num(body.get("power_w"))
    if t is None or power is None:
        return
    if state.grid_t is not None and t < state.grid_t:
        return
    state.grid_w, state.grid_t, state.grid_meter_ok = power, t, True


def _on_balcony(state: State, body: dict, now: float, p: Params) -> None:
    t = _num(body.get("sample_t_mono"))
    power = _num(body.get("power_w"))
    state.balcony_seen = True
    if t is None or power is None or (state.balcony_t is not None and t < state.balcony_t):
        return
    # a plug-in system only produces; its meter's sign convention is unknown, so take the magnitude
    state.balcony_w, state.balcony_t, state.balcony_meter_ok = abs(power), t, True


def _on_meter_status(state: State, body: dict, now: float, p: Params) -> None:
    role, ok = body.get("role"), body.get("ok")
    if not isinstance(ok, bool):
        return
    if role == "grid":
        state.grid_meter_ok = ok
    elif role == "balcony":
        state.balcony_seen = True
        state.balcony_meter_ok = ok


def _on_inverter(state: State, body: dict, now: float, p: Params) -> None:
    serial = body.get("serial")
    t = _num(body.get("sample_t_mono"))
    if not isinstance(serial, str) or not serial or t is None:
        return
    inv = _inverter(state, serial, now, p)
    if inv.sample_t is not None and t < inv.sample_t:
        return
    newer = inv.sample_t is None or t > inv.sample_t
    inv.sample_t = t
    index = body.get("index")
    if isinstance(index, int) and not isinstance(index, bool):
        inv.index = index
    inv.name = body.get("name") or inv.name
    inv.reachable = body.get("reachable") is True
    inv.producing = body.get("producing") is True
    inv.ac_power_w = _num(body.get("ac_power_w"))
    inv.ac_voltage_v = _num(body.get("ac_voltage_v"))
    inv.dc_current_a = _num(body.get("dc_current_a"))
    inv.temperature_c = _num(body.get("temperature_c"))
    max_w = _num(body.get("max_power_w"))
    if max_w is not None and max_w > 0:
        if inv.max_power_w != max_w:
            state.setpoint_dirty = True
        inv.max_power_w = max_w
        state.known_max_w[serial] = max_w
    reported = _num(body.get("limit_pct"))
    inv.reported_pct = reported
    if reported is not None:
        if inv.pending_pct is not None and t > inv.pending_t \
                and abs(reported - max(inv.pending_pct, p.min_percent)) < READBACK_SAME_PCT:
            # in force without an ack (e.g. the writer found it already set)
            inv.applied_pct, inv.ack_t = inv.pending_pct, inv.pending_t
            inv.pending_pct = inv.pending_t = None
        elif inv.ack_t is None or t > inv.ack_t:
            inv.applied_pct = reported          # the DTU's read-back: what is in force now
    inv.rating_implausible = body.get("rating_plausible") is False
    power_state = body.get("power_state")
    if power_state in stopping.POWER_STATES:
        stopping.adopt(state, inv, power_state, now, p)
    protection.note_producing(inv, t)
    if newer:
        if t > state.last_dtu_sample_t:
            state.last_dtu_sample_t = t
        state.dtu_samples_in_window += 1


def _on_dtu_status(state: State, body: dict, now: float, p: Params) -> None:
    ok = body.get("ok")
    state.dtu_ok = ok if isinstance(ok, bool) else None
    can = body.get("can_control")
    state.dtu_can_control = can if isinstance(can, bool) else None
    state.dtu_status_t = now
    serials = body.get("serials")
    if ok is not True or not isinstance(serials, list):
        return
    wanted = [s for s in serials if isinstance(s, str) and s]
    if not wanted:
        return
    for i, serial in enumerate(wanted):
        _inverter(state, serial, now, p).index = i
    gone = [s for s in state.order if s not in wanted]
    for serial in gone:
        state.known_cmd_pct[serial] = state.inverters[serial].cmd_pct
        state.order.remove(serial)
        del state.inverters[serial]
        state.reasons.append(f"inverter {serial} no longer in the DTU inventory")
    if gone:
        state.setpoint_dirty = True


def _on_ack(state: State, body: dict, now: float, p: Params) -> None:
    command, outcome, serial = body.get("command"), body.get("outcome"), body.get("serial")
    if command == "limit":
        inv = state.inverters.get(serial) if isinstance(serial, str) else None
        if inv is None and isinstance(serial, str):       # the writer may normalise the case of serials
            inv = next((i for s, i in state.inverters.items() if s.lower() == serial.lower()), None)
        if inv is None:
            return
        serial = inv.serial
        sent = _num(body.get("limit_pct"))
        # the writer clamps to min_percent and rounds to 0.1 %
        matches = inv.pending_pct is not None and (
            sent is None or abs(sent - round(max(inv.pending_pct, p.min_percent), 1)) < PCT_SAME)
        if outcome == ACK_OK:
            value = sent if sent is not None else inv.pending_pct
            latency, sent_t = _num(body.get("latency_s")), _num(body.get("sent_t_mono"))
            effective_t = sent_t + latency if sent_t is not None and latency is not None else now
            effective_t = min(effective_t, now)
            if value is not None:
                inv.applied_pct = value
            inv.ack_t = effective_t
            inv.failures = 0
            if matches:
                inv.pending_pct = inv.pending_t = None
        else:
            inv.failures += 1
            state.limit_failures_recent += 1
            if outcome == "read_only":
                state.dtu_can_control = False
            if matches:
                # not applied: the limit in force is still the acknowledged one; the law will decide again
                state.reasons.append(f"{serial}: limit {inv.pending_pct:g} % {outcome}: still "
                                     f"{inv.applied_pct if inv.applied_pct is not None else '?'} %")
                inv.pending_pct = inv.pending_t = None
                # a failed raise falls back to the limit in force; a failed reduction stays wanted (the writer
                # retries it): the commanded limit never goes up because a command failed
                if inv.applied_pct is not None and inv.cmd_pct is not None and inv.applied_pct < inv.cmd_pct:
                    inv.cmd_pct = inv.applied_pct
                    inv.cmd_reason = f"last command {outcome}"
                    state.setpoint_dirty = True
    elif command in ("restart", "dtu_reboot", "power_on", "power_off"):
        state.reasons.append(f"{command} {serial or ''}: {outcome}".replace("  ", " "))


def _on_battery(state: State, body: dict, now: float, p: Params) -> None:
    bat = state.battery
    bat.present = body.get("present") is True
    bat.recv_t = now
    age = _num(body.get("age_s"))
    bat.value_t = now - age if age is not None else None
    bat.soc_pct = _num(body.get("soc_pct"))
    bat.voltage_v = _num(body.get("voltage_v"))
    bat.current_a = _num(body.get("current_a"))
    bat.ccl_a = _num(body.get("ccl_a"))
    bat.dcl_a = _num(body.get("dcl_a"))
    bat.temperature_c = _num(body.get("temperature_c"))
    if bat.present and bat.soc_pct is not None and 0 <= bat.soc_pct <= 100:
        before = (state.season.soc, state.season.increment, state.season.sfm)
        if not state.season_known:
            # first reading without saved tracking: start here (the seed started at 54 %, so its first
            # reading looked like a rise and the next fall like a peak)
            state.season.soc, state.season.increment = int(bat.soc_pct), 0
            state.season_known = True
        note = season.track_soc(state.season, bat.soc_pct)
        if note:
            state.reasons.append(note)
            state.settings_dirty = True
        if (state.season.soc, state.season.increment, state.season.sfm) != before:
            state.persist_version += 1


def _on_setting(state: State, body: dict, now: float, p: Params) -> None:
    request_id, name = body.get("request_id"), body.get("name")
    value, why = validate_setting(name, body.get("value"))
    if value is None:
        state.reasons.append(f"setting rejected: {why}")
    else:
        if name == "soc_floating_max":
            changed = state.season.sfm != value
            state.season.sfm = value
        else:
            changed = getattr(state.settings, name) != value
            setattr(state.settings, name, value)
        if changed:
            state.persist_version += 1
        state.reasons.append(f"setting {name} = {value} applied")
    if isinstance(request_id, str):
        if request_id in state.answers:
            state.answers.remove(request_id)
        state.answers.append(request_id)
        del state.answers[:-MAX_ANSWERS]
    state.settings_dirty = True


def _on_relay_state(state: State, body: dict, now: float, p: Params) -> None:
    ok, on, asked = body.get("ok"), body.get("on"), body.get("command_on")
    state.relay_confirmed = ok is True and on == asked


_HANDLERS = {
    "meter.grid": _on_grid,
    "meter.balcony": _on_balcony,
    "meter.status": _on_meter_status,
    "dtu.inverter": _on_inverter,
    "dtu.status": _on_dtu_status,
    "dtu.ack": _on_ack,
    "venus.battery": _on_battery,
    "venus.setting": _on_setting,
    "relay.state": _on_relay_state,
}


# ------------------------------------------------------------------ per-call figures

@dataclass(slots=True)
class Figures:
    grid_fresh: bool
    battery_ok: bool
    safe: bool
    balcony_active: bool
    balcony_readable: bool
    balcony_used_w: float
    budget_w: Optional[float]
    cap_w: float
    target_w: float
    target_why: str
    stale: list
    unsafe_why: str          # why only safe minimum limits: grid/battery stale, life signal off


def _figures(state: State, now: float, p: Params) -> Figures:
    s = state.settings
    # the sample's age decides (one failed poll of a 1 s meter must not drop every inverter to its minimum);
    # meter.status only colours the alarm
    grid_fresh = state.grid_t is not None and now - state.grid_t <= p.grid_stale_s
    bat = state.battery
    dcl_a = budget_mod.discharge_limit(bat.dcl_a, p.battery_fallback_dcl_a)
    battery_why = budget_mod.battery_unusable(bat, dcl_a, now, p)
    battery_ok = battery_why is None
    balcony_active = p.balcony_configured if p.balcony_configured is not None else state.balcony_seen
    balcony_readable = False
    if balcony_active:
        balcony_readable = (state.balcony_t is not None and now - state.balcony_t <= p.balcony_stale_s
                            and state.balcony_meter_ok is not False and state.balcony_w is not None)
        balcony_used = state.balcony_w if balcony_readable else float(p.balcony_fallback_w)
    else:
        balcony_used = 0.0
    budget = (budget_mod.feed_in_budget(s.max_feed_in, balcony_used, bat.voltage_v, dcl_a)
              if battery_ok else None)
    cap = budget if budget is not None else max(0.0, s.max_feed_in - balcony_used)
    sun = budget_mod.sun_shines(state.balcony_w, balcony_readable, p.sun_threshold_w)
    offset, why = budget_mod.target_offset(s.zero_point, bat.soc_pct if battery_ok else None,
                                           s.power_feed_in_soc, state.season.sfm, sun)
    stale = []
    if not grid_fresh:
        stale.append("grid")
    if not battery_ok:
        stale.append("battery")
    if state.dtu_ok is False or state.last_dtu_sample_t < now - p.dtu_stale_s:
        stale.append("dtu")
    if balcony_active and not balcony_readable:
        stale.append("balcony")
    unsafe = (["grid stale"] if not grid_fresh else []) + ([battery_why] if battery_why else [])
    if state.relay_wanted is False:
        unsafe.append("life signal off")
    return Figures(grid_fresh, battery_ok, not unsafe, balcony_active, balcony_readable,
                   balcony_used, budget, cap, -offset, why, stale, ", ".join(unsafe))


# ------------------------------------------------------------------ commands and safety

def _command(state: State, inv: Inverter, pct: float, now: float, reason: str) -> bool:
    """Set the commanded limit; True if it changed. A change from the limit in force is in flight until acked."""
    if inv.cmd_pct == pct:
        return False
    inv.cmd_pct = pct
    inv.cmd_reason = reason
    inv.cmd_t = now
    if inv.applied_pct is None or abs(pct - inv.applied_pct) >= PCT_SAME:
        inv.pending_pct, inv.pending_t = pct, now
    else:
        inv.pending_pct = inv.pending_t = None
    state.setpoint_dirty = True
    return True


def _hold_ineligible(state: State, now: float, p: Params) -> None:
    """Inverters that cannot be controlled (no fresh data, unreachable, off grid, not producing, too hot) sit
    at their minimum (before the law, so that it counts them at that)."""
    for serial in state.order:
        inv = state.inverters[serial]
        why = protection.ineligible_reason(inv, now, p)
        if why is not None:
            safe = p.min_percent if inv.cmd_pct is None else min(inv.cmd_pct, p.min_percent)
            if _command(state, inv, safe, now, f"minimum: {why}"):
                state.reasons.append(f"{serial}: minimum {safe:g} % ({why})")


def _safety(state: State, now: float, p: Params, fig: Figures) -> None:
    if not fig.safe:
        for serial in state.order:
            inv = state.inverters[serial]
            safe = p.min_percent if inv.cmd_pct is None else min(inv.cmd_pct, p.min_percent)
            if _command(state, inv, safe, now, "safe minimum: " + fig.unsafe_why):
                state.reasons.append(f"{serial}: safe minimum {safe:g} % ({fig.unsafe_why})")
    else:
        _hold_ineligible(state, now, p)
    stopping.update(state, now, p, fig.cap_w)
    invs = [state.inverters[s] for s in state.order if not state.inverters[s].stopped]
    for inv in invs:
        if inv.cmd_pct is not None and inv.cmd_pct < p.min_percent and not stopping.may_switch_off(inv, p):
            _command(state, inv, p.min_percent, now, "minimum: may not be switched off ([inverter] section)")
    max_ws = [inv.max_w() or p.unknown_max_w for inv in invs]
    # as on the wire: the writer raises every limit to min_percent (an inverter not commanded yet counts so too)
    wire = [max(inv.cmd_pct if inv.cmd_pct is not None else p.min_percent, p.min_percent) for inv in invs]
    total = sum(pct * m / 100.0 for pct, m in zip(wire, max_ws))
    # stopped inverters whose stop is not confirmed yet count at their last applied limit
    cap_w = fig.cap_w - sum(stopping.unconfirmed_w(inv, p) for inv in state.inverters.values())
    if total <= cap_w + 1e-6:
        return
    quantum = p.steps_percent if p.law == "seed" else p.quantum_pct
    cut = distribution.cap_cuts(wire, max_ws, cap_w, quantum, floor_pct=p.min_percent)
    for inv, pct in zip(invs, cut):
        if not stopping.may_switch_off(inv, p):
            pct = max(pct, p.min_percent)       # held at its minimum, never below (it is never stopped)
        if inv.cmd_pct is not None and pct < inv.cmd_pct:
            _command(state, inv, pct, now, f"total cap {fig.cap_w:.0f} W")
    state.reasons.append(f"total {total:.0f} W above the cap {cap_w:.0f} W: limits cut")


def _tick(state: State, now: float, p: Params, fig: Figures) -> None:
    """Every seed_loop_interval_s, both laws: recovery requests; the project law's export counter."""
    protection.recovery_requests(state, now, p)
    if p.law == "project" and fig.grid_fresh:
        wants_more = state.grid_w - fig.target_w > p.raise_deadband_w
        for inv in state.inverters.values():
            note = protection.update_temperature(inv, wants_more, p)
            if note:
                state.reasons.append(note)
        at_floor = all(inv.cmd_pct is None or inv.cmd_pct <= p.min_percent or inv.max_w() <= 0
                       for inv in state.inverters.values())
        if state.grid_w - fig.target_w < -p.negative_grid_w and at_floor:
            state.negative_grid_counter = min(254, state.negative_grid_counter + 1)
        else:
            state.negative_grid_counter = 0


# ------------------------------------------------------------------ outputs

def _limits(state: State, p: Params) -> list:
    out = []
    for serial in state.order:
        inv = state.inverters[serial]
        pct = inv.cmd_pct if inv.cmd_pct is not None else p.min_percent
        max_w = inv.max_w()
        out.append({"serial": serial, "limit_pct": pct,
                    "limit_w": round(pct * max_w / 100.0, 1) if max_w > 0 else None,
                    "reason": inv.cmd_reason, "on": not inv.stopped})
    return out


def _alarms(state: State, now: float, p: Params, fig: Figures) -> dict:
    inverter = temperature = 0
    for inv in state.inverters.values():
        if inv.temp_alarm:
            temperature = 2
        if protection.fresh(inv, now, p) and not inv.stopped:
            if not inv.reachable or (inv.on_grid() and not protection.producing_or_grace(inv, now, p)):
                inverter = 2
        if inv.failures and inverter < 1:
            inverter = 1
        if inv.power_state == "stop_failed" or inv.rating_implausible:
            inverter = 2        # a stop the writer could not confirm; a rating the DTU got wrong
    dtu = 2 if "dtu" in fig.stale else (1 if state.dtu_can_control is False else 0)
    return {"grid_meter": 2 if "grid" in fig.stale else (1 if state.grid_meter_ok is False else 0),
            "balcony_meter": 2 if "balcony" in fig.stale else 0,
            "dtu": dtu, "inverter": inverter, "temperature": temperature,
            "battery": 2 if "battery" in fig.stale else 0,
            "controller": 1 if state.relay_confirmed is False else 0}


def _status(state: State, now: float, p: Params, fig: Figures, limits: list) -> dict:
    bat = state.battery
    total = 0.0
    for inv in state.inverters.values():
        if inv.cmd_pct is not None:
            total += inv.cmd_pct * inv.max_w() / 100.0
    reasons = state.reasons[-MAX_REASONS:]
    state.reasons = []
    head = f"{p.law} law; target {fig.target_w:.0f} W ({fig.target_why})"
    if p.law == "project":
        head += f"; waiting for {state.project.wait}"
    filtered = state.seed.filtered_w if p.law == "seed" else state.grid_w
    return {
        "law": p.law,
        "grid_w": state.grid_w,
        "grid_filtered_w": filtered,
        "target_w": fig.target_w,
        "budget_w": fig.budget_w,
        "balcony_w": fig.balcony_used_w,
        "total_limit_w": round(total, 1),
        "soc_pct": bat.soc_pct if fig.battery_ok else None,
        "feed_in_min_soc_pct": state.feed_in_min_soc,
        "soc_floating_max_pct": state.season.sfm,
        "relay_wanted": state.relay_wanted,
        "negative_grid_counter": state.negative_grid_counter,
        "stale": list(fig.stale),
        "setpoints": limits,
        "reasons": [head] + reasons,
        "alarms": _alarms(state, now, p, fig),
    }


def _feed_in_min_soc(state: State) -> int:
    bat = state.battery
    draw = 0.0
    for inv in state.inverters.values():
        if inv.dc_current_a is not None:
            draw += inv.dc_current_a
    return season.feed_in_min_soc(state.season.sfm, bat.current_a if bat.present else None, draw,
                                  bat.dcl_a if bat.present else None)


# ------------------------------------------------------------------ the step

REPEAT_SLACK_S = 0.1      # a ctrl.setpoint repeat goes out up to this much before or after its due time
HEARTBEAT_SLACK_S = 1.0   # ctrl.status and ctrl.settings heartbeats wait up to this for a step that runs anyway


def step(state: State, events, now: float, params: Params):
    p = params
    out = []
    if state.start_t is None:
        state.start_t = now
        state.seed.next_loop_t = now + p.seed_loop_interval_s
        state.next_negative_tick_t = now + p.seed_loop_interval_s
        state.next_relay_t = now + p.relay_first_decision_s
        state.next_setpoint_t = state.next_status_t = state.next_settings_t = now
    for topic, body in events:
        handler = _HANDLERS.get(topic)
        if handler is not None and isinstance(body, dict):
            handler(state, plausible.clean(topic, body, now), now, p)

    fig = _figures(state, now, p)
    due = now >= state.next_relay_t
    if due or (state.relay_wanted is False and now >= state.next_relay_retry_t):
        # each interval the seed's decision; while switched off, also every loop: back on as soon as the
        # conditions hold again (with a SOC margin), instead of waiting up to a whole interval
        state.feed_in_min_soc = _feed_in_min_soc(state)
        on, why = lifesignal.relay_decision(state.dtu_samples_in_window,
                                            state.battery.soc_pct if fig.battery_ok else None,
                                            state.feed_in_min_soc, state.negative_grid_counter,
                                            p.negative_grid_loops, fig.stale,
                                            soc_margin_pct=0.0 if due else lifesignal.EARLY_ON_SOC_MARGIN_PCT)
        state.next_relay_retry_t = now + p.seed_loop_interval_s
        if due or on:
            state.next_relay_t = now + p.relay_interval_s
            state.dtu_samples_in_window = 0
            state.seed.loop_index = 0
            if state.relay_wanted != on:
                state.relay_wanted = on
                fig = _figures(state, now, p)      # off: safe minimum at once; on: the law may steer
            if not due:
                why = "again " + why
            state.reasons.append("life signal: " + why)
            out.append(("ctrl.relay", {"on": on, "reason": why}))
            state.status_due = True

    command = lambda inv, pct, t, why: _command(state, inv, pct, t, why)  # noqa: E731
    if fig.safe and state.order:
        _hold_ineligible(state, now, p)
    if p.law == "seed":
        if now >= state.seed.next_loop_t:
            state.seed.next_loop_t = max(state.seed.next_loop_t + p.seed_loop_interval_s, now)
            if seed_law.run(state, now, p, fig, command) is not False and state.setpoint_dirty:
                state.decision_grid_t = state.grid_t
            state.status_due = True
    elif fig.safe:
        if project_law.run(state, now, p, fig, command) and state.setpoint_dirty:
            state.status_due = True
    else:
        state.project.wait = "safe inputs (now: " + fig.unsafe_why + ")"
    if now >= state.next_negative_tick_t:
        state.next_negative_tick_t = max(state.next_negative_tick_t + p.seed_loop_interval_s, now)
        _tick(state, now, p, fig)
    _safety(state, now, p, fig)
    state.target_w, state.budget_w, state.balcony_used_w, state.stale = \
        fig.target_w, fig.budget_w, fig.balcony_used_w, fig.stale

    limits = None
    # A repeat rides on a step that runs anyway (a message, mostly the meter's sample) when one comes within
    # REPEAT_SLACK_S of the due time; else next_wake_t wakes for it REPEAT_SLACK_S late. One wake-up a second
    # instead of two: the repeat's phase otherwise drifts against the meter's.
    repeat_due = state.next_setpoint_t is not None and (
        now >= state.next_setpoint_t + REPEAT_SLACK_S or (events and now >= state.next_setpoint_t - REPEAT_SLACK_S))
    if state.order and (state.setpoint_dirty or repeat_due):
        limits = _limits(state, p)
        body = {"limits": limits, "reason": state.reasons[-1] if state.reasons else "repeat"}
        if state.decision_grid_t is not None:
            body["grid_sample_t_mono"] = state.decision_grid_t
        if fig.cap_w is not None and math.isfinite(fig.cap_w):
            body["cap_w"] = round(max(0.0, fig.cap_w), 1)
        if state.restart_requests:
            body["restart"] = state.restart_requests
            state.restart_requests = []
        if state.dtu_reboot_request:
            body["dtu_reboot"] = True
            state.dtu_reboot_request = False
        out.append(("ctrl.setpoint", body))
        state.setpoint_dirty = False
        state.next_setpoint_t = now + p.setpoint_repeat_s
    # ctrl.status: on a decision (status_due), when what it tells of the inputs' health changes, else as a
    # heartbeat every status_interval_s (the figures in it move with every sample and are no news on their own)
    status_key = (tuple(fig.stale), tuple(_alarms(state, now, p, fig).items()), state.relay_wanted, fig.safe)
    if state.status_due or state.settings_dirty or now >= state.next_status_t or status_key != state.status_key:
        state.feed_in_min_soc = _feed_in_min_soc(state)
        out.append(("ctrl.status", _status(state, now, p, fig, limits if limits is not None else _limits(state, p))))
        state.status_key = status_key
        state.status_due = False
        state.next_status_t = now + (p.seed_loop_interval_s if p.law == "seed" else p.status_interval_s)
    if state.settings_dirty or now >= state.next_settings_t:
        state.feed_in_min_soc = _feed_in_min_soc(state)
        s = state.settings
        out.append(("ctrl.settings", {
            "max_feed_in": s.max_feed_in, "power_feed_in_soc": s.power_feed_in_soc,
            "soc_floating_max": state.season.sfm, "zero_point": s.zero_point,
            "feed_in_min_soc": state.feed_in_min_soc, "answers": list(state.answers)}))
        state.settings_dirty = False
        state.next_settings_t = now + p.settings_interval_s
    return state, out


STALE_WAKE_AFTER_S = 0.001


def next_wake_t(state: State, params: Params, now: float) -> float:
    """The earliest time after `now` at which `step` has time-driven work to do without a new message: a
    periodic output, the life signal, a law's loop, or an input turning stale (so the safe reaction is not
    delayed by a tick). Deadlines already passed are not counted (a stale input stays stale). The shell waits
    for a message until then, and at most a second: anything not listed here is re-evaluated then."""
    p = params
    if state.start_t is None:
        return now
    # the heartbeats (every 5 s) go out with the first step at or after their time; a wake-up of their own only
    # when no message came for HEARTBEAT_SLACK_S (the meter's samples come every second)
    deadlines = [state.next_relay_t, state.next_negative_tick_t, state.next_setpoint_t + REPEAT_SLACK_S,
                 state.next_status_t + HEARTBEAT_SLACK_S, state.next_settings_t + HEARTBEAT_SLACK_S]
    if state.relay_wanted is False:
        deadlines.append(state.next_relay_retry_t)
    if p.law == "seed":
        deadlines.append(state.seed.next_loop_t)
    # an input is stale once its age is strictly above the limit: wake just after that
    if state.grid_t is not None:
        deadlines.append(state.grid_t + p.grid_stale_s + STALE_WAKE_AFTER_S)
    if state.battery.recv_t is not None:
        deadlines.append(state.battery.recv_t + p.battery_stale_s + STALE_WAKE_AFTER_S)
    if state.battery.value_t is not None:
        deadlines.append(state.battery.value_t + p.battery_max_age_s + STALE_WAKE_AFTER_S)
    if state.balcony_t is not None:
        deadlines.append(state.balcony_t + p.balcony_stale_s + STALE_WAKE_AFTER_S)
    return min((t for t in deadlines if t > now), default=float("inf"))
