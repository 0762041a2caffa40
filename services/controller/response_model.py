"""What an inverter delivers after a limit change: the project law's output model (pure, time only as arguments).

An acknowledged limit takes effect after a dead time (radio round-robin, the inverter's own delay) and is then
approached as a first-order lag (tau up / tau down). The law uses the model only for the *change* since the
inverter's last report:

    u(t_grid) = reported(t_report) + model(t_grid) - model(t_report)

so in steady state it is the reported output (saturation, minimum limits and undershoot are measured, not
assumed), and during the dead time and the ramp the model supplies what the report cannot know yet.

The dead time differs between installations (0.5..15 s) and so does the ramp (50..1000 W/s): both are learned.
`DeadTimeBank` runs one model per candidate (dead time x slew rate) and uses the one whose predicted *changes*
between consecutive reports fit the reported changes best (EWMA of the squared error): robust to continuous
commanding and to a constant offset. The bank also keeps the
delay from a command to its acknowledgement (EWMA of `on_ack`'s `command_delay_s`): together with the dead time it
is how far ahead the law has to look (pulse prediction). Both are the inverter's learned state (`learned`), kept
across restarts by the controller's state file and handed back as the bank's start (`LearnedState`).
"""
from __future__ import annotations

import bisect
import math
from typing import Optional

STEP_S = 0.25                 # model resolution
KEEP_POINTS = 800             # ~200 s of trajectory kept per model
CANDIDATES_S = (0.5, 1.0, 2.0, 3.0, 4.5, 6.0, 8.0, 10.0, 12.0, 15.0, 18.0)
RAMPS_W_PER_S = (0.0, 300.0, 100.0)   # slew-rate candidates on top of the lag, both directions (0: none)
NO_SLEW_W = 1e9                       # W per step: no slew limit (finite: the state holds no inf)
ERROR_WEIGHT = 0.03           # EWMA weight of one report's squared error
ACK_WEIGHT = 0.1              # EWMA weight of one command's delay until its ack
ACK_DELAY_MAX_S = 30.0        # a longer delay is not a measurement of the link (a lost command, a restart)


class InverterModel:
    """Expected AC output of one inverter from its acknowledged limits, for one dead time."""

    __slots__ = ("a_up", "a_down", "slew_w", "ts", "us", "targets", "changes")

    def __init__(self, tau_up_s: float, tau_down_s: float, t0: float, u0: float, ramp_w_per_s: float = 0.0):
        self.a_up = 1.0 - math.exp(-STEP_S / max(tau_up_s, 1e-3))
        self.a_down = 1.0 - math.exp(-STEP_S / max(tau_down_s, 1e-3))
        self.slew_w = ramp_w_per_s * STEP_S if ramp_w_per_s > 0 else NO_SLEW_W     # W per step
        self.ts = [t0]
        self.us = [u0]
        self.targets = [u0]
        self.changes: list = []            # [(effective_t, target_w)] not yet reached by the trajectory

    def add_target(self, effective_t: float, target_w: float) -> None:
        """From `effective_t` on the output moves towards `target_w` (a trajectory already past it is redone)."""
        if effective_t < self.ts[-1]:
            i = max(1, bisect.bisect_right(self.ts, effective_t))
            del self.ts[i:], self.us[i:], self.targets[i:]
            self.changes = [c for c in self.changes if c[0] < effective_t]
        self.changes.append((effective_t, target_w))
        self.changes.sort()

    def at(self, t: float) -> float:
        ts, us = self.ts, self.us
        while ts[-1] < t:
            t_next = ts[-1] + STEP_S
            target = self.targets[-1]
            while self.changes and self.changes[0][0] <= t_next:
                target = self.changes.pop(0)[1]
            u = us[-1]
            step = (target - u) * (self.a_up if target > u else self.a_down)
            u += max(-self.slew_w, min(self.slew_w, step))
            ts.append(t_next)
            us.append(u)
            self.targets.append(target)
        if len(ts) > KEEP_POINTS:
            half = KEEP_POINTS // 2
            del ts[:half], us[:half], self.targets[:half]
        if t <= ts[0]:
            return us[0]
        i = bisect.bisect_left(ts, t)
        t0, t1 = ts[i - 1], ts[i]
        return us[i - 1] + (us[i] - us[i - 1]) * (t - t0) / (t1 - t0)


