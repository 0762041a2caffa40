"""Pulse prediction for the project law (pure: time only as arguments).

Hob plates, ovens and irons switch a resistive load on and off with a fixed period (10..60 s): by the time the
inverters follow an edge (meter sample + ack + dead time + ramp) the pulse is nearly over. Such a load is
predictable: a train of edges of about the same size, rising with a steady period and falling a steady on-time
after each rise (the last period and on-time seen are extrapolated; `min_cycles` asks for that many repeats within
`tolerance_s` first: the project law's defaults predict a pulse's end from the second pulse on, and its rise only
after one steady cycle, since a false predicted rise exports). `PulseTracker` finds such trains in the estimated
load, one sample at a time; `anticipation_w` says how much more (or less) load there will be `lead_s` from now than
there is now, so that the law can command for the load the limit will meet when it takes effect.

Each train predicts only while it keeps its rhythm: an expected edge missing for more than `tolerance_s` ends the
prediction (it starts again after `min_cycles` steady cycles), so a plate switched off costs one wrong edge at most.
"""
from __future__ import annotations

from typing import Optional


def _repeat(value_s: float, previous_s: Optional[float], count: int, tolerance_s: float) -> tuple:
    """(value_s, consecutive repeats): one more when value_s equals the previous within the tolerance."""
    steady = previous_s is not None and abs(value_s - previous_s) <= tolerance_s
    return value_s, count + 1 if steady else 0


class Train:
    __slots__ = ("size_w", "last_rise", "last_fall", "period_s", "on_s", "steady_periods", "steady_ons", "on",
                 "last_edge_t")

    def __init__(self, size_w: float, t: float):
        self.size_w = size_w
        self.last_rise: Optional[float] = None
        self.last_fall: Optional[float] = None
        self.period_s: Optional[float] = None
        self.on_s: Optional[float] = None
        self.steady_periods = 0           # consecutive periods equal to the previous within the tolerance
        self.steady_ons = 0               # the same for on-times
        self.on = False
        self.last_edge_t = t

    def fits(self, size_w: float, min_size_w: float) -> bool:
        """An edge of this size can be this train's."""
        return abs(size_w - self.size_w) <= max(0.25 * self.size_w, 0.5 * min_size_w)

    def edge(self, t: float, jump_w: float, tolerance_s: float) -> None:
        """A rise (jump_w > 0) or a fall of this train at `t`: counts steady periods / on-times."""
        if jump_w > 0:
            if self.last_rise is not None:
                self.period_s, self.steady_periods = _repeat(t - self.last_rise, self.period_s,
                                                             self.steady_periods, tolerance_s)
            self.last_rise = t
        else:
            if self.on and self.last_rise is not None:
                self.on_s, self.steady_ons = _repeat(t - self.last_rise, self.on_s, self.steady_ons, tolerance_s)
            self.last_fall = t
        self.on = jump_w > 0
        self.last_edge_t = t
        self.size_w = 0.5 * (self.size_w + abs(jump_w))

    def steady(self, min_cycles: int, min_period_s: float, max_period_s: float) -> bool:
        return (self.steady_periods >= min_cycles and self.steady_ons >= min_cycles
                and self.period_s is not None and self.on_s is not None
                and min_period_s <= self.period_s <= max_period_s and 0.0 < self.on_s < self.period_s)

    def on_at(self, t: float) -> bool:
        """On or off at `t` if the rhythm goes on (steady trains only)."""
        phase = (t - self.last_rise) % self.period_s
        return phase < self.on_s

    def overdue(self, now: float, tolerance_s: float) -> bool:
        """The next edge should have come by now."""
        if self.on:
            return now > self.last_rise + self.on_s + tolerance_s
        return now > self.last_rise + self.period_s + tolerance_s


class PulseTracker:
    __slots__ = ("prev_w", "trains")

    def __init__(self):
        self.prev_w: Optional[float] = None
        self.trains: list = []

    def observe(self, t: float, load_w: float, min_size_w: float, tolerance_s: float, forget_s: float,
                max_trains: int = 4) -> None:
        """A new load estimate at sample time `t`; a jump of at least min_size_w is an edge of a train."""
        prev_w, self.prev_w = self.prev_w, load_w
        self.trains = [tr for tr in self.trains if t - tr.last_edge_t <= forget_s]
        if prev_w is None:
            return
        jump = load_w - prev_w
        size = abs(jump)
        if size < min_size_w:
            return
        # the train of about this size whose next edge is of this sign
        candidates = [tr for tr in self.trains if tr.on != (jump > 0) and tr.fits(size, min_size_w)]
        best = min(candidates, key=lambda tr: abs(size - tr.size_w), default=None)
        if best is None and self.explain_two(t, jump, min_size_w, tolerance_s):
            return
        if best is None:
            if jump < 0:
                return                     # a fall that starts no train (a load went off)
            best = Train(size, t)
            self.trains.append(best)
            del self.trains[:-max_trains]
        best.edge(t, jump, tolerance_s)

    def explain_two(self, t: float, jump: float, min_size_w: float, tolerance_s: float) -> bool:
        """Two trains switching in the same sample (a plate off while the oven comes on): a train whose edge is
        due now takes its edge, another train of the right size and state the rest (or the rest is small)."""
        for first in self.trains:
            if first.period_s is None or first.on_s is None or first.last_rise is None:
                continue
            due = first.last_rise + (first.on_s if first.on else first.period_s)
            if abs(t - due) > tolerance_s:
                continue
            edge = -first.size_w if first.on else first.size_w
            rest = jump - edge
            second = None
            if abs(rest) >= min_size_w:
                second = next((tr for tr in self.trains if tr is not first and tr.on != (rest > 0)
                               and tr.fits(abs(rest), min_size_w)), None)
                if second is None:
                    continue
            first.edge(t, edge, tolerance_s)
            if second is not None:
                second.edge(t, rest, tolerance_s)
            return True
        return False

    def anticipation_w(self, now: float, lead_s: float, min_cycles: int, tolerance_s: float,
                       min_period_s: float, max_period_s: float, fall_lead_s: Optional[float] = None,
                       fall_min_cycles: Optional[int] = None) -> float:
        """Load expected at now + lead_s minus the load now, summed over the steady trains (W, + = more);
        a pulse that is on now is looked at fall_lead_s ahead instead (inverters ramp down slower than up), and
        its end predicted after fall_min_cycles steady cycles (a wrong fall costs import, a wrong rise export)."""
        total = 0.0
        for tr in self.trains:
            cycles = fall_min_cycles if tr.on and fall_min_cycles is not None else min_cycles
            if not tr.steady(cycles, min_period_s, max_period_s):
                continue
            if tr.overdue(now, tolerance_s):
                tr.steady_periods = tr.steady_ons = 0          # the rhythm broke: no more prediction
                continue
            later = tr.on_at(now + (fall_lead_s if tr.on and fall_lead_s is not None else lead_s))
            if later != tr.on:
                total += tr.size_w if later else -tr.size_w
        return total
