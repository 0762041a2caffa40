"""The project law: predictive "reset to measurement" on every meter sample, spread over every inverter.

On each new grid sample (sample time t):

    u_i(t) = reported_i + model_i(t) - model_i(t_report_i)       (response_model: ack -> dead time -> lag)
    load   = grid(t) + sum u_i + what the uncontrollable inverters deliver
    load  -> smoothed while it moves less than load_filter_band_w (filters.band_smooth), else taken at once
           + what periodic pulse trains (hob, oven) will add or remove dead time + pulse_lead_s ahead (pulses.py)
    total  = clamp(load - target, 0, cap)

spread as the same percentage over the controllable inverters (distribution.spread, active_min_pct, cap_cuts).
A new setpoint only when the total moves by more than raise_deadband_w up or reduce_deadband_w down. Commands are
not gated on acks: the model counts each acknowledged limit from its ack plus the learned dead time, so nothing is
stacked blindly; a failed command never reaches the model (only acks ok and the DTU's read-back do).
An inverter commanded less than min_command_interval_s ago keeps its limit until the spacing has passed
(real Hoymiles hang when commanded too fast); the next meter sample decides again.
"""
from __future__ import annotations

from services.controller import distribution, filters, protection, pulses, stopping
from services.controller.model import Inverter, State
from services.controller.params import Params
from services.controller.response_model import DeadTimeBank, valid_learned

LEARNED_SAVE_S = 600.0       # s, the learned response goes to the state file at most this often
MAX_LEARNED = 16             # inverters (the DTU's limit)
ACTIVE_HYSTERESIS = 0.25     # share beyond the point where one inverter more or less is active (spread)
PULSE_RAMP_S = 1.5           # s, after the dead time until most of a step is delivered (pulse lead)
NOISE_WEIGHT = 0.02          # EWMA weight of one sample's deviation (noise estimate)
NOISE_CLIP_W = 60.0          # a larger deviation (a load step) counts this much
NOISE_SIGMA_PER_MEAN_ABS = 1.25    # sigma of a normal distribution / its mean absolute deviation
NOISE_BAND_SIGMAS = 3.0      # load filter band at least this many sigma
NOISE_DEADBAND_SIGMAS = 1.0  # raise deadband at least this many sigma (reduce: twice that)


def _say(state: State, line: str) -> None:
    if not state.reasons or state.reasons[-1] != line:
        state.reasons.append(line)


def _bank(state: State, inv: Inverter, now: float, p: Params) -> DeadTimeBank:
    """The inverter's output model, brought up to date with its acks and reports."""
    law = state.project
    bank = law.banks.get(inv.serial)
    if bank is None:
        u0 = inv.ac_power_w if inv.ac_power_w is not None else inv.cmd_w()
        t0 = (inv.sample_t if inv.sample_t is not None else now) - 1.0
        start = law.learned.get(inv.serial) or {}
        bank = DeadTimeBank(p.tau_up_s, p.tau_down_s, t0, u0, start.get("dead_time_s", p.dead_time_initial_s),
                            start.get("ack_delay_s", p.ack_delay_initial_s), start.get("ramp_w_per_s", 0.0))
        bank.last_ack_t = inv.ack_t
        law.banks[inv.serial] = bank
    if inv.ack_t is not None and inv.ack_t != bank.last_ack_t and inv.applied_pct is not None:
        delay = inv.ack_t - inv.cmd_t if inv.cmd_t is not None and inv.ack_t > inv.cmd_t else None
        bank.on_ack(inv.ack_t, inv.applied_pct * inv.max_w() / 100.0, delay)
    if inv.sample_t is not None and inv.ac_power_w is not None and (
            bank.last_report is None or inv.sample_t > bank.last_report[0]):
        before = (bank.dead_time_s, bank.ramp_w_per_s)
        if bank.on_report(inv.sample_t, inv.ac_power_w):
            state.reasons.append(f"project: response of {inv.serial} now estimated: dead time {bank.dead_time_s:g} s"
                                 f", ramp {_ramp(bank.ramp_w_per_s)} (was {before[0]:g} s, {_ramp(before[1])})")
    return bank


