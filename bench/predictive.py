"""A proposed project law measured inside the bench (see bench/PROPOSAL.md): "predict the inverter's response".

The core's law (services/controller/project_law.py) is a gated deadbeat step: it waits for inverter data taken
after each ack and a meter sample newer than that, so one correction takes ack + DTU round-robin + HTTP poll
(3-5 s). This law acts on every new meter sample instead, with the output at the meter's sample time estimated as

    u_i(t_grid) = reported_i(t_stats) + model_i(t_grid) - model_i(t_stats)

where model_i is a first-order lag (tau up / down) from each acknowledged limit, starting an estimated dead time
after the ack. In steady state it is the reported output (robust to saturation, minimum limits, HMS undershoot);
during dead time and ramps the model supplies only the change since the last report. The dead time is learned:
a bank of models with candidate dead times 0.5..18 s runs in parallel and the one whose predicted changes between
consecutive reports fit the reported changes best is used (`DeadTimeBank`). Load estimate L = grid + sum u_i; total = clamp(L - target, 0, cap), spread like the core's law; a new
setpoint only when the total moves by more than a deadband (raise / reduce separately).

Used through `PredictivePolicy` (the core with `project_law.run` swapped for this function during its calls); no
file under services/controller is changed.
"""
from __future__ import annotations

import bisect
import math
from typing import Optional

from bench.policies import CorePolicy
from services.controller import distribution, project_law, protection

STEP_S = 0.25


class InverterModel:
    """Expected AC output of one inverter from its acknowledged limits (lag only; the dead time is a parameter)."""

    def __init__(self, tau_up_s: float, tau_down_s: float, t0: float, u0: float):
        self.a_up = 1.0 - math.exp(-STEP_S / tau_up_s)
        self.a_down = 1.0 - math.exp(-STEP_S / tau_down_s)
        self.ts = [t0]
        self.us = [u0]
        self.targets = [u0]
        self.changes: list = []            # [(effective_t, target_w)] not yet reached by the trajectory
        self.last_ack_t: Optional[float] = None

    def add_target(self, effective_t: float, target_w: float) -> None:
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
            u += (target - u) * (self.a_up if target > u else self.a_down)
            ts.append(t_next)
            us.append(u)
            self.targets.append(target)
        if len(ts) > 800:                       # keep ~200 s
            del ts[:400], us[:400], self.targets[:400]
        if t <= ts[0]:
            return us[0]
        i = bisect.bisect_left(ts, t)
        t0, t1 = ts[i - 1], ts[i]
        return us[i - 1] + (us[i] - us[i - 1]) * (t - t0) / (t1 - t0)


class DeadTimeBank:
    """One model per candidate dead time; the candidate whose predicted *changes* between consecutive inverter
    reports match the reported changes best (EWMA of squared error) is the estimate. Robust to continuous
    commanding and to a constant offset (saturation, minimum limit)."""

    CANDIDATES_S = (0.5, 1.0, 2.0, 3.0, 4.5, 6.0, 8.0, 10.0, 12.0, 15.0, 18.0)

    def __init__(self, tau_up_s: float, tau_down_s: float, t0: float, u0: float, initial_s: float):
        self.models = [InverterModel(tau_up_s, tau_down_s, t0, u0) for _ in self.CANDIDATES_S]
        self.errors = [0.0 if abs(d - initial_s) < 1e-9 else 1.0 for d in self.CANDIDATES_S]
        self.best = min(range(len(self.errors)), key=self.errors.__getitem__)
        self.last_report: Optional[tuple] = None
        self.last_ack_t: Optional[float] = None

    @property
    def dead_time_s(self) -> float:
        return self.CANDIDATES_S[self.best]

    @property
    def model(self) -> InverterModel:
        return self.models[self.best]

    def on_ack(self, ack_t: float, target_w: float) -> None:
        for d, m in zip(self.CANDIDATES_S, self.models):
            m.add_target(ack_t + d, target_w)

    def on_report(self, sample_t: float, reported_w: float) -> None:
        if self.last_report is not None and sample_t > self.last_report[0]:
            t0, r0 = self.last_report
            seen = reported_w - r0
            for i, m in enumerate(self.models):
                err = seen - (m.at(sample_t) - m.at(t0))
                self.errors[i] = 0.97 * self.errors[i] + 0.03 * err * err
            self.best = min(range(len(self.errors)), key=self.errors.__getitem__)
        self.last_report = (sample_t, reported_w)


