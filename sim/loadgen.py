"""Household load and balcony-solar traces at 1 Hz, one generator for the simulators and the benchmark.

A `Trace` is household load `load_w[i]` and balcony solar `balcony_w[i]` for second i (W, >= 0); grid power is
load - balcony - inverter output (+ = import). `load_at(t_s)` / `balcony_at(t_s)` repeat the trace cyclically, so a
one-day trace serves any run length. Appliance shapes follow docs/control.md §7 (antgen AMBAL fits at 1 Hz and the
CREST appliance table): kettle 1.82-2.0 kW for 61-220 s with an inrush, oven 2125 W, hob plates 760-1500 W, resistive
hob/oven pulses with 20-40 s periods, induction bursts of a few seconds. Everything is deterministic for a seed.

Benchmark scenarios (`SCENARIOS`, `builtin(name, seed)`):

| name | length | content |
|---|---|---|
| fridge | 2 h | base load with slow drift, fridge and freezer cycles (start spikes), small steps (TV, lights) |
| kettle | 1 h | base + fridge, four kettles (2 kW, inrush), a toaster (730 W) and a microwave (1.35 kW) |
| hob | 1 h | base + fridge, pulsed hob plates and an oven (20-40 s period, 30-60 % duty), induction bursts |
| overload | 1 h | long loads above capacity (washing-machine heater, dryer, oven) with drops to base load |
| balcony_clouds | 2 h | 600 W balcony solar with fast cloud transients under a lively household load |
| day | 24 h | a mixed day: drift, fridge, kettles, microwaves, pulsed hob + oven, washing machine, TV, balcony solar |

Simulator loads: `lively_load(seed, duration_s)` (something every few minutes: the demo), `quiet_load(seed)`,
`step_load()`, `solar_day(seed, peak_w)`.

CSV: header `t_s,load_w[,balcony_w]`, one row per second (`read_csv`, `write_csv`).
"""
from __future__ import annotations

import csv
import math
import random
from typing import Callable, Optional

DAY_S = 86400


class Trace:
    """Load and balcony solar at 1 Hz (balcony: zeros when not given), used cyclically by the plant."""

    __slots__ = ("load_w", "balcony_w", "name")

    def __init__(self, load_w: list[float], balcony_w: Optional[list[float]] = None, name: str = "trace"):
        if not load_w:
            raise ValueError("a trace needs at least one value")
        self.load_w = [float(v) for v in load_w]
        self.balcony_w = [0.0] * len(self.load_w) if balcony_w is None else [float(v) for v in balcony_w]
        if len(self.balcony_w) != len(self.load_w):
            raise ValueError("load and balcony traces must be equally long")
        self.name = name

    @property
    def duration_s(self) -> int:
        return len(self.load_w)

    @property
    def has_balcony(self) -> bool:
        return any(v > 0 for v in self.balcony_w)

    def load_at(self, t_s: float) -> float:
        return self.load_w[int(t_s) % len(self.load_w)]

    def balcony_at(self, t_s: float) -> float:
        return self.balcony_w[int(t_s) % len(self.balcony_w)]


class TraceError(ValueError):
    """A trace file is unreadable or malformed."""


# ---------------------------------------------------------------- building blocks
def _add(values: list[float], start_s: int, duration_s: int, power_w: float) -> None:
    for i in range(max(0, start_s), min(len(values), start_s + duration_s)):
        values[i] += power_w


def _pulsed(values: list[float], start_s: int, duration_s: int, power_w: float, period_s: int, duty: float) -> None:
    on_s = max(1, int(round(period_s * duty)))
    t = start_s
    while t < start_s + duration_s:
        _add(values, t, min(on_s, start_s + duration_s - t), power_w)
        t += period_s


def _base(n: int, rng: random.Random, base_w: float, drift_w: float = 15.0) -> list[float]:
    phase = rng.uniform(0, 2 * math.pi)
    return [base_w + drift_w * math.sin(2 * math.pi * i / 5400.0 + phase) for i in range(n)]


