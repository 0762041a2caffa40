"""Run-time settings from venus.setting: validated against their ranges, applied, confirmed."""
from __future__ import annotations

import math
from typing import Optional

from common.settings import USER_SETTINGS

RANGES = {s.name: (s.min, s.max) for s in USER_SETTINGS}     # declared once, in common/settings.py


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