def _ramp(ramp_w_per_s: float) -> str:
    return f"{ramp_w_per_s:g} W/s" if ramp_w_per_s > 0 else "lag only"


def _note_learned(state: State, now: float) -> None:
    """Copy what the banks learned into the persisted part, at most every LEARNED_SAVE_S (the state file lives
    on flash) and only when a dead time changed or an ack delay moved by more than 0.5 s."""
    law = state.project
    if now - law.learned_t < LEARNED_SAVE_S:
        return
    law.learned_t = now
    changed = False
    for serial, bank in law.banks.items():
        new, old = bank.learned(), law.learned.get(serial)
        if old is None or old["dead_time_s"] != new["dead_time_s"] or old.get("ramp_w_per_s") != new["ramp_w_per_s"] \
                or abs(old["ack_delay_s"] - new["ack_delay_s"]) > 0.5:
            law.learned[serial] = new
            changed = True
    if changed:
        state.persist_version += 1


def learned(state: State) -> dict:
    """The persisted part: serial -> {"dead_time_s", "ack_delay_s", "ramp_w_per_s"}."""
    return {serial: dict(values) for serial, values in state.project.learned.items()}


def restore_learned(state: State, data) -> str:
    """Take the learned state from the state file (invalid entries are dropped); a note for the status."""
    if not isinstance(data, dict):
        return "" if data is None else "learned response invalid"
    kept = {serial: v for serial, v in ((s, valid_learned(v)) for s, v in list(data.items())[:MAX_LEARNED])
            if isinstance(serial, str) and v is not None}
    state.project.learned = kept
    dropped = len(data) - len(kept)
    return ", ".join(f"{s} dead time {v['dead_time_s']:g} s, ramp {_ramp(v['ramp_w_per_s'])}, ack "
                     f"{v['ack_delay_s']:g} s" for s, v in kept.items()) \
        + (f" ({dropped} invalid dropped)" if dropped else "")


def _spread_sticky(total_w: float, max_ws: list, now_active: int, p: Params) -> list:
    """distribution.spread, with hysteresis on how many inverters are active: a total near the point where one
    more inverter gets active_min_pct woke it and parked it again on alternate samples, the inverters moving in
    opposite directions with their own dead times (an oscillation on plants with mixed inverters). The active
    count changes only when the total is ACTIVE_HYSTERESIS beyond that point (or the active ones cannot carry it)."""
    pcts = distribution.spread(total_w, max_ws, p.quantum_pct, p.min_percent, p.max_percent, p.active_min_pct)
    n = len(pcts)
    wanted = n
    while wanted > 1 and pcts[wanted - 1] <= p.min_percent:
        wanted -= 1
    if not 1 <= now_active <= n or wanted == now_active or p.active_min_pct <= 0 or total_w <= 0:
        return pcts

    def point_w(k: int) -> float:     # the total from which k inverters are active
        return sum(p.active_min_pct * m / 100.0 for m in max_ws[:k]) \
            + sum(p.min_percent * m / 100.0 for m in max_ws[k:])
    keep = (wanted < now_active and total_w >= (1.0 - ACTIVE_HYSTERESIS) * point_w(now_active)) or (
        wanted > now_active and total_w < (1.0 + ACTIVE_HYSTERESIS) * point_w(wanted)
        and total_w <= sum(p.max_percent * m / 100.0 for m in max_ws[:now_active]))
    if not keep:
        return pcts
    rest_w = sum(p.min_percent * m / 100.0 for m in max_ws[now_active:])
    return distribution.spread(total_w - rest_w, max_ws[:now_active], p.quantum_pct, p.min_percent,
                               p.max_percent) + [p.min_percent] * (n - now_active)


