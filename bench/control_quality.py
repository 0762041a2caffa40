"""Control quality benchmark: every policy on the same trace, plant, meter model and seeds, scored per
docs/control.md §5 (definitions in bench/metrics.py).

    python -m bench.control_quality [--trace CSV] [--scenario NAME] [--plant JSON] [--policy NAME ...] [--json]
                                    [--plot PNG] [--dead-time S] [--seed N] [--tick S] [--dtu opendtu|ahoy]
                                    [--refresh S]

--trace CSV        `t_s,load_w[,balcony_w]` at 1 Hz (instead of a built-in scenario)
--scenario NAME    fridge | kettle | hob | overload | balcony_clouds | day (default kettle)
--plant JSON       plant description (default bench/plants/default.json; fields in bench/plantcfg.py)
--policy NAME ...  project seed dpl hze oracle oracle_delay (default: these six)
--dead-time S      override every inverter's dead time
--dtu NAME         the gateway: opendtu (default; sim.dtu's model) or ahoy (the product's AhoyClient, poller and
                   writer against sim.ahoy's AhoyDTU model, bench/ahoy.py)
--refresh S        AhoyDTU's refresh interval (its /api/live `refresh`, default 15 s; only with --dtu ahoy)
--json             one JSON object per policy, one per line (JSON Lines), keys: policy, scenario, dead_time_s,
                   export_wh, import_wh, avoidable_import_wh, mae_vs_oracle_w, peak_export_w, commands_per_h, plus
                   cost_wh, grid_export_wh, unavoidable_import_wh, commands, duration_s, seed, runtime_s
--plot PNG         grid power against the target, one panel per policy (matplotlib, Agg); --plot-window S:E

Every scenario x dead times 2/5/12 s x all policies, with the goals: `python -m bench.sweep`.
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from bench.plantcfg import PlantConfigError, load_plant
from bench.policies import EXTRA_POLICIES, POLICIES
from bench.ahoy import DEFAULT_REFRESH_S
from bench.run import DTUS, format_table, quiet_product_logs, run_policies
from sim.loadgen import SCENARIOS, Trace, TraceError, builtin, read_csv

SUMMARY_KEYS = ("export_wh", "import_wh", "avoidable_import_wh", "mae_vs_oracle_w", "peak_export_w",
                "commands_per_h")


def _plot_window(trace: Trace) -> tuple[int, int]:
    n = trace.duration_s
    if n <= 3 * 3600:
        return 0, n
    load = np.asarray(trace.load_w)
    activity = np.abs(np.diff(load, prepend=load[0]))
    width = 1800
    sums = np.convolve(activity, np.ones(width), mode="valid")
    start = int(np.argmax(sums))
    return start, start + width


def plot(rows: list[dict], trace: Trace, tau_w: float, path: str, window=None) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    start, end = window or _plot_window(trace)
    t = np.arange(start, end)
    fig, axes = plt.subplots(len(rows), 1, figsize=(12, 1.9 * len(rows) + 0.6), sharex=True, squeeze=False)
    for ax, row in zip(axes[:, 0], rows):
        g = row["grid_w"][start:end]
        ax.plot(t, g, lw=0.7, color="tab:blue", label="grid (+ import)")
        ax.axhline(tau_w, color="tab:green", lw=0.8, ls="--", label=f"target {tau_w:g} W")
        ax.axhline(0.0, color="black", lw=0.5)
        ax.fill_between(t, g, 0.0, where=g < 0, color="tab:red", alpha=0.4, lw=0, label="export")
        ax.set_ylabel("W")
        ax.set_ylim(max(-900.0, float(np.min(g)) - 50), min(2500.0, float(np.max(g)) + 50))
        ax.set_title(f"{row['policy']}: export {row['export_wh']:.1f} Wh, avoidable import "
                     f"{row['avoidable_import_wh']:.1f} Wh, {row['commands_per_h']:.0f} cmd/h", fontsize=9, loc="left")
    axes[0, 0].legend(loc="upper right", fontsize=7, ncol=3)
    axes[-1, 0].set_xlabel(f"t (s) — scenario {trace.name}, dead time {rows[0]['dead_time_s']:g} s")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m bench.control_quality",
                                     description="closed-loop control quality of every policy on one trace")
    parser.add_argument("--trace", help="CSV t_s,load_w[,balcony_w] at 1 Hz")
    parser.add_argument("--scenario", default="kettle", help=f"built-in: {', '.join(SCENARIOS)} (default kettle)")
    parser.add_argument("--plant", help="plant JSON (default bench/plants/default.json)")
    parser.add_argument("--policy", nargs="+", default=list(POLICIES), metavar="NAME",
                        help=f"any of {' '.join(POLICIES)} (default all)")
    parser.add_argument("--json", action="store_true", help="JSON Lines: one object per policy")
    parser.add_argument("--plot", metavar="PNG", help="plot grid power vs target per policy")
    parser.add_argument("--plot-window", metavar="S:E", help="plot seconds S..E only (default: all up to 3 h, "
                        "else the busiest 30 min)")
    parser.add_argument("--dead-time", type=float, metavar="S", help="override every inverter's dead time")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--tick", type=float, default=0.25, help="physics step in s (0.1..0.5)")
    parser.add_argument("--validate", action="store_true", help="check every bus body against its schema")
    parser.add_argument("--dtu", choices=DTUS, default="opendtu", help="the gateway (default opendtu)")
    parser.add_argument("--refresh", type=float, default=DEFAULT_REFRESH_S, metavar="S",
                        help=f"AhoyDTU refresh interval in s (default {DEFAULT_REFRESH_S:g}; --dtu ahoy only)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    quiet_product_logs()
    for name in args.policy:
        if name not in POLICIES + EXTRA_POLICIES:
            print(f"unknown policy {name!r} (known: {', '.join(POLICIES + EXTRA_POLICIES)})", file=sys.stderr)
            return 2
    try:
        plant = load_plant(args.plant)
        if not 1.0 <= args.refresh <= 300.0:
            raise PlantConfigError("--refresh must be within 1..300 s")
        if args.dead_time is not None:
            if args.dead_time < 0:
                raise PlantConfigError("--dead-time must be >= 0")
            plant = plant.with_dead_time(args.dead_time)
        trace = read_csv(args.trace) if args.trace else builtin(args.scenario, args.seed)
    except (PlantConfigError, TraceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rows = run_policies(trace, plant, args.policy, seed=args.seed, tick_s=args.tick, validate=args.validate,
                        keep_series=bool(args.plot), dtu=args.dtu, refresh_s=args.refresh)
    if args.json:
        for row in rows:
            print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v)
                              for k, v in row.items() if k != "grid_w"}))
    else:
        print(format_table(rows))
    if args.plot:
        window = None
        if args.plot_window:
            try:
                start, end = (int(float(x)) for x in args.plot_window.split(":"))
                window = (max(0, start), min(trace.duration_s, end))
                if window[1] - window[0] < 10:
                    raise ValueError
            except ValueError:
                print("error: --plot-window wants S:E seconds, at least 10 s apart", file=sys.stderr)
                return 2
        plot(rows, trace, plant.site.zero_point_w, args.plot, window)
        if not args.json:
            print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
