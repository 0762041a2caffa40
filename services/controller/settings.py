"""Run-time settings from venus.setting: validated against their ranges, applied, confirmed."""
from __future__ import annotations

import math
from typing import Optional

RANGES = {
    "max_feed_in": (0, 800),
    "power_feed_in_soc": (10, 99),
    "soc_floating_max": (74, 125),
    "zero_point": (0, 200),
}


def validate_setting(name, value) -> tuple[Optional[int], str]:
    """(int value, "") when acceptable, else (None, why)."""
    if name not in RANGES:
        return None, f"unknown setting {name!r}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None, f"{name}: not a number"
    if isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            return None, f"{name} = {value!r}: not a whole number"
        value = int(value)
    low, high = RANGES[name]
    if not low <= value <= high:
        return None, f"{name} = {value}: outside {low}..{high}"
    return value, ""
