"""The bus tap: `python -m common.busmon [PREFIX ...] [--json] [--stats] [--rundir DIR | --config PATH]`.

Connects to every publisher in the topology and prints each message decoded, one line each:
time, source, topic, seq and body. Works while services restart (ZeroMQ reconnects by itself).
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from datetime import datetime

from common.bus import SERVICES, Subscriber
from common.clock import SYSTEM_CLOCK
from common.config import ConfigError, load_config, SCHEMA, CONFIG_EXIT_CODE


def _compact(body: dict) -> str:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False, default=str)


def format_line(msg) -> str:
    stamp = datetime.fromtimestamp(msg.t_wall).strftime("%H:%M:%S.%f")[:-3]
    return f"{stamp} {msg.src:<15} {msg.topic:<14} #{msg.seq:<6} {_compact(msg.body)}"


def format_json(msg) -> str:
    return _compact({"t_wall": msg.t_wall, "t_mono": msg.t_mono, "src": msg.src, "topic": msg.topic,
                     "seq": msg.seq, "body": msg.body})


def format_stats(sub: Subscriber, elapsed_s: float) -> str:
    stats = sub.stats
    lines = [f"--- {elapsed_s:.0f} s"]
    for topic in sorted(stats.received):
        lines.append(f"{topic:<16} {stats.received[topic]:>7} msgs {stats.received[topic] / max(elapsed_s, 1e-9):8.2f}/s")
    for src in SERVICES:
        if stats.gaps.get(src) or stats.restarts.get(src):
            lines.append(f"{src:<16} seq gaps {stats.gaps.get(src, 0)}, restarts {stats.restarts.get(src, 0)}")
    if stats.dropped:
        lines.append("dropped: " + ", ".join(f"{k} {v}" for k, v in sorted(stats.dropped.items())))
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m common.busmon", description=__doc__.splitlines()[0])
    parser.add_argument("prefixes", nargs="*", metavar="PREFIX", help="topic prefixes to show (default: all)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--stats", action="store_true", help="rate per topic and seq gaps, every --every s")
    parser.add_argument("--every", type=float, default=5.0, help="s between --stats reports (default 5)")
    parser.add_argument("--rundir", help="the bus run folder (default: from --config, else [bus] rundir's default)")
    parser.add_argument("--config", help="config.ini to read [bus] rundir from")
    parser.add_argument("--count", type=int, default=0, help="stop after N messages (0: never)")
    parser.add_argument("--duration", type=float, default=0.0, help="stop after S seconds (0: never)")
    args = parser.parse_args(argv)

    rundir = args.rundir
    if rundir is None and args.config:
        try:
            rundir = load_config(args.config).bus.rundir
        except ConfigError as exc:
            print(f"busmon: {exc}", file=sys.stderr)
            return CONFIG_EXIT_CODE
    rundir = rundir or SCHEMA["bus"].keys["rundir"].default

    stop = False

    def _stop(*_):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    sub = Subscriber(rundir, topics=args.prefixes or [""], services=SERVICES)
    start = SYSTEM_CLOCK.monotonic()
    next_stats = start + args.every
    shown = 0
    try:
        while not stop:
            now = SYSTEM_CLOCK.monotonic()
            if args.duration and now - start >= args.duration:
                break
            msg = sub.recv(timeout_s=0.2)
            if msg is not None and not args.stats:
                print(format_json(msg) if args.json else format_line(msg), flush=True)
                shown += 1
                if args.count and shown >= args.count:
                    break
            if args.stats and SYSTEM_CLOCK.monotonic() >= next_stats:
                print(format_stats(sub, SYSTEM_CLOCK.monotonic() - start), flush=True)
                next_stats += args.every
    except BrokenPipeError:
        return 0
    finally:
        if args.stats:
            print(format_stats(sub, SYSTEM_CLOCK.monotonic() - start), flush=True)
        sub.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
