"""Stop an inverter when the cap leaves less than its minimum output, and start it again when the cap allows.

A limit cannot go below `min_percent` on the wire (the DTU writer clamps to it; Hoymiles misbehave near 0 %), so
with a cap below the running inverters' minimum outputs (MaxFeedIn 0, the balcony system using up the legal cap,
a battery DCL of 0) the only way to keep the total commanded output within the cap is to stop inverters
(`"on": false` in ctrl.setpoint; the writer sends /api/power/config power false). The last in the rotation order
is stopped first. A stopped inverter is held at its minimum limit, is neither "not producing" nor a restart
candidate, and counts 0 W against the cap only once the DTU writer confirmed the stop (power_state "off": a sample
after the power-off ack showed ~0 W); until then it counts at its last applied limit (`unconfirmed_w`), so a
rejected or ignored stop leaves no hole in the cap (the writer sends the minimum limit first, so this is normally
its minimum output for the few seconds until the confirmation: the documented transient).

An inverter with enable_switch_off = false ([inverter.<id>]) is never stopped: it stays at its minimum limit and
its minimum output counts; the switchable ones are stopped instead. The stopped set is not persisted: a restarted
controller takes it from the first power_state each inverter's dtu.inverter carries (`adopt`).

Inputs: the cap (W), the order, each inverter's max power. Outputs: `Inverter.stopped`, reasons, setpoint_dirty.
"""
from __future__ import annotations

from common.config import per_inverter
from services.controller.model import Inverter, State
from services.controller.params import Params

START_MARGIN_W = 10.0    # start only when the cap exceeds the running minimums plus this inverter's by this much
STOPPED_STATES = ("off", "stopping", "stop_failed")
POWER_STATES = ("unknown", "on") + STOPPED_STATES       # dtu.inverter power_state (the DTU writer's view)


def may_switch_off(inv: Inverter, p: Params) -> bool:
    return per_inverter(p.switch_off, inv.serial, inv.index, True)


def unconfirmed_w(inv: Inverter, p: Params) -> float:
    """What a stopped inverter may still deliver: 0 once its stop is confirmed, else its last applied limit (at
    least the minimum, as on the wire; an unknown size counts as unknown_max_w)."""
    if not inv.stopped or inv.power_state == "off":
        return 0.0
    return max(inv.old_pct(p.min_percent), p.min_percent) * (inv.max_w() or p.unknown_max_w) / 100.0


def adopt(state: State, inv: Inverter, power_state: str, now: float, p: Params) -> None:
    """The first power_state of an inverter: a controller that restarted keeps a stopped inverter stopped (and
    counted as in `unconfirmed_w`) instead of assuming it runs; later ones only inform the cap accounting. One
    that may not be switched off is never taken as stopped (it is started: on true)."""
    inv.power_state = power_state
    if inv.power_seen:
        return
    inv.power_seen = True
    if power_state in STOPPED_STATES and not inv.stopped and may_switch_off(inv, p):
        inv.stopped, inv.stopped_t, inv.not_producing_since = True, now, None
        state.setpoint_dirty = True
        state.reasons.append(f"{inv.serial}: stopped (as the DTU writer reports: {power_state})")


def min_output_w(inv: Inverter, p: Params) -> float:
    """What the inverter delivers at least while it runs (an unknown size counts as unknown_max_w, as in the
    cap check)."""
    return p.min_percent * (inv.max_w() or p.unknown_max_w) / 100.0


def update(state: State, now: float, p: Params, cap_w: float) -> None:
    running = [state.inverters[s] for s in state.order if not state.inverters[s].stopped]
    need_w = sum(min_output_w(inv, p) for inv in running)
    cap_w -= sum(unconfirmed_w(inv, p) for inv in state.inverters.values())
    switchable = [inv for inv in running if may_switch_off(inv, p)]
    while switchable and need_w > cap_w + 1e-6:
        inv = switchable.pop()
        need_w -= min_output_w(inv, p)
        inv.stopped, inv.stopped_t, inv.not_producing_since = True, now, None
        state.setpoint_dirty = True
        state.reasons.append(f"{inv.serial}: stopped: the cap {cap_w:.0f} W is below the minimum output of the "
                             f"running inverters ({need_w + min_output_w(inv, p):.0f} W at {p.min_percent:g} %)")
    for serial in state.order:
        inv = state.inverters[serial]
        # p.stop_hold_s: start commands are not free, and a cap hovering around the minimum must not toggle it
        if not inv.stopped or now - inv.stopped_t < p.stop_hold_s:
            continue
        if need_w + min_output_w(inv, p) + START_MARGIN_W <= cap_w:
            need_w += min_output_w(inv, p)
            inv.stopped, inv.not_producing_since = False, None
            state.setpoint_dirty = True
            state.reasons.append(f"{serial}: started again: the cap {cap_w:.0f} W allows its minimum output")
