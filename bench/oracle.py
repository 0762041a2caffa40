"""The clairvoyant reference (docs/control.md §5 (2)) without an LP solver.

It knows the whole net load N(t) = L - B and drives the total AC output directly (no meter, no DTU, no dead time: a
clairvoyant commands early). Bounds: feasible output {0} U [P_min, P_max(t)], total ramp rates (sum of the inverters'
slew limits; their first-order lag is pre-compensated by commanding early). Greedy, export-first:

    x(t)    = clip(N - tau, 0, P_max(t)), 0 where N - tau < P_min       (the unconstrained ideal)
    up(t)   = min(x(t), up(t+1) + r_down)                                 (backward: able to ramp down in time)
    u(t)    = min(up(t), u(t-1) + r_up)                                   (forward: ramp-up limit)

This never exports and imports only where the ramps force it. It is not the LP optimum (which may trade a little
export for less import), so its cost is an upper bound of the true clairvoyant cost; it is the `oracle` policy and
the g* of `mae_vs_oracle_w`.
"""
from __future__ import annotations

import numpy as np


def ideal_output_w(net_load_w: np.ndarray, tau_w: float, p_max_w: np.ndarray, p_min_w: float) -> np.ndarray:
    need = np.asarray(net_load_w, dtype=float) - tau_w
    x = np.minimum(np.maximum(need, 0.0), p_max_w)
    x[need < p_min_w] = 0.0
    return x


def clairvoyant_output_w(net_load_w, tau_w: float, p_max_w, p_min_w: float, ramp_up_w_per_s: float,
                         ramp_down_w_per_s: float, dt_s: float = 1.0) -> np.ndarray:
    net = np.asarray(net_load_w, dtype=float)
    p_max = np.broadcast_to(np.asarray(p_max_w, dtype=float), net.shape).copy()
    x = ideal_output_w(net, tau_w, p_max, p_min_w)
    n = len(x)
    r_up = ramp_up_w_per_s * dt_s if ramp_up_w_per_s > 0 else float("inf")
    r_down = ramp_down_w_per_s * dt_s if ramp_down_w_per_s > 0 else float("inf")
    up = x.tolist()
    for i in range(n - 2, -1, -1):
        limit = up[i + 1] + r_down
        if up[i] > limit:
            up[i] = limit
    u = [0.0] * n
    prev = 0.0
    for i in range(n):
        value = up[i]
        if value > prev + r_up:
            value = prev + r_up
        u[i] = value
        prev = value
    return np.asarray(u)