def _fridge(values: list[float], rng: random.Random, power_w: float = 150.0, on_s=(600, 1000),
            off_s=(1200, 2000)) -> None:
    t = rng.randint(0, 900)
    while t < len(values):
        on = rng.randint(*on_s)
        _add(values, t, 3, 70.0)                         # compressor start spike (~220 W)
        _add(values, t, on, power_w)
        t += on + rng.randint(*off_s)


def _kettle(values: list[float], rng: random.Random, t: int) -> None:
    _add(values, t, 2, 150.0)                            # inrush
    _add(values, t, rng.randint(61, 220), rng.uniform(1820.0, 2000.0))


def _hob(values: list[float], rng: random.Random, t: int, duration_s: int, power_w: Optional[float] = None) -> None:
    _pulsed(values, t, duration_s, power_w or rng.uniform(760.0, 1500.0), rng.randint(20, 40), rng.uniform(0.3, 0.6))


def _induction(values: list[float], rng: random.Random, t: int, duration_s: int) -> None:
    end = t + duration_s
    while t < end:
        burst = rng.randint(2, 6)
        _add(values, t, burst, rng.uniform(1000.0, 1800.0))
        t += burst + rng.randint(3, 10)


def _oven(values: list[float], rng: random.Random, t: int, duration_s: int) -> None:
    _add(values, t, 600, 2125.0)                         # heat-up
    _pulsed(values, t + 600, max(0, duration_s - 600), 2125.0, rng.randint(25, 40), rng.uniform(0.3, 0.5))


def _washing_machine(values: list[float], rng: random.Random, t: int) -> None:
    _add(values, t, 300, 120.0)
    _add(values, t + 300, rng.randint(900, 1500), rng.uniform(2000.0, 2200.0))     # heater
    _pulsed(values, t + 1800, 3000, 250.0, 40, 0.6)                               # drum
    _add(values, t + 4800, 600, 450.0)                                            # spin


def _noise(values: list[float], rng: random.Random, sigma_w: float) -> None:
    for i in range(len(values)):
        values[i] = max(0.0, values[i] + rng.gauss(0.0, sigma_w))


def _solar(n: int, rng: random.Random, peak_w: float, start_h: float, sunrise_h: float = 6.0,
           sunset_h: float = 20.0, change_per_s: float = 1 / 120, fast: float = 0.15) -> list[float]:
    """Balcony output: sun elevation shape times a cloud factor that changes every ~2 min, moving fast."""
    values = [0.0] * n
    cloud, target = 1.0, 1.0
    for i in range(n):
        hour = start_h + i / 3600.0
        if rng.random() < change_per_s:
            target = 1.0 if rng.random() < 0.5 else rng.uniform(0.15, 0.7)
        cloud += (target - cloud) * fast
        if sunrise_h < hour < sunset_h:
            x = (hour - sunrise_h) / (sunset_h - sunrise_h)
            values[i] = peak_w * math.sin(math.pi * x) ** 1.5 * cloud
    return values


# ---------------------------------------------------------------- scenarios
def fridge(seed: int = 1) -> Trace:
    rng = random.Random(seed)
    n = 2 * 3600
    load = _base(n, rng, 120.0)
    _fridge(load, rng, 150.0)
    _fridge(load, rng, 65.0, on_s=(1980, 3960), off_s=(1800, 3600))                 # freezer
    t = 300
    while t < n:                                                                     # lights, TV, PC: small steps
        _add(load, t, rng.randint(120, 900), rng.choice((40.0, 60.0, 124.0, 141.0)))
        t += rng.randint(300, 900)
    _noise(load, rng, 3.0)
    return Trace(load, name="fridge")


def kettle(seed: int = 1) -> Trace:
    rng = random.Random(seed)
    n = 3600
    load = _base(n, rng, 140.0)
    _fridge(load, rng)
    for start in (240, 1100, 2000, 2900):
        _kettle(load, rng, start + rng.randint(0, 200))
    _add(load, 700 + rng.randint(0, 100), rng.randint(120, 180), 730.0)             # toaster
    _add(load, 1600 + rng.randint(0, 100), rng.randint(120, 300), 1350.0)           # microwave
    _add(load, 2500 + rng.randint(0, 100), rng.randint(150, 240), 450.0)            # something mid-range
    _noise(load, rng, 3.0)
    return Trace(load, name="kettle")


