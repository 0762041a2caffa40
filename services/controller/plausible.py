"""The controller's input gate: every number a body carries must be plausible before the core uses it.

The bus already drops non-finite numbers and any number beyond common/messages.py's MAX_ABS_NUM; this gate
knows what each value means. A value outside its range is replaced by None (unknown), which the core already
handles by moving toward less output: a grid sample without a valid power or time is not taken (the grid goes
stale), a battery without a valid SOC, voltage or discharge limit is not usable (safe minimum), an inverter of
unknown size counts at `unknown_max_w` against the cap. So no input, however absurd, makes a filter or estimator
non-finite (1.8e308 W twice summed to inf, and inf - inf to NaN, in the seed filter).

A `*_t_mono` time may not lie in the future beyond FUTURE_TOLERANCE_S: every process reads the same monotonic
clock, so a sample from the future is a lie that would keep it "fresh" for as long as it pretends.
"""
from __future__ import annotations

import math

FUTURE_TOLERANCE_S = 5.0

POWER_W = (-100_000.0, 100_000.0)        # a household connection: 3 x 63 A x 230 V is 43 kW
INVERTER_W = (-100.0, 10_000.0)          # a micro-inverter (the largest Hoymiles are 2 to 3 kW)
PERCENT = (0.0, 100.0)

RANGES: dict[str, dict[str, tuple[float, float]]] = {
    "meter.grid": {"power_w": POWER_W},
    "meter.balcony": {"power_w": POWER_W},
    "dtu.inverter": {
        "ac_power_w": INVERTER_W, "dc_power_w": INVERTER_W, "ac_voltage_v": (0.0, 500.0),
        "dc_voltage_v": (0.0, 1000.0), "dc_current_a": (-100.0, 100.0), "temperature_c": (-60.0, 200.0),
        "limit_pct": PERCENT, "limit_w": INVERTER_W, "max_power_w": (0.0, 10_000.0), "data_age_s": (0.0, 1e6),
    },
    "dtu.ack": {"limit_pct": PERCENT, "latency_s": (0.0, 3600.0)},
    "venus.battery": {
        "soc_pct": PERCENT, "voltage_v": (0.0, 1000.0), "current_a": (-10_000.0, 10_000.0),
        "ccl_a": (0.0, 10_000.0), "dcl_a": (0.0, 10_000.0), "temperature_c": (-60.0, 200.0), "age_s": (0.0, 1e9),
    },
}


def _finite(value) -> bool:
    return not isinstance(value, float) or math.isfinite(value)     # math.isfinite(10**400) would raise


def _in(value, low: float, high: float) -> bool:
    return _finite(value) and low <= value <= high


def clean(topic: str, body: dict, now: float) -> dict:
    """`body` with every implausible number set to None (a copy if anything changed)."""
    ranges = RANGES.get(topic, {})
    out = body
    for name, value in body.items():
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if name.endswith("_t_mono"):
            ok = _in(value, 0.0, now + FUTURE_TOLERANCE_S)
        else:
            ok = _in(value, *ranges[name]) if name in ranges else _finite(value)
        if not ok:
            if out is body:
                out = dict(body)
            out[name] = None
    return out
