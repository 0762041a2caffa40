"""The rating (nominal AC power) published for the cap: the DTU's figure is checked, never trusted.

The controller turns watts into percent with this rating, so a rating below the truth makes it deliver more than
it commanded (a 2000 W inverter reported as 100 W at 80 % gives 1600 W). Pure functions, no I/O.

Sources: the DTU's max_power (/api/limit/status, or limit_absolute / limit_relative), the nominal power in the
model name from /api/devinfo/status (Hoymiles HM-, HMS-, HMT-, HERF- models carry it: "HMS-2000-4T" is 2000 W),
`[inverter.<id>] max_power_w` from config, and the AC power: an inverter delivering more than its rating is larger
than its rating says (at once: no ramp explains that), and so is one delivering more than limit x rating x
OBSERVE_FACTOR. That second proof counts at once for a rating nothing vouches for; for one that the model name or
the config confirms, only once the limit has been in force for OBSERVE_SAMPLES samples, after start too: the output
may still be ramping down from before (the writer commands the minimum as soon as it sees an inverter, and the
first sample shows that limit with the old output); and only with ABOVE_IN_A_ROW such samples in a row, at an
unchanged limit and the output not falling: a DTU that samples seldom (AhoyDTU: every 5–15 s) hides a limit raised
and lowered again between two samples (only a slightly different read-back may tell), and a sample or two may catch
the output still coming down from it.

Published: the largest of the known figures (a larger rating only makes the commanded percentages smaller). When
the figures disagree by more than TOLERANCE, the rating is implausible: the configured max_power_w or, without
one, LARGEST_W (the largest single Hoymiles model, HMT-2250, rounded up) joins them, and an alarm is raised.
"""
from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass
from typing import Optional

from common.safefile import read_regular, write_atomic

log = logging.getLogger(__name__)

LARGEST_W = 3000.0
TOLERANCE = 0.15               # figures within 15 % of each other agree (HMS undershoot at low limits, rounding)
OBSERVE_MIN_W = 20.0           # AC power below this says nothing about the rating (noise, minimum outputs)
OBSERVE_FACTOR = 1.5           # AC power above limit x rating x this is a rating that is too small
OBSERVE_SAMPLES = 3
ABOVE_IN_A_ROW = 2             # settled samples far above the limit in a row that doubt a vouched rating

_MODEL_RE = re.compile(r"^\s*(?:HM|HMS|HMT|HERF)-(\d{3,4})", re.IGNORECASE)


def nominal_w(model: Optional[str]) -> Optional[float]:
    """The nominal power in a Hoymiles model name ("HM-400" -> 400, "HMS-800W-2T" -> 800); None if not one."""
    match = _MODEL_RE.match(model or "")
    if not match:
        return None
    value = float(match.group(1))
    return value if 100.0 <= value <= LARGEST_W else None