def _parked_short(controllable: list, pcts: list, p: Params) -> tuple[float, int]:
    """What the inverters the spread parks at the minimum percent do not deliver, and how many are active (the
    first ones). Many models give 0 W at the minimum percent (HM below 2..5 %): their minimum, counted in the
    spread, would be missing from the output for good, so the active inverters make up for it. An inverter counts
    when it stays parked and reports less than half of that minimum. The active set stays the spread's (a make-up
    that woke another inverter would be taken back at the next sample)."""
    active = len(pcts)
    while active > 1 and pcts[active - 1] <= p.min_percent:
        active -= 1
    short_w = 0.0
    for inv in controllable[active:]:
        min_w = p.min_percent * inv.max_w() / 100.0
        if inv.cmd_pct is not None and inv.cmd_pct <= p.min_percent and inv.ac_power_w is not None \
                and inv.ac_power_w < 0.5 * min_w:
            short_w += min_w
    return short_w, active


def _rotate(state: State, now: float, p: Params) -> None:
    law = state.project
    if now >= law.next_rotate_t and len(state.order) > 1:
        # equal wear: at low power the first inverters carry the load (active_min_pct); the new order
        # takes effect with the next step that is needed anyway
        if law.next_rotate_t > float("-inf"):
            state.order.append(state.order.pop(0))
            state.reasons.append(f"project: rotation, {state.order[0]} now first")
        law.next_rotate_t = now + p.rotate_interval_s


