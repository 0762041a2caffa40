"""Run policies on one trace and plant and score them (bench/metrics.py): the shared core of
`bench.control_quality` (one trace) and `bench.sweep` (every scenario x dead time)."""
from __future__ import annotations

import logging
import time

import numpy as np

from bench import metrics, oracle
from bench.ahoy import DEFAULT_REFRESH_S, AhoyLoop
from bench.loop import ClosedLoop
from bench.plantcfg import PlantConfig
from bench.policies import make_policy
from sim.loadgen import Trace

DTUS = ("opendtu", "ahoy")


def quiet_product_logs() -> None:
    """The writer's warnings (a seed restart's lost limit, ...) are part of the run, not of the report."""
    logging.getLogger("services").setLevel(logging.ERROR)


def oracle_output(trace: Trace, plant: PlantConfig) -> tuple[np.ndarray, np.ndarray]:
    """Clairvoyant output and the P_max it used (battery at its starting voltage and DCL)."""
    battery = plant.battery.build()
    balcony = np.asarray(trace.balcony_w, dtype=float)
    p_max = np.array([plant.p_max_w(b, battery.voltage_v, battery.dcl_a) for b in balcony])
    net = np.asarray(trace.load_w, dtype=float) - balcony
    u = oracle.clairvoyant_output_w(net, plant.site.zero_point_w, p_max, plant.p_min_w,
                                    plant.ramp_up_w_per_s, plant.ramp_down_w_per_s)
    return u, p_max


def run_policies(trace: Trace, plant: PlantConfig, names, seed: int = 1, tick_s: float = 0.25,
                 validate: bool = False, keep_series: bool = False, factory=make_policy, dtu: str = "opendtu",
                 refresh_s: float = DEFAULT_REFRESH_S) -> list[dict]:
    """Run each named policy; returns one result dict per policy (plus `grid_w` arrays if keep_series).
    `dtu`: the gateway between the writer and the inverters, opendtu (bench.loop's DtuModel) or ahoy
    (bench.ahoy: the product's AhoyClient, poller and writer against the AhoyDTU model, refreshing every
    `refresh_s`)."""
    if dtu not in DTUS:
        raise ValueError(f"dtu must be one of {', '.join(DTUS)}, not {dtu!r}")
    tau = plant.site.zero_point_w
    load = np.asarray(trace.load_w, dtype=float)
    balcony = np.asarray(trace.balcony_w, dtype=float)
    u_star, p_max_star = oracle_output(trace, plant)
    g_star = load - balcony - u_star
    results = []
    for name in names:
        started = time.process_time()
        if name == "oracle":
            u, p_max = u_star, p_max_star
            commands = int(np.count_nonzero(np.abs(np.diff(u)) > 0.5))
            calls, above_cap, refreshes = 0, 0, 0
        else:
            if dtu == "ahoy":
                loop = AhoyLoop(trace, plant, factory(name), seed=seed, tick_s=tick_s, validate=validate,
                                refresh_s=refresh_s)
            else:
                loop = ClosedLoop(trace, plant, factory(name), seed=seed, tick_s=tick_s, validate=validate)
            res = loop.run()
            u, p_max, commands, calls = res.output_w, res.p_max_w, res.commands, res.policy_calls
            above_cap, refreshes = res.above_cap, res.refreshes
        row = {"policy": name, "scenario": trace.name, "dead_time_s": plant.dead_time_s, "seed": seed,
               "dtu": dtu_label(dtu, refresh_s)}
        row.update(metrics.score(load, balcony, u, tau, p_max, plant.p_min_w, commands, g_oracle_w=g_star))
        row["policy_calls"] = calls
        row["above_cap"] = above_cap
        row["changes_per_h"] = (commands - refreshes) * 3600.0 / len(load)     # commands without the refreshes
        row["runtime_s"] = round(time.process_time() - started, 2)
        if keep_series:
            row["grid_w"] = load - balcony - u
        results.append(row)
    return results


def dtu_label(dtu: str, refresh_s: float = DEFAULT_REFRESH_S) -> str:
    """opendtu, or ahoy@15s (the refresh is what makes AhoyDTU slow)."""
    return f"ahoy@{refresh_s:g}s" if dtu == "ahoy" else dtu


def format_table(rows: list[dict]) -> str:
    head = f"{'scenario':<15}{'dead':>5} {'dtu':<11}{'policy':<13}{'export':>8}{'import':>9}{'avoid.':>8}" \
           f"{'cost':>8}{'MAE':>7}{'peakexp':>8}{'cmd/h':>7}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['scenario']:<15}{r['dead_time_s']:>5g} {r.get('dtu', 'opendtu'):<11}{r['policy']:<13}"
                     f"{r['export_wh']:>8.1f}{r['import_wh']:>9.1f}{r['avoidable_import_wh']:>8.1f}{r['cost_wh']:>8.1f}"
                     f"{(r['mae_vs_oracle_w'] or 0.0):>7.1f}{r['peak_export_w']:>8.0f}{r['commands_per_h']:>7.0f}")
    lines.append("Wh over the trace; avoid. = avoidable import, cost = export + avoidable import, "
                 "MAE = mean |g - g_oracle| W")
    return "\n".join(lines)