@dataclass
class RatingCheck:
    """Per inverter: what the AC power showed about its rating, and the verdict of the last check."""
    observed_w: float = 0.0        # a rating the AC power proved (until a settled sample fits the DTU's)
    _last_limit: Optional[float] = None
    _since_drop: int = OBSERVE_SAMPLES   # samples since the limit went down (the output may still ramp down)
    _samples: int = 0                    # samples since start
    _above: int = 0                      # settled samples in a row far above one limit, the output not falling
    _same_limit: int = 0                 # samples in a row at the limit now reported (0: none seen yet)
    _last_ac_w: Optional[float] = None
    plausible: bool = True
    why: str = ""

    def observe(self, ac_w: Optional[float], limit_pct: Optional[float], dtu_w: Optional[float],
                vouched: bool = False) -> None:
        """One fresh sample: AC power at the limit the DTU reports. Output above the rating counts at once (the
        controller must not raise on a wrong rating); output above the limit at once too, unless the DTU's rating is
        `vouched` for (by the model name or the config): then only once the limit has been in force for
        OBSERVE_SAMPLES samples, and in ABOVE_IN_A_ROW samples in a row at that limit, the output not falling."""
        if limit_pct is None or not 0 < limit_pct <= 100:
            return
        dropped = self._last_limit is not None and limit_pct < self._last_limit - 0.5
        changed = self._last_limit is not None and abs(limit_pct - self._last_limit) > 0.05
        self._since_drop = 0 if dropped else self._since_drop + 1
        self._same_limit = 1 if changed or self._last_limit is None else self._same_limit + 1
        self._last_limit = limit_pct
        self._samples += 1
        last_ac_w, self._last_ac_w = self._last_ac_w, ac_w
        if ac_w is None or ac_w < OBSERVE_MIN_W or not dtu_w:
            self._above = 0
            return
        expected_w = limit_pct * dtu_w / 100.0
        settled = self._since_drop >= OBSERVE_SAMPLES and (self._samples > OBSERVE_SAMPLES or not vouched)
        above = settled and ac_w > expected_w * OBSERVE_FACTOR
        falling = last_ac_w is not None and ac_w < last_ac_w * (1.0 - TOLERANCE)
        self._above = self._above + 1 if above and not falling and not changed else 0
        if ac_w > dtu_w * (1.0 + TOLERANCE) or (above and (not vouched or self._above >= ABOVE_IN_A_ROW)):
            self.observed_w = max(self.observed_w, min(LARGEST_W, ac_w * 100.0 / limit_pct))
        elif (self._same_limit > OBSERVE_SAMPLES
              and expected_w * (1.0 - TOLERANCE) <= ac_w <= expected_w * (1.0 + TOLERANCE)):
            # The output delivers what the DTU's rating says at a limit in force for a while: a proof was wrong
            # (taken mid-ramp after a restart, say). An output merely BELOW the limit proves nothing: right after a
            # raise (or after our own restart, the raise unseen) it still shows the old limit's power, and a
            # proof cleared on it let the controller raise a 2000 W inverter rated "100 W" to 100 %.
            self.observed_w = 0.0

    @staticmethod
    def vouched(dtu_w: Optional[float], model: Optional[str], config_w: float) -> bool:
        """Whether the model's nominal power or the configured one agrees with the DTU's rating."""
        return bool(dtu_w) and any(fig and abs(fig - dtu_w) <= fig * TOLERANCE
                                   for fig in (nominal_w(model), float(config_w or 0)))

    def rating(self, dtu_w: Optional[float], model: Optional[str], config_w: float) -> Optional[float]:
        """The rating to publish (None: nothing known; the controller then assumes its unknown_max_w)."""
        figures = {"DTU": dtu_w or 0.0, "model": nominal_w(model) or 0.0, "config": float(config_w or 0),
                   "AC power": self.observed_w}
        known = {name: value for name, value in figures.items() if value > 0}
        if not known:
            return None
        low, high = min(known.values()), max(known.values())
        self.plausible = high <= low * (1.0 + TOLERANCE)
        if self.plausible:
            self.why = ""
            return high
        self.why = "rating implausible: " + ", ".join(f"{name} {value:.0f} W" for name, value in known.items())
        return max(high, float(config_w) if config_w else LARGEST_W)


class ProvenRatings:
    """Ratings the AC power proved larger than the DTU's, kept across a restart of dtu_poller
    (`<state_dir>/dtu-ratings.json`, serial -> W). Without it a restarted reader trusts the DTU's figure again
    until the output disproves it, and the controller may raise on the small figure in between (2000 W delivered
    under a 700 W cap in the safety loop). `path` None: kept in memory only (tests, the bench).
    A missing, unreadable or hostile file is an empty one (logged): the proofs are then found again."""

    def __init__(self, path: Optional[str] = None):
        self.path = path
        self.by_serial: dict = {}
        if path:
            self.by_serial = self._load(path)

    @staticmethod
    def _load(path: str) -> dict:
        try:
            raw = json.loads(read_regular(path, max_bytes=64_000).decode("utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            log.warning("%s: ignored (%s); rating proofs start empty", path, exc)
            return {}
        if not isinstance(raw, dict):
            log.warning("%s: ignored (not an object); rating proofs start empty", path)
            return {}
        return {serial: float(value) for serial, value in raw.items()
                if isinstance(serial, str) and isinstance(value, (int, float)) and not isinstance(value, bool)
                and math.isfinite(value) and 0 < value <= LARGEST_W}

    def get(self, serial: str) -> float:
        return self.by_serial.get(serial, 0.0)

    def put(self, serial: str, observed_w: float) -> None:
        """Kept when the proof appears, goes, or moves by more than TOLERANCE (a proof grows with the output it
        sees: not a flash write for every poll)."""
        kept_w = self.by_serial.get(serial, 0.0)
        if observed_w == kept_w or (observed_w > 0 and kept_w > 0 and abs(observed_w - kept_w) <= kept_w * TOLERANCE):
            return
        if observed_w > 0:
            self.by_serial[serial] = observed_w
        else:
            self.by_serial.pop(serial, None)
        if self.path:
            try:
                write_atomic(self.path, json.dumps(self.by_serial, sort_keys=True))
            except OSError as exc:
                log.warning("%s: not written (%s); the proof holds until a restart", self.path, exc)
