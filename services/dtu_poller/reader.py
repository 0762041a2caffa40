"""From parsed OpenDTU answers to `dtu.inverter` / `dtu.status` bodies (no I/O, time passed in).

Freshness: OpenDTU keeps the last values while `data_age` grows, so a sample is new only when its computed
sample time (response arrival − data_age) moved forward by more than the data_age resolution, or data_age went
down. An old sample is never published again as new. An inverter that stops being reachable gets one message
with reachable = false and no measurements (None), carrying its last sample time, not a new one.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Optional

from common import messages as m
from common.cadence import STATUS_HEARTBEAT_S
from services.dtu_poller.client import InverterLive, InverterSummary, LimitStatus
from services.dtu_poller.rating import ProvenRatings, RatingCheck

log = logging.getLogger(__name__)

STATUS_INTERVAL_S = STATUS_HEARTBEAT_S


def max_power_w(live: InverterSummary, status: Optional[LimitStatus]) -> Optional[float]:
    """Rated power: /api/limit/status max_power (0 until DevInfo was read) or limit_absolute×100/limit_relative."""
    if status is not None and status.max_power_w is not None and status.max_power_w > 0:
        return float(status.max_power_w)
    rel, absolute = live.limit_relative_pct, live.limit_absolute_w
    if rel is not None and absolute is not None and rel > 0 and absolute > 0:
        return round(absolute * 100.0 / rel, 1)
    return None


def limit_fields(live: InverterSummary, status: Optional[LimitStatus], max_w: Optional[float]):
    """(limit_pct, limit_w). limit_relative is 0 after a DTU boot until the first ack or read-back (minutes, even
    when the rating is already known), so 0 is reported as unknown (None); the writer's acks say what was sent."""
    rel = live.limit_relative_pct
    if status is not None and status.limit_relative_pct is not None:
        rel = status.limit_relative_pct
    if rel is None or rel <= 0 or rel > 100:
        return None, None
    if max_w is None:
        return float(rel), None
    return float(rel), round(rel * max_w / 100.0, 1)


def looks_unpolled(live: InverterLive, max_w: Optional[float]) -> bool:
    """After a DTU boot an inverter is `reachable` before its first stats answer, with every value 0 and
    data_age ≈ uptime (small after a reboot). Rating still unknown and AC power, voltage and lifetime yield all
    0: no sample yet, not a measurement of 0 W."""
    return max_w is None and all(v in (0, None) for v in (live.ac_power_w, live.ac_voltage_v, live.yield_total_kwh))


def _sum(values):
    if not values or any(v is None for v in values):
        return None
    return round(sum(values), 3)


def inverter_body(live: InverterLive, index: int, sample_t_mono: float, status: Optional[LimitStatus],
                  measurements: bool = True, model: Optional[str] = None) -> dict:
    max_w = max_power_w(live, status)
    limit_pct, limit_w = limit_fields(live, status, max_w)
    dc = live.dc_inputs if measurements else []
    body = {
        "serial": live.serial,
        "name": live.name,
        "index": index,
        "reachable": live.reachable,
        "producing": live.producing,
        "data_age_s": round(live.data_age_s, 3),
        "sample_t_mono": sample_t_mono,
        "ac_power_w": live.ac_power_w if measurements else None,
        "ac_voltage_v": live.ac_voltage_v if measurements else None,
        "dc_voltage_v": dc[0].voltage_v if dc else None,
        "dc_current_a": _sum([d.current_a for d in dc]),
        "dc_power_w": _sum([d.power_w for d in dc]),
        "dc_inputs": [{"voltage_v": d.voltage_v, "current_a": d.current_a, "power_w": d.power_w} for d in dc],
        "temperature_c": live.temperature_c if measurements else None,
        "yield_total_kwh": live.yield_total_kwh if measurements else None,
        "limit_pct": limit_pct,
        "limit_w": limit_w,
        "max_power_w": max_w,
    }
    if model:
        body["model"] = model
    return body


@dataclass
class _Track:
    last_sample_t: Optional[float] = None       # sample time of the last published sample
    last_data_age_s: Optional[float] = None     # data_age seen at the last poll (published or not)
    reachable: Optional[bool] = None            # as last published


@dataclass
class PollResult:
    """One complete poll: summary (DTU order), ?inv= answers with their arrival times, limit status."""
    summary: list                                # [InverterSummary]
    lives: dict                                  # serial -> (InverterLive, arrival_t_mono, resolution_s)
    limits: dict                                 # serial -> LimitStatus
    t_mono: float


