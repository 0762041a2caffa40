"""The plausible range of every kind of number a device reports, declared once; the check used at the edge.

A device answer is hostile input: a number that is not finite, not a number, or outside its range is never used.
Each client turns a failed check into its named error (kind "invalid") or, for a value it documents as optional,
into None. Python compares an int of any size with a float exactly, so a 400-digit integer is simply out of
range here (never an OverflowError).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional


@dataclass(frozen=True)
class Range:
    low: float
    high: float
    unit: str


POWER_W = Range(-100_000, 100_000, "W")            # a household meter phase or sum, an inverter's AC/DC power
RATING_W = Range(0, 10_000, "W")                   # an inverter's rated power (micro-inverters are <= 3 kW)
VOLTAGE_V = Range(0, 1_000, "V")
CURRENT_A = Range(-1_000, 1_000, "A")
TEMPERATURE_C = Range(-50, 150, "°C")
PERCENT = Range(0, 100, "%")                        # limit_relative
ENERGY_KWH = Range(0, 1e10, "kWh")                 # lifetime counters
ENERGY_WH = Range(0, 1e13, "Wh")
AGE_S = Range(0, 1e9, "s")                         # OpenDTU data_age (about the ESP's uptime when never polled)
AGE_MS = Range(0, 1e12, "ms")
TIMER_S = Range(0, 1e7, "s")                       # relay flip-back timers
UNIX_TIME_S = Range(0, 1e11, "s")
ORDER = Range(0, 1_000_000, "")                    # OpenDTU's UI order of an inverter


def why_not(value: Any, rng: Range) -> Optional[str]:
    """None when `value` is a finite number within `rng`, else the reason it is not."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"not a number ({type(value).__name__})"
    if isinstance(value, float) and not math.isfinite(value):
        return "not finite"
    if not rng.low <= value <= rng.high:
        shown = f"{value:.4g}" if isinstance(value, float) or abs(value) < 10 ** 15 else "a huge integer"
        return f"{shown} outside {rng.low:g}..{rng.high:g} {rng.unit}".rstrip()
    return None


def in_range(value: Any, rng: Range) -> Optional[float]:
    """`value` as a float when it passes `why_not`, else None."""
    return None if why_not(value, rng) is not None else float(value)
