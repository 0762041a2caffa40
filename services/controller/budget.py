"""Feed-in budget and grid target (docs/original-project.md §4.3, §4.4)."""
from __future__ import annotations

from typing import Optional


def feed_in_budget(max_feed_in_w: float, balcony_w: float, voltage_v: Optional[float],
                   dcl_a: Optional[float]) -> Optional[float]:
    """min(MaxFeedIn - balcony, V x DCL), never below 0; None when the battery limit is unknown."""
    if voltage_v is None or dcl_a is None:
        return None
    return max(0.0, min(max_feed_in_w - balcony_w, voltage_v * dcl_a))


def discharge_limit(dcl_a: Optional[float], fallback_a: float) -> Optional[float]:
    """The battery's discharge limit, or the configured fallback when it reports none (0: no fallback)."""
    if dcl_a is not None:
        return dcl_a
    return fallback_a if fallback_a > 0 else None


def battery_unusable(bat, dcl_a: Optional[float], now: float, p) -> Optional[str]:
    """Why the battery state cannot be used for the budget (then only safe minimum limits), or None.

    Its message must be recent (venus_publisher repeats it every ~1.5 s) *and* its values: venus_publisher
    republishes whatever it last saw, so a battery driver that stopped updating looks recent by the message
    alone; `age_s` is how long ago the battery's values last changed on D-Bus. A battery with /Connected 0 is
    published as not present."""
    if not bat.present or bat.recv_t is None or now - bat.recv_t > p.battery_stale_s:
        return "battery stale"
    if bat.value_t is None or now - bat.value_t > p.battery_max_age_s:
        age = "unknown" if bat.value_t is None else f"{now - bat.value_t:.0f} s"
        return f"battery stale (values unchanged for {age})"
    if bat.soc_pct is None or bat.voltage_v is None:
        return "battery stale (no SOC or voltage)"
    if dcl_a is None:
        return "battery reports no discharge limit ([control] battery_fallback_dcl_a = 0)"
    return None


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