class PredictivePolicy(CorePolicy):
    def __init__(self, name: str = "project_predict", tau_up_s: float = 1.5, tau_down_s: float = 3.0,
                 dead_time_s: float = 2.0, raise_band_w: float = 2.0, reduce_band_w: float = 10.0,
                 target_shift_w: float = 0.0, **param_changes):
        super().__init__("project", name=name, **param_changes)
        self.tau_up_s = tau_up_s
        self.tau_down_s = tau_down_s
        self.dead_time_s = dead_time_s
        self.raise_band_w = raise_band_w
        self.reduce_band_w = reduce_band_w
        self.target_shift_w = target_shift_w

    def reset(self, loop) -> None:
        super().reset(loop)
        self.banks: dict = {}
        self.seen_sample_t: dict = {}
        self.dead_time_log: list = []

    def step(self, events, now):
        original = project_law.run
        project_law.run = self._run
        try:
            return super().step(events, now)
        finally:
            project_law.run = original

    # ------------------------------------------------------------ the law
    def _model(self, inv, now: float) -> InverterModel:
        bank = self.banks.get(inv.serial)
        if bank is None:
            u0 = inv.ac_power_w if inv.ac_power_w is not None else inv.cmd_w()
            bank = DeadTimeBank(self.tau_up_s, self.tau_down_s, (inv.sample_t or now) - 1.0, u0, self.dead_time_s)
            bank.last_ack_t = inv.ack_t
            self.banks[inv.serial] = bank
        if inv.ack_t is not None and inv.ack_t != bank.last_ack_t and inv.applied_pct is not None:
            bank.last_ack_t = inv.ack_t
            bank.on_ack(inv.ack_t, inv.applied_pct * inv.max_w() / 100.0)
        if inv.sample_t is not None and self.seen_sample_t.get(inv.serial) != inv.sample_t:
            self.seen_sample_t[inv.serial] = inv.sample_t
            if inv.ac_power_w is not None:
                before = bank.dead_time_s
                bank.on_report(inv.sample_t, inv.ac_power_w)
                if bank.dead_time_s != before:
                    self.dead_time_log.append(bank.dead_time_s)
        return bank.model

    def _run(self, state, now, p, fig, command) -> bool:
        law = state.project
        grid_t = state.grid_t
        if grid_t is None or grid_t <= law.used_grid_t:
            return False
        law.used_grid_t = grid_t
        law.wait = "next meter sample"
        controllable, others = [], []
        for serial in state.order:
            inv = state.inverters[serial]
            (others if protection.ineligible_reason(inv, now, p) else controllable).append(inv)
        if not controllable:
            return True
        output_w = 0.0
        for inv in controllable:
            m = self._model(inv, now)
            if inv.ac_power_w is None or inv.sample_t is None:
                output_w += m.at(grid_t)
            else:
                output_w += inv.ac_power_w + m.at(grid_t) - m.at(inv.sample_t)
        fixed_w = fixed_cmd_w = 0.0
        for inv in others:
            fixed_cmd_w += inv.cmd_w()
            if inv.reachable and inv.on_grid() and inv.producing:
                fixed_w += min(inv.ac_power_w or 0.0, inv.cmd_w())
        target_w = fig.target_w + self.target_shift_w
        load_w = state.grid_w + output_w + fixed_w
        cap_w = max(0.0, fig.cap_w - fixed_cmd_w)
        total_w = min(max(load_w - target_w - fixed_w, 0.0), cap_w)
        current_w = sum(inv.cmd_w() for inv in controllable)
        delta = total_w - current_w
        if -self.reduce_band_w <= delta <= self.raise_band_w:
            return True
        max_ws = [inv.max_w() for inv in controllable]
        pcts = distribution.spread(total_w, max_ws, p.quantum_pct, p.min_percent, p.max_percent)
        pcts = distribution.cap_cuts(pcts, max_ws, cap_w, p.quantum_pct)
        kind = "raise" if delta > 0 else "reduce"
        changed = [inv.serial for inv, pct in zip(controllable, pcts) if command(inv, pct, now, f"predict {kind}")]
        state.reasons.append(f"predict {kind}: grid {state.grid_w:.0f} W, est. output {output_w:.0f} W, dead time "
                             f"{'/'.join(f'{b.dead_time_s:g}' for b in self.banks.values())} s -> total {total_w:.0f} W ({len(changed)} changed)")
        return True