class DeadTimeBank:
    """One model per candidate dead time; the best fit of reported changes is the estimate."""

    __slots__ = ("models", "errors", "best", "last_report", "last_ack_t", "ack_delay_s")

    def __init__(self, tau_up_s: float, tau_down_s: float, t0: float, u0: float, initial_s: float,
                 ack_delay_s: float = 2.0, ramp_w_per_s: float = 0.0):
        self.models = [InverterModel(tau_up_s, tau_down_s, t0, u0, r) for _ in CANDIDATES_S for r in RAMPS_W_PER_S]
        nearest = min(range(len(CANDIDATES_S)), key=lambda i: abs(CANDIDATES_S[i] - initial_s)) * len(RAMPS_W_PER_S) \
            + _nearest_ramp(ramp_w_per_s)
        self.errors = [0.0 if i == nearest else 1.0 for i in range(len(self.models))]
        self.best = nearest
        self.last_report: Optional[tuple] = None
        self.last_ack_t: Optional[float] = None
        self.ack_delay_s = ack_delay_s

    def learned(self) -> dict:
        """What is worth keeping across a restart (JSON-compatible)."""
        return {"dead_time_s": self.dead_time_s, "ack_delay_s": round(self.ack_delay_s, 2),
                "ramp_w_per_s": self.ramp_w_per_s}

    @property
    def dead_time_s(self) -> float:
        return CANDIDATES_S[self.best // len(RAMPS_W_PER_S)]

    @property
    def ramp_w_per_s(self) -> float:
        """The slew rate of the best model (0: the lag alone)."""
        return RAMPS_W_PER_S[self.best % len(RAMPS_W_PER_S)]

    @property
    def model(self) -> InverterModel:
        return self.models[self.best]

    def on_ack(self, ack_t: float, target_w: float, command_delay_s: Optional[float] = None) -> None:
        """A limit worth `target_w` became effective in the DTU at `ack_t`, `command_delay_s` after the law
        commanded it (None: not known)."""
        self.last_ack_t = ack_t
        if command_delay_s is not None and 0.0 <= command_delay_s <= ACK_DELAY_MAX_S:
            self.ack_delay_s += ACK_WEIGHT * (command_delay_s - self.ack_delay_s)
        for i, m in enumerate(self.models):
            m.add_target(ack_t + CANDIDATES_S[i // len(RAMPS_W_PER_S)], target_w)

    def on_report(self, sample_t: float, reported_w: float) -> bool:
        """An inverter report; True when the estimate (dead time or ramp) changed."""
        before = self.best
        if self.last_report is not None and sample_t > self.last_report[0]:
            t0, r0 = self.last_report
            seen = reported_w - r0
            for i, m in enumerate(self.models):
                err = seen - (m.at(sample_t) - m.at(t0))
                self.errors[i] = (1.0 - ERROR_WEIGHT) * self.errors[i] + ERROR_WEIGHT * err * err
            self.best = min(range(len(self.errors)), key=self.errors.__getitem__)
        self.last_report = (sample_t, reported_w)
        return self.best != before

    def output_at(self, t: float, reported_w: Optional[float], report_t: Optional[float]) -> float:
        """The output expected at `t`: the last report plus the model's change since, or the model alone."""
        m = self.model
        if reported_w is None or report_t is None:
            return m.at(t)
        return reported_w + m.at(t) - m.at(report_t)


def _nearest_ramp(ramp_w_per_s: float) -> int:
    if ramp_w_per_s <= 0:
        return 0
    return min(range(1, len(RAMPS_W_PER_S)), key=lambda i: abs(math.log(RAMPS_W_PER_S[i] / ramp_w_per_s)))


def valid_learned(data) -> Optional[dict]:
    """One inverter's learned state as read from the state file, or None when it is not usable (a missing ramp,
    as files before it was learned have it, is 0: none)."""
    if not isinstance(data, dict):
        return None
    dead, ack, ramp = data.get("dead_time_s"), data.get("ack_delay_s"), data.get("ramp_w_per_s", 0.0)
    for value, high in ((dead, CANDIDATES_S[-1]), (ack, ACK_DELAY_MAX_S), (ramp, 10000.0)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= high:
            return None
    return {"dead_time_s": float(dead), "ack_delay_s": float(ack), "ramp_w_per_s": float(ramp)}
