"""Feed-in budget and grid target (docs/original-project.md §4.3, §4.4)."""
from __future__ import annotations

from typing import Optional


def feed_in_budget(max_feed_in_w: float, balcony_w: float, voltage_v: Optional[float],
                   dcl_a: Optional[float]) -> Optional[float]:
    """min(MaxFeedIn - balcony, V x DCL), never below 0; None when the battery limit is unknown."""
    if voltage_v is None or dcl_a is None:
        return None
    return max(0.0, min(max_feed_in_w - balcony_w, voltage_v * dcl_a))


def sun_shines(balcony_w: Optional[float], balcony_readable: bool, threshold_w: float) -> bool:
    return balcony_readable and balcony_w is not None and balcony_w > threshold_w


def target_offset(zero_point_w: int, soc_pct: Optional[float], power_feed_in_soc: int, sfm: int,
                  sun: bool) -> tuple[float, str]:
    """The seed's offset: set value = P + offset, so the loop steers the grid towards -offset.

    Uses the README / commit 673e2dc form of the PowerFeedInSoc boost, offset = ZeroPoint x (Soc - PowerFeedInSoc)
    (75 W at 99 % with 96), and charge limitation no longer zeroes the offset (673e2dc), not the 1f875b0 ramp.
    """
    if sun and soc_pct is not None and soc_pct > power_feed_in_soc:
        offset = zero_point_w * (min(soc_pct, 100.0) - power_feed_in_soc)
        return offset, f"SOC {soc_pct:g} % > PowerFeedInSoc {power_feed_in_soc} % with sun: export {offset:g} W"
    if sun and sfm > 100:
        return 0.0, f"sun and SocFloatingMax {sfm} % > 100: aim at 0 W"
    return -float(zero_point_w), f"ZeroPoint: aim at {zero_point_w} W import"