def hob(seed: int = 1) -> Trace:
    rng = random.Random(seed)
    n = 3600
    load = _base(n, rng, 130.0)
    _fridge(load, rng)
    _hob(load, rng, 180, 900, power_w=850.0)                                         # one plate, ~850 W pulses
    _hob(load, rng, 600, 600)                                                        # a second plate overlapping
    _induction(load, rng, 1500, 300)
    _oven(load, rng, 1900, 1500)
    _noise(load, rng, 3.0)
    return Trace(load, name="hob")


def overload(seed: int = 1) -> Trace:
    rng = random.Random(seed)
    n = 3600
    load = _base(n, rng, 150.0)
    _fridge(load, rng)
    _add(load, 120, 900, rng.uniform(2000.0, 2200.0))                               # washing-machine heater
    _pulsed(load, 1020, 400, 250.0, 40, 0.6)
    _add(load, 1500, 1200, 2500.0)                                                  # dryer ...
    _pulsed(load, 1500, 1200, -1500.0, 90, 0.3)                                     # ... heater cycling to 1 kW
    _add(load, 3000, 400, 1100.0)                                                   # heater fan
    _kettle(load, rng, 3100)
    _noise(load, rng, 3.0)
    return Trace(load, name="overload")


def balcony_clouds(seed: int = 1) -> Trace:
    rng = random.Random(seed)
    n = 2 * 3600
    load = _base(n, rng, 250.0, drift_w=30.0)
    _fridge(load, rng)
    t = 200
    while t < n - 300:
        kind = rng.choice(("kettle", "step", "step", "microwave", "hob"))
        if kind == "kettle":
            _kettle(load, rng, t)
        elif kind == "microwave":
            _add(load, t, rng.randint(60, 240), 1350.0)
        elif kind == "hob":
            _hob(load, rng, t, rng.randint(120, 300))
        else:
            _add(load, t, rng.randint(60, 600), rng.uniform(100.0, 450.0))
        t += rng.randint(240, 600)
    _noise(load, rng, 3.0)
    balcony = _solar(n, rng, 600.0, start_h=11.0)
    return Trace(load, balcony, "balcony_clouds")


def day(seed: int = 1) -> Trace:
    rng = random.Random(seed)
    n = DAY_S
    load = [0.0] * n
    phase = rng.uniform(0, 2 * math.pi)
    for i in range(n):
        hour = i / 3600.0
        shape = 60.0 * math.exp(-((hour - 20.0) / 2.5) ** 2) + 40.0 * math.exp(-((hour - 7.5) / 1.2) ** 2) \
            + 25.0 * math.exp(-((hour - 12.5) / 2.0) ** 2)
        load[i] = 110.0 + 15.0 * math.sin(2 * math.pi * i / 5400.0 + phase) + shape
    _fridge(load, rng)
    _fridge(load, rng, 65.0, on_s=(1980, 3960), off_s=(1800, 3600))
    for hour in (7.0, 10.5, 15.5, 19.0):
        _kettle(load, rng, int((hour + rng.uniform(-0.5, 0.5)) * 3600))
    for hour in (8.2, 13.0, 21.0):
        _add(load, int(hour * 3600 + rng.randint(0, 900)), rng.randint(120, 400), 1350.0)
    _add(load, int(7.3 * 3600), 150, 730.0)                                          # toaster
    _hob(load, rng, int(12.0 * 3600 + rng.randint(0, 600)), 1200, power_w=850.0)     # lunch: 20 min pulsed hob
    _induction(load, rng, int(12.3 * 3600), 240)
    _oven(load, rng, int(18.0 * 3600 + rng.randint(0, 600)), 2400)
    _hob(load, rng, int(18.8 * 3600), 900)
    _washing_machine(load, rng, int(9.5 * 3600 + rng.randint(0, 1800)))
    _add(load, int(19.5 * 3600), 3 * 3600, 124.0)                                    # TV
    _add(load, int(14.0 * 3600), 4 * 3600, 141.0)                                    # PC
    _noise(load, rng, 3.0)
    balcony = _solar(n, rng, 600.0, start_h=0.0, change_per_s=1 / 300)
    return Trace(load, balcony, "day")


