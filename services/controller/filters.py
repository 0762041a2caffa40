"""The seed's consumption filter (seed-behaviour §4.1): export and big drops at once, rises through an SMA."""
from __future__ import annotations

GRID_FAILURE_W = -100   # the seed assumes export when the grid meter cannot be read (ramps down)


def sma(prev_w: int, sample_w: float, factor: int) -> int:
    """SMA(f, x) = x if f = 0 else int((P*f + x)/(f + 1)); int() truncates toward zero as in the seed."""
    if factor == 0:
        return int(sample_w)
    return int((prev_w * factor + sample_w) / (factor + 1))


def consumption_filter(prev_w: int, sample_w: float, accuracy_w: float, feed_in_factor: int,
                       drop_w: float, consume_factor: int) -> tuple[int, str]:
    """New filtered consumption P and which branch was taken."""
    if sample_w < -accuracy_w:
        return sma(prev_w, sample_w, feed_in_factor), "export"
    if prev_w - sample_w > drop_w:
        return int(sample_w), "drop"
    return sma(prev_w, sample_w, consume_factor), "sma"
