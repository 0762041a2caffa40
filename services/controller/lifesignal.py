"""The life signal (docs/original-project.md §4.10): each interval, keep the relay alive or let it switch off."""
from __future__ import annotations

from typing import Optional

EARLY_ON_SOC_MARGIN_PCT = 2.0    # back on before the next interval only this far above FeedInMinSoc


def relay_decision(dtu_samples_in_window: int, soc_pct: Optional[float], feed_in_min_soc: float,
                   negative_grid_counter: int, negative_grid_loops: int, stale: list,
                   soc_margin_pct: float = 0.0) -> tuple[bool, str]:
    """Keep alive only with fresh DTU data in the window, SOC > FeedInMinSoc (+ margin), no sustained export,
    and fresh grid and battery inputs."""
    why_not = []
    if dtu_samples_in_window <= 0:
        why_not.append("no fresh DTU data in the window")
    if soc_pct is None:
        why_not.append("SOC unknown")
    elif not soc_pct > feed_in_min_soc + soc_margin_pct:
        why_not.append(f"SOC {soc_pct:g} % <= FeedInMinSoc {feed_in_min_soc:g} %"
                       + (f" + {soc_margin_pct:g}" if soc_margin_pct else ""))
    if negative_grid_counter >= negative_grid_loops:
        why_not.append(f"sustained export ({negative_grid_counter} loops)")
    for name in ("grid", "battery"):
        if name in stale:
            why_not.append(f"{name} input stale")
    if why_not:
        return False, "switch off: " + "; ".join(why_not)
    return True, (f"keep alive: {dtu_samples_in_window} DTU samples, SOC {soc_pct:g} % > FeedInMinSoc "
                  f"{feed_in_min_soc:g} %, export counter {negative_grid_counter}")
