"""Household load and balcony-solar traces at 1 Hz: seeded generators and a CSV reader.

A trace is a plain list of floats (one value per second). `Trace.at(t_s)` repeats it cyclically, so a one-day trace
serves any run length. Generators (all deterministic for a given seed):

* `day_load(seed)`: a 24 h household day — base load with slow drift, fridge cycles, kettles, a pulsed hob and an
  oven (resistive pulses, 20-40 s period), a washing-machine heater, a microwave, TV evening load, small noise.
* `lively_load(seed, duration_s)`: the same appliances compressed so that something happens every minute (demo).
* `quiet_load(seed)`, `step_load()`: for tests and simple demos.
* `solar_day(seed, peak_w)`: a balcony system's output over a day with passing clouds.

CSV format: header `t_s,load_w[,balcony_w]`, one row per second (`read_csv`, `write_csv`).
"""
from __future__ import annotations

import csv
import math
import random
from typing import Optional

DAY_S = 86400


class Trace:
    """A 1 Hz series used cyclically: `at(t_s)` returns the value of second floor(t_s) modulo the length."""

    __slots__ = ("values", "_n")

    def __init__(self, values: list[float]):
        if not values:
            raise ValueError("a trace needs at least one value")
        self.values = [float(v) for v in values]
        self._n = len(self.values)

    def at(self, t_s: float) -> float:
        return self.values[int(t_s) % self._n]

    def __len__(self) -> int:
        return self._n


def _add(values: list[float], start_s: int, duration_s: int, power_w: float) -> None:
    n = len(values)
    for i in range(max(0, start_s), min(n, start_s + duration_s)):
        values[i] += power_w


def _add_pulsed(values: list[float], start_s: int, duration_s: int, power_w: float, period_s: int,
                duty: float) -> None:
    on_s = max(1, int(period_s * duty))
    t = start_s
    while t < start_s + duration_s:
        _add(values, t, min(on_s, start_s + duration_s - t), power_w)
        t += period_s


def _fridge(values: list[float], rng: random.Random, start_s: int, end_s: int) -> None:
    t = start_s + rng.randint(0, 600)
    while t < end_s:
        on_s = rng.randint(600, 1000)
        _add(values, t, 3, 70.0)                 # start spike ~220 W
        _add(values, t, on_s, 150.0)
        t += on_s + rng.randint(1500, 2400)


def _kettle(values: list[float], rng: random.Random, t: int) -> None:
    duration = rng.randint(90, 220)
    _add(values, t, 2, 150.0)                    # inrush
    _add(values, t, duration, rng.uniform(1820.0, 2000.0))


def _hob(values: list[float], rng: random.Random, t: int, duration_s: int) -> None:
    _add_pulsed(values, t, duration_s, rng.uniform(800.0, 1500.0), rng.randint(20, 40), rng.uniform(0.3, 0.6))


def _oven(values: list[float], rng: random.Random, t: int, duration_s: int) -> None:
    _add(values, t, 600, 2100.0)                 # heat-up
    _add_pulsed(values, t + 600, max(0, duration_s - 600), 2100.0, rng.randint(25, 40), rng.uniform(0.3, 0.5))


def _washing_machine(values: list[float], rng: random.Random, t: int) -> None:
    _add(values, t, 300, 120.0)                  # filling, drum
    _add(values, t + 300, rng.randint(900, 1500), rng.uniform(1900.0, 2200.0))  # heater
    _add_pulsed(values, t + 1800, 3000, 250.0, 40, 0.6)                        # drum motor
    _add(values, t + 4800, 600, 450.0)                                          # spin


def _noise(values: list[float], rng: random.Random, sigma_w: float) -> None:
    for i in range(len(values)):
        values[i] = max(0.0, values[i] + rng.gauss(0.0, sigma_w))


