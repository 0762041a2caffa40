"""Scoring per docs/control.md §5, on 1 s samples.

Inputs per second t: load L, balcony solar B, inverter AC output u (mean over the second); grid g = L - B - u
(+ = import); target tau; P_max(t) = min(max_feed_in - B, sum of inverter maxima, eta x V x DCL); P_min (smallest
limit an inverter honours).

| key | definition |
|---|---|
| export_wh | sum min(u, max(0, -g)) dt / 3600: battery energy given away. Equals §5's sum max(0, -g) whenever the export is not the balcony system's own (which no policy can avoid); `grid_export_wh` is the plain sum |
| import_wh | sum max(0, g) dt / 3600 (includes the deliberate tau) |
| avoidable_import_wh | sum max(0, g - tau - A) dt / 3600, A = max(0, N - tau - P_max) with N = L - B, and A = max(0, N - tau) where N - tau < P_min |
| mae_vs_oracle_w | mean abs(g - g*) against the clairvoyant oracle's grid power g* |
| peak_export_w | max of the per-second battery export min(u, max(0, -g)) |
| commands_per_h | limit commands sent (POSTs by the writer) per hour of trace |
| cost_wh | export_wh + avoidable_import_wh (used by the sweep's goals) |
"""
from __future__ import annotations

import numpy as np


def unavoidable_import_w(net_load_w: np.ndarray, tau_w: float, p_max_w: np.ndarray, p_min_w: float) -> np.ndarray:
    need = net_load_w - tau_w
    a = np.maximum(0.0, need - p_max_w)
    small = need < p_min_w
    a[small] = np.maximum(0.0, need[small])
    return a


def score(load_w, balcony_w, u_w, tau_w: float, p_max_w, p_min_w: float, commands: int = 0,
          g_oracle_w=None) -> dict:
    load = np.asarray(load_w, dtype=float)
    balcony = np.asarray(balcony_w, dtype=float)
    u = np.asarray(u_w, dtype=float)
    p_max = np.broadcast_to(np.asarray(p_max_w, dtype=float), load.shape)
    n = len(load)
    if not (len(balcony) == len(u) == n) or n == 0:
        raise ValueError("load, balcony and output must be equally long and not empty")
    net = load - balcony
    g = net - u
    exported = np.maximum(0.0, -g)
    battery_export = np.minimum(np.maximum(u, 0.0), exported)
    a = unavoidable_import_w(net, tau_w, p_max, p_min_w)
    avoidable = np.maximum(0.0, g - tau_w - a)
    out = {
        "export_wh": float(battery_export.sum() / 3600.0),
        "grid_export_wh": float(exported.sum() / 3600.0),
        "import_wh": float(np.maximum(0.0, g).sum() / 3600.0),
        "avoidable_import_wh": float(avoidable.sum() / 3600.0),
        "unavoidable_import_wh": float(a.sum() / 3600.0),
        "peak_export_w": float(battery_export.max()),
        "commands": int(commands),
        "commands_per_h": float(commands) * 3600.0 / n,
        "duration_s": n,
    }
    out["cost_wh"] = out["export_wh"] + out["avoidable_import_wh"]
    if g_oracle_w is not None:
        out["mae_vs_oracle_w"] = float(np.mean(np.abs(g - np.asarray(g_oracle_w, dtype=float))))
    else:
        out["mae_vs_oracle_w"] = None
    return out
