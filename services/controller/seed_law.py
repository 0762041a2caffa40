"""The seed law (hkaest/dbus-opendtu-DC-load 1f875b0, docs/original-project.md §4.1-4.7), every seed_loop_interval_s,
without the seed's defects: the limit in force comes from acknowledgements (a failed command is not taken as
applied), the inverters come from the DTU's inventory, the budget counts every inverter in the same loop."""
from __future__ import annotations

from services.controller import distribution, filters, protection
from services.controller.model import State
from services.controller.params import Params


def run(state: State, now: float, p: Params, fig, command) -> None:
    law = state.seed
    if fig.grid_fresh:
        law.filtered_w, branch = filters.consumption_filter(
            law.filtered_w, state.grid_w, p.accuracy, p.feed_in_filter_factor,
            p.feed_in_at_negative_watt_difference, p.consume_filter_factor)
    else:
        law.filtered_w, branch = filters.GRID_FAILURE_W, "grid unreadable: assume export"
    fresh = state.last_dtu_sample_t > law.last_dtu_t
    law.last_dtu_t = state.last_dtu_sample_t
    if not fresh:
        state.reasons.append("seed: no fresh DTU data: limits unchanged")
        return
    offset_w = -fig.target_w
    g_w = law.filtered_w + offset_w
    if not fig.safe:
        state.reasons.append(f"seed: only safe limits ({fig.unsafe_why})")
        _count_export(state, g_w, p)          # the inverters sit at their minimum: g is what remains
        return
    if law.loop_index == 0 and abs(g_w) <= p.accuracy and len(state.order) > 1:
        state.order.append(state.order.pop(0))
        state.reasons.append(f"seed: rotation, {state.order[0]} now first")
    law.loop_index += 1

    b_w = fig.budget_w
    order = state.order
    changed = None
    for idx, serial in enumerate(order):
        if abs(g_w) <= p.accuracy:
            break
        inv = state.inverters[serial]
        note = protection.update_temperature(inv, g_w > 0, p)
        if note:
            state.reasons.append(note)
        max_w = inv.max_w()
        if max_w <= 0:
            continue
        why_min = protection.ineligible_reason(inv, now, p)
        later_w = 0.0
        for other in order[idx + 1:]:
            later_w += state.inverters[other].cmd_w()
        old = inv.old_pct(p.min_percent)
        new, g_next, b_next = distribution.seed_step(old, g_w, b_w - later_w, max_w, p.steps_percent,
                                                     p.min_percent, p.max_percent, why_min is not None)
        b_next += later_w
        if new != old or new != inv.cmd_pct:
            command(inv, new, now, "seed" + (f" minimum: {why_min}" if why_min else ""))
        if new != old:
            changed = (inv, old, new, g_w)
            g_w = g_next
            break
        g_w, b_w = g_next, b_next
    if changed:
        inv, old, new, g_before = changed
        law.filtered_w = int(g_w - offset_w)
        state.reasons.append(
            f"seed: P {law.filtered_w:.0f} W ({branch}), set value {g_before:.0f} W, budget {fig.budget_w:.0f} W: "
            f"{inv.serial} {old:g} -> {new:g} %")
    else:
        state.reasons.append(f"seed: set value {g_w:.0f} W ({branch}): no change")
    _count_export(state, g_w, p)


def _count_export(state: State, g_w: float, p: Params) -> None:
    """NegativeGridCounter: consecutive loops with more than negative_grid_w of export left over."""
    if g_w < -p.negative_grid_w:
        state.negative_grid_counter = min(254, state.negative_grid_counter + 1)
    else:
        state.negative_grid_counter = 0