def day_load(seed: int = 1, base_w: float = 110.0) -> list[float]:
    """A 24 h household day at 1 Hz, starting at midnight."""
    rng = random.Random(seed)
    values = [0.0] * DAY_S
    phase = rng.uniform(0, 2 * math.pi)
    for i in range(DAY_S):
        hour = i / 3600.0
        evening = 60.0 * math.exp(-((hour - 20.0) / 2.5) ** 2) + 40.0 * math.exp(-((hour - 7.5) / 1.2) ** 2)
        values[i] = base_w + 15.0 * math.sin(2 * math.pi * i / 5400.0 + phase) + evening
    _fridge(values, rng, 0, DAY_S)
    for hour in (7.0, 10.5, 15.5, 19.0):                 # kettles
        _kettle(values, rng, int((hour + rng.uniform(-0.5, 0.5)) * 3600))
    _hob(values, rng, int(12.0 * 3600 + rng.randint(0, 1800)), rng.randint(900, 1500))     # lunch
    _oven(values, rng, int(18.0 * 3600 + rng.randint(0, 1200)), 2400)                      # dinner
    _hob(values, rng, int(18.7 * 3600 + rng.randint(0, 600)), rng.randint(600, 1200))
    _washing_machine(values, rng, int(9.5 * 3600 + rng.randint(0, 3600)))
    for hour in (8.2, 13.0, 21.0):                        # microwave
        _add(values, int(hour * 3600 + rng.randint(0, 900)), rng.randint(120, 400), 1350.0)
    _add(values, int(19.5 * 3600), 3 * 3600, 124.0)      # TV
    _noise(values, rng, 3.0)
    return values


def lively_load(seed: int = 1, duration_s: int = 3600, base_w: float = 150.0) -> list[float]:
    """Something happens every minute or two: for the demo. Repeats after `duration_s`."""
    rng = random.Random(seed)
    values = [base_w] * duration_s
    _fridge(values, rng, 0, duration_s)
    t = 20
    while t < duration_s - 60:
        kind = rng.choice(("kettle", "hob", "hob", "microwave", "step", "step", "step", "washer_heat", "oven"))
        if kind == "kettle":
            _kettle(values, rng, t)
        elif kind == "hob":
            _add_pulsed(values, t, rng.randint(90, 240), rng.uniform(500.0, 900.0), rng.randint(20, 40),
                        rng.uniform(0.3, 0.6))
        elif kind == "oven":
            _add_pulsed(values, t, rng.randint(120, 240), rng.uniform(600.0, 900.0), rng.randint(20, 40), 0.5)
        elif kind == "microwave":
            _add(values, t, rng.randint(60, 150), 1000.0)
        elif kind == "washer_heat":
            _add(values, t, rng.randint(120, 300), rng.uniform(400.0, 700.0))
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


def solar_day(seed: int = 1, peak_w: float = 600.0, sunrise_h: float = 6.0, sunset_h: float = 20.0) -> list[float]:
    """Balcony solar output over a day (midnight start) with passing clouds."""
    rng = random.Random(seed + 1000)
    values = [0.0] * DAY_S
    cloud = 1.0
    target = 1.0
    for i in range(DAY_S):
        hour = i / 3600.0
        if hour <= sunrise_h or hour >= sunset_h:
            continue
        if rng.random() < 1.0 / 300.0:                     # a new cloud situation every ~5 min
            target = 1.0 if rng.random() < 0.6 else rng.uniform(0.2, 0.7)
        cloud += (target - cloud) * 0.05
        x = (hour - sunrise_h) / (sunset_h - sunrise_h)
        values[i] = peak_w * math.sin(math.pi * x) ** 1.5 * cloud
    return values


def read_csv(path: str) -> tuple[list[float], Optional[list[float]]]:
    """Read `t_s,load_w[,balcony_w]` (1 Hz). Returns (load, balcony or None)."""
    load: list[float] = []
    balcony: list[float] = []
    with open(path, newline="") as handle:
        reader = csv.reader(handle)
        header = [h.strip() for h in next(reader)]
        if header[:2] != ["t_s", "load_w"]:
            raise ValueError(f"{path}: header must start with t_s,load_w (got {header})")
        has_balcony = len(header) > 2 and header[2] == "balcony_w"
        for row in reader:
            if not row:
                continue
            load.append(float(row[1]))
            if has_balcony:
                balcony.append(float(row[2]))
    return load, (balcony if has_balcony else None)


def write_csv(path: str, load: list[float], balcony: Optional[list[float]] = None) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["t_s", "load_w", "balcony_w"] if balcony is not None else ["t_s", "load_w"])
        for i, value in enumerate(load):
            if balcony is not None:
                writer.writerow([i, round(value, 1), round(balcony[i % len(balcony)], 1)])
            else:
                writer.writerow([i, round(value, 1)])
