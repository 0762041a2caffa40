"""Stop an inverter when the cap leaves less than its minimum output, and start it again when the cap allows.

A limit cannot go below `min_percent` on the wire (the DTU writer clamps to it; Hoymiles misbehave near 0 %), so
with a cap below the running inverters' minimum outputs (MaxFeedIn 0, the balcony system using up the legal cap,
a battery DCL of 0) the only way to keep the total commanded output within the cap is to stop inverters
(`"on": false` in ctrl.setpoint; the writer sends /api/power/config power false). The last in the rotation order
is stopped first. A stopped inverter counts 0 W against the cap, is held at its minimum limit, and is neither
"not producing" nor a restart candidate.

Inputs: the cap (W), the order, each inverter's max power. Outputs: `Inverter.stopped`, reasons, setpoint_dirty.
"""
from __future__ import annotations

from services.controller.model import Inverter, State
from services.controller.params import Params

START_MARGIN_W = 10.0    # start only when the cap exceeds the running minimums plus this inverter's by this much


def min_output_w(inv: Inverter, p: Params) -> float:
    """What the inverter delivers at least while it runs (an unknown size counts as unknown_max_w, as in the
    cap check)."""
    return p.min_percent * (inv.max_w() or p.unknown_max_w) / 100.0


def update(state: State, now: float, p: Params, cap_w: float) -> None:
    running = [state.inverters[s] for s in state.order if not state.inverters[s].stopped]
    need_w = sum(min_output_w(inv, p) for inv in running)
    while running and need_w > cap_w + 1e-6:
        inv = running.pop()
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