@dataclass
class Reader:
    """Turns polls into messages. `on_poll` and `on_error` return [(topic, body)]."""
    can_control: bool
    tracks: dict = field(default_factory=dict)
    serials: list = field(default_factory=list)
    error_count: int = 0
    last_error_kind: Optional[str] = None
    last_error_detail: Optional[str] = None
    last_ok_t: Optional[float] = None
    firmware: Optional[str] = None
    unreachable: list = field(default_factory=list)
    data_ages: dict = field(default_factory=dict)
    models: dict = field(default_factory=dict)          # serial -> hw_model_name (filled by the poll loop)
    power_states: dict = field(default_factory=dict)    # serial -> the writer's power state (poll loop)
    config_max_w: Callable = lambda serial, index: 0     # [inverter.<id>] max_power_w (0: not set)
    ratings: dict = field(default_factory=dict)         # serial -> RatingCheck
    proven: ProvenRatings = field(default_factory=ProvenRatings)   # proofs kept across a restart

    def is_fresh(self, serial: str, sample_t: float, data_age_s: float, resolution_s: float) -> bool:
        track = self.tracks.get(serial)
        if track is None or track.last_sample_t is None:
            return True
        if track.last_data_age_s is not None and data_age_s < track.last_data_age_s - resolution_s / 2:
            return True
        # Same sample seen again: sample_t jitters by the data_age resolution plus the answer latency.
        # Whole seconds: truncation (< 1 s) + latency jitter; data_age_ms: latency jitter only.
        return sample_t > track.last_sample_t + (1.5 if resolution_s >= 1.0 else 0.3)

    def _body(self, live: InverterLive, index: int, sample_t: float, status, measurements: bool = True) -> dict:
        model = self.models.get(live.serial)
        body = inverter_body(live, index, sample_t, status, measurements, model=model)
        check = self.ratings.get(live.serial)
        if check is None:
            check = self.ratings[live.serial] = RatingCheck(observed_w=self.proven.get(live.serial))
        dtu_w = body["max_power_w"]
        config_w = self.config_max_w(live.serial, index)
        if measurements:
            check.observe(live.ac_power_w, body["limit_pct"], dtu_w, RatingCheck.vouched(dtu_w, model, config_w))
        self.proven.put(live.serial, check.observed_w)
        was_plausible = check.plausible
        rating_w = check.rating(dtu_w, model, config_w)
        if check.plausible != was_plausible:
            (log.info if check.plausible else log.error)("inverter %s: %s", live.serial,
                                                         check.why or "rating plausible again")
        body["max_power_w"], body["dtu_max_power_w"], body["rating_plausible"] = rating_w, dtu_w, check.plausible
        if rating_w is not None and body["limit_pct"] is not None:
            body["limit_w"] = round(body["limit_pct"] * rating_w / 100.0, 1)
        state = self.power_states.get(live.serial)
        if state is not None:
            body["power_state"] = state
        return body

    def on_poll(self, poll: PollResult) -> list:
        out = []
        serials = [inv.serial for inv in poll.summary]
        if serials != self.serials:
            added = [s for s in serials if s not in self.serials]
            gone = [s for s in self.serials if s not in serials]
            if added or gone:
                log.info("inverters: %s (new: %s, gone: %s)", ", ".join(serials) or "none",
                         ", ".join(added) or "-", ", ".join(gone) or "-")
            for serial in gone:
                self.tracks.pop(serial, None)
            self.serials = serials
        unreachable, ages = [], {}
        for index, serial in enumerate(serials):
            entry = poll.lives.get(serial)
            if entry is None:
                continue
            live, arrival_t, resolution_s = entry
            ages[serial] = round(live.data_age_s, 3)
            if not live.reachable:
                unreachable.append(serial)
            track = self.tracks.setdefault(serial, _Track())
            sample_t = arrival_t - live.data_age_s
            status = poll.limits.get(serial)
            if live.reachable:
                fresh = self.is_fresh(serial, sample_t, live.data_age_s, resolution_s)
                if fresh and live.has_channels and not looks_unpolled(live, max_power_w(live, status)):
                    if track.last_sample_t is not None:
                        sample_t = max(sample_t, track.last_sample_t + 0.001)
                    out.append((m.DTU_INVERTER, self._body(live, index, round(sample_t, 3), status)))
                    track.last_sample_t = sample_t
                    track.reachable = True
            elif track.reachable is not False:
                # Say once that it is gone: no measurements, the old sample time (never a new sample).
                old_t = track.last_sample_t if track.last_sample_t is not None else sample_t
                out.append((m.DTU_INVERTER, self._body(live, index, round(old_t, 3), status, measurements=False)))
                track.reachable = False
                log.info("inverter %s not reachable (data_age %.0f s)", serial, live.data_age_s)
            track.last_data_age_s = live.data_age_s
        self.unreachable, self.data_ages = unreachable, ages
        if self.error_count:
            log.info("DTU answers again after %d error(s)", self.error_count)
        self.error_count = 0
        self.last_error_kind = self.last_error_detail = None
        self.last_ok_t = poll.t_mono
        out.append(self.status(poll.t_mono))
        return out

    def on_error(self, kind: str, detail: str, now: float) -> list:
        self.error_count += 1
        if kind != self.last_error_kind or self.error_count in (1, 10, 100) or self.error_count % 1000 == 0:
            log.warning("DTU poll failed (%s, %d in a row): %s", kind, self.error_count, detail)
        self.last_error_kind, self.last_error_detail = kind, detail
        return [self.status(now)]

    def status(self, now: float) -> tuple:
        body = {
            "ok": self.error_count == 0 and self.last_ok_t is not None,
            "error_kind": self.last_error_kind if self.error_count else (None if self.last_ok_t else "starting"),
            "error_count": self.error_count,
            "serials": list(self.serials),
            "can_control": self.can_control,
            "unreachable": list(self.unreachable),
            "data_age_s": dict(self.data_ages),
        }
        if self.last_error_detail and self.error_count:
            body["detail"] = self.last_error_detail[:200]
        if self.firmware:
            body["firmware"] = self.firmware
        if self.last_ok_t is not None:
            body["last_ok_t_mono"] = self.last_ok_t
        return (m.DTU_STATUS, body)
