"""The seed's seasonal SOC logic (docs/original-project.md §4.9): SocFloatingMax (SFM) and FeedInMinSoc."""
from __future__ import annotations

from typing import Optional

from services.controller.model import Season

BASESOC = 54
MINMAXSOC = 74
MAXCALCSOC = 125
MAXSOC = 100
FEED_IN_BLOCKED_SOC = 125       # FeedInMinSoc when the Multi also discharges heavily and DCL is low
LARGE_DISCHARGE_MARGIN_A = 10.0
LOW_DCL_A = 52.0


def track_soc(season: Season, soc_pct: float) -> Optional[str]:
    """Feed one SOC reading. On every integer SOC change, a turn from rising to falling makes the previous SOC a
    local maximum m, which moves SFM (rules applied in order). Returns a reason when SFM changed, else None."""
    soc = int(soc_pct)
    if soc == season.soc:
        return None
    increment = soc - season.soc
    reason = None
    if season.increment > 0 and increment < 0:
        peak = season.soc
        before = season.sfm
        if peak == MAXSOC:
            season.sfm = MAXCALCSOC
        elif peak < MAXSOC and peak > season.sfm:
            season.sfm += int((peak - season.sfm + 1) / 2)
        if (peak >= MINMAXSOC or season.sfm > MINMAXSOC) and peak < season.sfm:
            season.sfm -= 1
        if season.sfm != before:
            reason = f"season: SOC peak {peak} % moved SocFloatingMax {before} -> {season.sfm} %"
    season.increment = increment
    season.soc = soc
    return reason


def feed_in_min_soc(sfm: int, battery_current_a: Optional[float] = None, inverter_draw_a: Optional[float] = None,
                    dcl_a: Optional[float] = None) -> int:
    """108 - min(SFM, 100): 34 % at SFM 74, 18 % at 90, 8 % at >= 100. 125 (no feeding) when the battery
    discharges more than the inverters draw + 10 A and DCL <= 52 A."""
    if battery_current_a is not None and dcl_a is not None:
        discharge_a = -battery_current_a
        if discharge_a > (inverter_draw_a or 0.0) + LARGE_DISCHARGE_MARGIN_A and dcl_a <= LOW_DCL_A:
            return FEED_IN_BLOCKED_SOC
    return BASESOC - (min(sfm, MAXSOC) - BASESOC)
