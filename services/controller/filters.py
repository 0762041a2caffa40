"""The seed's consumption filter (docs/original-project.md §4.1): export and big drops at once, rises through an SMA;
the project law's small-change load filter."""
from __future__ import annotations

import math
from typing import Optional

GRID_FAILURE_W = -100   # the seed assumes export when the grid meter cannot be read (ramps down)


def sma(prev_w: int, sample_w: float, factor: int) -> int:
    """SMA(f, x) = x if f = 0 else int((P*f + x)/(f + 1)); int() truncates toward zero as in the seed."""
    if factor == 0:
        return int(sample_w)
    return int((prev_w * factor + sample_w) / (factor + 1))


def consumption_filter(prev_w: int, sample_w: float, accuracy_w: float, feed_in_factor: int,
                       drop_w: float, consume_factor: int) -> tuple[int, str]:
    """New filtered consumption P and which branch was taken. A non-finite sample leaves P as it is (the
    controller's input gate drops such samples before; the filter never takes inf or NaN in)."""
    if not math.isfinite(sample_w):
        return prev_w, "invalid sample"
    if sample_w < -accuracy_w:
        return sma(prev_w, sample_w, feed_in_factor), "export"
    if prev_w - sample_w > drop_w:
        return int(sample_w), "drop"
    return sma(prev_w, sample_w, consume_factor), "sma"


def band_smooth(prev_w: Optional[float], sample_w: float, band_w: float, alpha: float) -> float:
    """The project law's load estimate filter: a sample within `band_w` of the previous value is smoothed
    (exponentially, weight `alpha`), a larger move is taken at once (a load step is followed without delay).
    Meter noise and the load's own second-to-second noise cannot be followed through seconds of latency; following
    them only adds the output's moves to the grid's variance (and commands). A non-finite sample leaves the
    estimate as it is (ValueError when there is none yet)."""
    if not math.isfinite(sample_w):
        if prev_w is None:
            raise ValueError(f"load estimate: sample {sample_w!r} W is not finite")
        return prev_w
    if prev_w is None or abs(sample_w - prev_w) > band_w:
        return sample_w
    return prev_w + alpha * (sample_w - prev_w)
