"""Turning watts into per-inverter relative limits: the seed's one-inverter step, the project law's spread over
all inverters, and the total-cap guard applied after either law."""
from __future__ import annotations

import math
from typing import Sequence

_EPS = 1e-9


def seed_step(old_pct: float, g_w: float, b_w: float, max_w: float, steps_pct: float, min_pct: float,
              max_pct: float, forced_min: bool) -> tuple[float, float, float]:
    """docs/original-project.md §4.5 step 5: returns (new %, remaining g, remaining b).

    act = old% x max/100; add = min(g, b - act); new% = int(int((old% + add x 100/max) / steps) x steps)
    (truncation), clamped to [min, max], forced to min. HM-400 at 50 %, g = +100 W, b = 700 W -> 74 %, g 4 W.
    """
    act_w = old_pct * max_w / 100.0
    add_w = min(g_w, b_w - act_w)
    new_pct = float(int(int((old_pct + add_w * 100.0 / max_w) / steps_pct) * steps_pct))
    if forced_min:
        new_pct = min_pct
    else:
        new_pct = min(max(new_pct, min_pct), max_pct)
    return new_pct, g_w - (new_pct - old_pct) * max_w / 100.0, b_w - new_pct * max_w / 100.0


def floor_to(value: float, quantum: float) -> float:
    return round(math.floor(value / quantum + _EPS) * quantum, 6)


def spread(total_w: float, max_ws: Sequence[float], quantum_pct: float, min_pct: float,
           max_pct: float, active_min_pct: float = 0.0) -> list[float]:
    """The same percentage for the active inverters (equal share of their size, equal wear), floored to the
    quantum, then single quanta to the first inverters (preference order) while each brings the sum nearer to
    total_w (the quantum's remainder is at least half its watts): the sum is total_w rounded to the nearest
    quantum, not floored (flooring left the output short by up to a quantum per inverter, on every command).
    Only as many inverters (the first ones) are active as can each get at least active_min_pct (at least one);
    the others sit at min_pct (a low limit is inaccurate and inefficient, and may give 0 W).
    Every result lies in [min_pct, max_pct]. The sum is within half of one inverter's quantum (quantum_pct x its
    max_w / 100 / 2) of total_w, except below the sum of the minimums (then above) or beyond max_pct (then
    below); it may exceed total_w by that half quantum, so a caller holding a cap applies `cap_cuts` after it."""
    n = len(max_ws)
    if n == 0:
        return []
    if active_min_pct > 0 and n > 1:
        active = n
        while active > 1 and total_w - sum(min_pct * m / 100.0 for m in max_ws[active:]) \
                < sum(active_min_pct * m / 100.0 for m in max_ws[:active]):
            active -= 1
        if active < n:
            rest = [min_pct] * (n - active)
            rest_w = sum(min_pct * m / 100.0 for m in max_ws[active:])
            return spread(total_w - rest_w, max_ws[:active], quantum_pct, min_pct, max_pct) + rest
    sum_max = sum(max_ws)
    share = min(max(total_w * 100.0 / sum_max, min_pct), max_pct)
    pct = floor_to(share, quantum_pct)
    if pct < min_pct:
        pct = min_pct
    out = [pct] * n
    remaining_w = total_w - sum(pct * m / 100.0 for m in max_ws)
    if remaining_w > 0:
        for i, m in enumerate(max_ws):
            step_w = quantum_pct * m / 100.0
            if out[i] + quantum_pct <= max_pct + _EPS and step_w <= 2.0 * remaining_w + _EPS:
                out[i] = round(out[i] + quantum_pct, 6)
                remaining_w -= step_w
    return out


def cap_cuts(pcts: Sequence[float], max_ws: Sequence[float], cap_w: float, quantum_pct: float,
             floor_pct: float = 0.0) -> list[float]:
    """Lower limits, last in preference order first, until sum(pct x max/100) <= cap_w: first down to `floor_pct`
    (the lowest limit the writer sends; an inverter running below it would deliver more than its share), then, if
    that is not enough, down to 0 % (the stopping delegate then stops inverters): the cap is never exceeded."""
    out = list(pcts)
    total_w = sum(p * m / 100.0 for p, m in zip(out, max_ws))
    cap_w = max(0.0, cap_w)
    for floor in ((floor_pct, 0.0) if floor_pct > 0 else (0.0,)):
        for i in range(len(out) - 1, -1, -1):
            if total_w <= cap_w + 1e-6:
                break
            m = max_ws[i]
            if m <= 0 or out[i] <= floor:
                continue
            cur_w = out[i] * m / 100.0
            new_w = max(floor * m / 100.0, cur_w - (total_w - cap_w))
            new_pct = floor_to(new_w * 100.0 / m, quantum_pct)
            while new_pct > floor and new_pct * m / 100.0 > new_w + 1e-9:
                new_pct = max(floor, round(new_pct - quantum_pct, 6))
            new_pct = max(new_pct, floor)
            total_w -= cur_w - new_pct * m / 100.0
            out[i] = new_pct
    return out
