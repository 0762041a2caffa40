"""Gen1 Shelly EM / 3EM: `GET /status`, HTTP Basic with the configured user (credentials pinned to Gen1)."""
from __future__ import annotations

from typing import Any, Optional

from common import plausible
from common.clock import SYSTEM_CLOCK
from services.shelly_poller.device import (BasicAuth, Credentials, Meter, MeterReading, MeterValues, PhaseReading,
                                           current, kwh, num, power, raw_numbers, require_dict, sum_or_none,
                                           voltage)
from services.shelly_poller.exceptions import ShellyInvalidReading, ShellyInvalidResponse
from services.shelly_poller.models import GEN1_METERS


def parse_gen1_status(host: str, body: Any, three_phase: bool, channel: int = 0) -> MeterValues:
    """Gen1 `GET /status` of a Shelly EM (one channel: `channel`) or 3EM (sum of the three phases)."""
    body = require_dict(host, body, "/status")
    emeters = body.get("emeters")
    if not isinstance(emeters, list) or not emeters or not all(isinstance(e, dict) for e in emeters):
        raise ShellyInvalidResponse(host, "/status: no emeters list")
    device_time = num(body, "unixtime", plausible.UNIX_TIME_S)
    if three_phase:
        if len(emeters) < 3:
            raise ShellyInvalidResponse(host, f"/status: 3EM with {len(emeters)} emeters")
        chosen = emeters[:3]
    else:
        if not 0 <= channel < len(emeters):
            raise ShellyInvalidResponse(host, f"/status: no emeter channel {channel}")
        chosen = [emeters[channel]]
    phases, raw = [], []
    for index, em in zip(range(len(emeters)) if three_phase else [channel], chosen):
        if "is_valid" in em and em["is_valid"] is not True:
            raise ShellyInvalidReading(host, f"emeter {index} reports is_valid: {em.get('is_valid')!r}")
        power_w = power(em, "power")
        if power_w is None:
            raise ShellyInvalidResponse(host, f"emeter {index}: power missing, not a number or implausible")
        voltage_v = voltage(em, "voltage")
        current_a = current(em, "current")
        if current_a is None and "current" not in em and voltage_v is not None and voltage_v > 1.0:
            current_a = power_w / voltage_v         # Shelly EM has no current field
        phases.append(PhaseReading(power_w, voltage_v, current_a, kwh(em, "total"), kwh(em, "total_returned")))
        raw.extend(raw_numbers(em, ("power", "reactive", "pf", "current", "voltage", "total", "total_returned")))
    if three_phase:
        total = power(body, "total_power")
        power_w = total if total is not None else sum(p.power_w for p in phases)
        raw.append(body.get("total_power") if total is not None else None)
        if plausible.why_not(power_w, plausible.POWER_W):
            raise ShellyInvalidResponse(host, "/status: the sum of the phases is implausible")
    else:
        power_w = phases[0].power_w
    return MeterValues(power_w, tuple(phases),
                       sum_or_none(p.energy_import_kwh for p in phases),
                       sum_or_none(p.energy_export_kwh for p in phases),
                       device_time, tuple(raw))


class Gen1Meter(Meter):
    """Shelly EM (channel `channel`) or 3EM (sum of phases) via `GET /status`, Basic auth."""
    gen = 1

    def __init__(self, host: str, credentials: Credentials, timeout_s: float, model: Optional[str] = None,
                 channel: int = 0, clock=SYSTEM_CLOCK):
        auth = BasicAuth(credentials.username, credentials.password) if credentials.password else None
        super().__init__(host, auth, timeout_s, model or "SHEM", clock)
        self.three_phase = GEN1_METERS.get(model) if model else None    # None: decide from the answer
        self.channel = channel

    def read(self) -> MeterReading:
        body, t_mono = self.http.get("/status")
        three_phase = self.three_phase
        if three_phase is None:   # type = gen1 without detection: 3 emeters -> 3EM
            emeters = body.get("emeters") if isinstance(body, dict) else None
            three_phase = isinstance(emeters, list) and len(emeters) >= 3
            self.model = "SHEM-3" if three_phase else "SHEM"
        return self._reading(parse_gen1_status(self.host, body, three_phase, self.channel), t_mono)