SCENARIOS: dict[str, Callable[[int], Trace]] = {
    "fridge": fridge, "kettle": kettle, "hob": hob, "overload": overload,
    "balcony_clouds": balcony_clouds, "day": day,
}


def builtin(name: str, seed: int = 1) -> Trace:
    try:
        return SCENARIOS[name](seed)
    except KeyError:
        raise TraceError(f"unknown scenario {name!r} (known: {', '.join(SCENARIOS)})") from None


def read_csv(path: str) -> Trace:
    """Read `t_s,load_w[,balcony_w]` at 1 Hz. Bad numbers are errors (a trace is our own input, not hostile)."""
    load: list[float] = []
    balcony: list[float] = []
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = [h.strip() for h in next(reader, [])]
            if header[:2] != ["t_s", "load_w"]:
                raise TraceError(f"{path}: header must start with t_s,load_w (got {','.join(header)!r})")
            has_balcony = len(header) > 2 and header[2] == "balcony_w"
            for lineno, row in enumerate(reader, start=2):
                if not row or not "".join(row).strip():
                    continue
                try:
                    values = [float(row[1])] + ([float(row[2])] if has_balcony else [])
                except (IndexError, ValueError):
                    raise TraceError(f"{path}:{lineno}: not a number row: {row!r}") from None
                if not all(math.isfinite(v) for v in values):
                    raise TraceError(f"{path}:{lineno}: not finite: {row!r}")
                load.append(max(0.0, values[0]))
                balcony.append(max(0.0, values[1]) if has_balcony else 0.0)
    except OSError as exc:
        raise TraceError(f"{path}: cannot read: {exc.strerror}") from None
    if len(load) < 10:
        raise TraceError(f"{path}: too short ({len(load)} rows)")
    name = path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    return Trace(load, balcony, name)


def write_csv(path: str, trace: Trace) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["t_s", "load_w", "balcony_w"])
        for i, (load, balcony) in enumerate(zip(trace.load_w, trace.balcony_w)):
            writer.writerow([i, round(load, 1), round(balcony, 1)])


# ---------------------------------------------------------------- simulator loads
def lively_load(seed: int = 1, duration_s: int = 3600, base_w: float = 150.0) -> list[float]:
    """Something happens every few minutes (the demo): kettles, hob and oven pulses, microwave, steps."""
    rng = random.Random(seed)
    values = [base_w] * duration_s
    _fridge(values, rng)
    t = 20
    while t < duration_s - 60:
        kind = rng.choice(("kettle", "hob", "hob", "microwave", "step", "step", "step", "washer_heat", "oven"))
        if kind == "kettle":
            _kettle(values, rng, t)
        elif kind == "hob":
            _hob(values, rng, t, rng.randint(90, 240))
        elif kind == "oven":
            _pulsed(values, t, rng.randint(120, 240), 2125.0, rng.randint(25, 40), rng.uniform(0.3, 0.5))
        elif kind == "microwave":
            _add(values, t, rng.randint(60, 150), 1350.0)
        elif kind == "washer_heat":
            _add(values, t, rng.randint(120, 300), rng.uniform(2000.0, 2200.0))
        else:
            _add(values, t, rng.randint(60, 240), rng.uniform(100.0, 450.0))
        t += rng.randint(150, 300)
    _noise(values, rng, 3.0)
    return values


def quiet_load(seed: int = 1, base_w: float = 200.0, duration_s: int = 600) -> list[float]:
    rng = random.Random(seed)
    values = [base_w] * duration_s
    _noise(values, rng, 2.0)
    return values


def step_load(low_w: float = 150.0, high_w: float = 650.0, period_s: int = 120) -> list[float]:
    """`low_w` for half the period, then `high_w`: clean steps for response tests."""
    half = period_s // 2
    return [low_w] * half + [high_w] * (period_s - half)


def solar_day(seed: int = 1, peak_w: float = 600.0) -> list[float]:
    """Balcony solar output over a day (midnight start) with a cloud change every ~5 min."""
    return _solar(DAY_S, random.Random(seed + 1000), peak_w, start_h=0.0, change_per_s=1 / 300)
