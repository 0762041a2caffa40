"""The project law: deadbeat "reset to measurement", gated like OpenDTU-OnBattery, spread over every inverter.

One step, when allowed:  total = sum(reported AC output) + grid - target   (= load - target),
clamped to [0, cap] and spread as the same percentage over every controllable inverter.

Gate (no commands stacked in the inverters' dead time):
  * no limit command in flight (sent, not yet acknowledged by dtu.ack or seen in the DTU read-back);
  * raise / small corrections: every controllable inverter has reported data taken after its last ack, and the
    grid sample is newer than that data (+ meter_guard_s);
  * fast reduction: a grid sample below fast_reduce_below_w (export) acts as soon as nothing is in flight and
    fast_reduce_settle_s passed since the last ack; the output of an inverter whose data predates its ack is
    taken as min(reported, acknowledged limit), i.e. the reduction already commanded counts as done.
Asymmetric gains and deadbands (raise_gain, reduce_gain, raise_deadband_w, reduce_deadband_w).
"""
from __future__ import annotations

from services.controller import distribution, protection
from services.controller.model import State
from services.controller.params import Params


def _say(state: State, line: str) -> None:
    if not state.reasons or state.reasons[-1] != line:
        state.reasons.append(line)


def run(state: State, now: float, p: Params, fig, command) -> bool:
    """One evaluation; True when a decision (a step or a deliberate no-change) was taken on a new sample."""
    law = state.project
    grid_t = state.grid_t
    if grid_t is None or grid_t <= law.used_grid_t:
        return False
    controllable = []
    others = []
    for serial in state.order:
        inv = state.inverters[serial]
        (others if protection.ineligible_reason(inv, now, p) else controllable).append(inv)
    for inv in controllable:
        if inv.pending_pct is not None:
            law.wait = f"ack of {inv.serial} -> {inv.pending_pct:g} %"
            return False
    grid_w = state.grid_w
    target_w = fig.target_w
    error_w = grid_w - target_w
    fast = grid_w < p.fast_reduce_below_w and error_w < -p.reduce_deadband_w
    if fast:
        if grid_t <= law.last_ack_t + p.fast_reduce_settle_s:
            law.wait = f"export: meter sample {p.fast_reduce_settle_s:g} s after the last ack"
            return False
    else:
        stats_t = float("-inf")
        for inv in controllable:
            if inv.ack_t is not None and inv.sample_t <= inv.ack_t:
                law.wait = f"data of {inv.serial} after its ack"
                return False
            stats_t = max(stats_t, inv.sample_t)
        if controllable and grid_t <= stats_t + p.meter_guard_s:
            law.wait = "a meter sample newer than the inverter data"
            return False
    law.used_grid_t = grid_t
    law.wait = "next meter sample"
    if -p.reduce_deadband_w <= error_w <= p.raise_deadband_w:
        _say(state, "project: grid within deadband, no change")
        if now >= law.next_rotate_t and len(state.order) > 1:
            # equal wear: at low power the first inverters carry the load (active_min_pct); the new order
            # takes effect with the next step that is needed anyway
            if law.next_rotate_t > float("-inf"):
                state.order.append(state.order.pop(0))
                state.reasons.append(f"project: rotation, {state.order[0]} now first")
            law.next_rotate_t = now + p.rotate_interval_s
        return True
    if not controllable:
        _say(state, "project: no controllable inverter: " + ", ".join(
            f"{inv.serial} {protection.ineligible_reason(inv, now, p)}" for inv in others) if others
            else "project: no inverter known yet")
        return True

    output_w = 0.0
    for inv in controllable:
        reported = inv.ac_power_w if inv.ac_power_w is not None else inv.cmd_w()
        if inv.ack_t is not None and inv.sample_t <= inv.ack_t and inv.applied_pct is not None:
            # data older than the last ack (fast reduction): count the acknowledged limit as reached
            # (capping the estimate always made bench day worse: 135/256 Wh instead of 142/208 Wh)
            reported = min(reported, inv.applied_pct * inv.max_w() / 100.0)
        output_w += reported
    others_now_w = 0.0   # what the other inverters deliver now (part of the load estimate)
    fixed_w = 0.0        # what they will deliver (at their minimum, or nothing)
    fixed_cmd_w = 0.0
    for inv in others:
        fixed_cmd_w += inv.cmd_w()
        if protection.fresh(inv, now, p) and inv.ac_power_w is not None:
            others_now_w += inv.ac_power_w
            if inv.reachable and inv.on_grid() and inv.producing:
                fixed_w += min(inv.ac_power_w, inv.cmd_w())
    gain = p.raise_gain if error_w > 0 else p.reduce_gain
    wanted_w = output_w + others_now_w + gain * error_w
    cap_w = max(0.0, fig.cap_w - fixed_cmd_w)
    total_w = min(max(wanted_w - fixed_w, 0.0), cap_w)
    if error_w < 0:
        # a reduction never raises the commanded total (the inverters may still be ramping down to it)
        total_w = min(total_w, sum(inv.cmd_w() for inv in controllable))
    max_ws = [inv.max_w() for inv in controllable]
    pcts = distribution.spread(total_w, max_ws, p.quantum_pct, p.min_percent, p.max_percent, p.active_min_pct)
    pcts = distribution.cap_cuts(pcts, max_ws, cap_w, p.quantum_pct)
    kind = "fast reduce" if fast else ("raise" if error_w > 0 else "reduce")
    changes = []
    for inv, pct in zip(controllable, pcts):
        old = inv.cmd_pct
        if command(inv, pct, now, f"project {kind}"):
            changes.append(f"{inv.serial} {old if old is not None else '-'}->{pct:g} %")
    state.reasons.append(
        f"project {kind}: grid {grid_w:.0f} W, target {target_w:.0f} W, output {output_w:.0f} W -> total "
        f"{total_w:.0f} W (cap {cap_w:.0f} W): " + (", ".join(changes) if changes else "limits unchanged"))
    return True