def run(state: State, now: float, p: Params, fig, command) -> bool:
    """One evaluation; True when a decision (a step or a deliberate no-change) was taken on a new sample."""
    law = state.project
    grid_t = state.grid_t
    if grid_t is None or grid_t <= law.used_grid_t:
        return False
    law.used_grid_t = grid_t
    law.wait = "next meter sample"
    for serial in [s for s in law.banks if s not in state.inverters]:
        del law.banks[serial]
    controllable, others = [], []
    for serial in state.order:
        inv = state.inverters[serial]
        (others if protection.ineligible_reason(inv, now, p) else controllable).append(inv)
    if not controllable:
        _say(state, "project: no controllable inverter: " + ", ".join(
            f"{inv.serial} {protection.ineligible_reason(inv, now, p)}" for inv in others) if others
            else "project: no inverter known yet")
        return True

    output_w = reported_w = 0.0
    for inv in controllable:
        bank = _bank(state, inv, now, p)
        u = bank.output_at(grid_t, inv.ac_power_w, inv.sample_t)
        output_w += u
        reported_w += inv.ac_power_w if inv.ac_power_w is not None else u
    _note_learned(state, now)
    others_now_w = 0.0   # what the other inverters deliver now (part of the load estimate)
    fixed_w = 0.0        # what they will deliver (at their minimum, or nothing)
    fixed_cmd_w = 0.0
    for inv in others:
        if inv.stopped:                  # counts only until its stop is confirmed
            fixed_cmd_w += stopping.unconfirmed_w(inv, p)
            continue
        fixed_cmd_w += max(inv.cmd_pct or 0.0, p.min_percent) * inv.max_w() / 100.0   # as on the wire
        if protection.fresh(inv, now, p) and inv.ac_power_w is not None:
            others_now_w += inv.ac_power_w
            if inv.reachable and inv.on_grid() and inv.producing:
                fixed_w += min(inv.ac_power_w, inv.cmd_w())
    grid_w = state.grid_w
    target_w = fig.target_w
    load_w = grid_w + output_w + others_now_w
    ahead_w = 0.0
    if p.pulse_min_w > 0:
        if law.pulses is None:
            law.pulses = pulses.PulseTracker()
        law.pulses.observe(grid_t, load_w, p.pulse_min_w, p.pulse_tolerance_s, p.pulse_forget_s)
        # ahead by the dead time plus what comes before it (the ack) and after it (the ramp): pulse_lead_s, or the
        # learned ack delay + PULSE_RAMP_S when the link is slower
        lead_s = max(law.banks[inv.serial].dead_time_s
                     + max(p.pulse_lead_s, law.banks[inv.serial].ack_delay_s + PULSE_RAMP_S) for inv in controllable)
        ahead_w = law.pulses.anticipation_w(now, lead_s, p.pulse_min_cycles, p.pulse_tolerance_s,
                                            p.pulse_min_period_s, p.pulse_max_period_s,
                                            lead_s + p.pulse_fall_extra_s, p.pulse_fall_min_cycles)
        ahead_w *= p.pulse_raise_frac if ahead_w > 0 else p.pulse_reduce_frac
    # the noise the law sees (meter + load, through the estimate): the filter band and the deadbands grow with it,
    # so that a noisy meter (sigma 15 W) does not turn into a command on every sample
    if law.load_f is not None:
        law.noise_w += NOISE_WEIGHT * (min(abs(load_w - law.load_f), NOISE_CLIP_W) - law.noise_w)
    sigma_w = NOISE_SIGMA_PER_MEAN_ABS * law.noise_w
    band_w = max(p.load_filter_band_w, NOISE_BAND_SIGMAS * sigma_w) if p.load_filter_band_w > 0 else 0.0
    load_w = law.load_f = filters.band_smooth(law.load_f, load_w, band_w, p.load_filter_alpha)
    raise_deadband_w = max(p.raise_deadband_w, NOISE_DEADBAND_SIGMAS * sigma_w)
    reduce_deadband_w = max(p.reduce_deadband_w, 2.0 * NOISE_DEADBAND_SIGMAS * sigma_w)
    cap_w = max(0.0, fig.cap_w - fixed_cmd_w)
    total_w = min(max(load_w + ahead_w - target_w - fixed_w, 0.0), cap_w)
    max_ws = [inv.max_w() for inv in controllable]
    pcts = _spread_sticky(total_w, max_ws, sum(1 for inv in controllable if (inv.cmd_pct or 0.0) > p.min_percent), p)
    short_w, active = _parked_short(controllable, pcts, p)
    current_w = sum(inv.cmd_w() for inv in controllable) - short_w
    delta_w = total_w - current_w
    dead = "/".join(f"{law.banks[inv.serial].dead_time_s:g}" for inv in controllable)
    if -reduce_deadband_w <= delta_w <= raise_deadband_w:
        _say(state, "project: limits match the estimated load, no change")
        _rotate(state, now, p)
        return True
    if short_w > 0:
        rest_w = sum(p.min_percent * m / 100.0 for m in max_ws[active:])
        pcts[:active] = distribution.spread(min(total_w - rest_w + short_w, cap_w), max_ws[:active], p.quantum_pct,
                                            p.min_percent, p.max_percent)
    pcts = distribution.cap_cuts(pcts, max_ws, cap_w, p.quantum_pct, floor_pct=p.min_percent)
    if all(pct == inv.cmd_pct for inv, pct in zip(controllable, pcts)):
        _say(state, "project: limits match the estimated load (limit steps), no change")
        _rotate(state, now, p)
        return True
    kind = "raise" if delta_w > 0 else "reduce"
    changes, spaced = [], []
    for inv, pct in zip(controllable, pcts):
        if pct == inv.cmd_pct:
            continue
        if inv.cmd_t is not None and now - inv.cmd_t < p.min_command_interval_s:
            spaced.append(inv.serial)
            continue
        old = inv.cmd_pct
        if command(inv, pct, now, f"project {kind}"):
            changes.append(f"{inv.serial} {old if old is not None else '-'}->{pct:g} %")
    if changes:
        state.decision_grid_t = grid_t
    if not changes and spaced:
        law.wait = f"command spacing of {', '.join(spaced)} ({p.min_command_interval_s:g} s)"
        return True
    state.reasons.append(
        f"project {kind}: grid {grid_w:.0f} W, target {target_w:.0f} W, output est. {output_w:.0f} W (reported "
        f"{reported_w:.0f} W, dead time {dead} s) -> total {total_w:.0f} W (cap {cap_w:.0f} W): "
        + (", ".join(changes) if changes else "no limit changed")
        + (f"; {', '.join(spaced)} spaced" if spaced else ""))
    return True
