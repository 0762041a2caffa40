"""Small Shelly device clients in the spirit of aioshelly: detection and the meter factory here; the parts in
exceptions.py, device.py (HTTP, credentials, numbers, readings), models.py (which model is which meter), gen1.py
(EM/3EM, Basic), gen2.py (EM1/EM over RPC, Digest) and relay.py (the life signal).

API facts: docs/shelly-api.md; the Shelly API docs (shelly-api-docs.shelly.cloud, Gen1 and Gen2+) and aioshelly
(github.com/home-assistant-libs/aioshelly). Every request has a total deadline (common.http). Every answer is
hostile input: HTML, garbage, null, NaN, missing fields and implausible numbers are errors of named kinds
(ShellyError subclasses); an optional value that is unusable is None, never 0.
"""
from __future__ import annotations

from typing import Optional

from common.clock import SYSTEM_CLOCK
from services.shelly_poller.device import (SIGN, Credentials, Meter, MeterReading, MeterValues,  # noqa: F401
                                           PhaseReading, ShellyHttp, base_url, credentials_for, netloc_key)
from services.shelly_poller.exceptions import (ShellyAuthError, ShellyConnectionError, ShellyError,  # noqa: F401
                                               ShellyHttpError, ShellyInvalidReading, ShellyInvalidResponse,
                                               ShellyRateLimited, ShellyTimeout, ShellyUnsupportedDevice)
from services.shelly_poller.gen1 import Gen1Meter, parse_gen1_status  # noqa: F401
from services.shelly_poller.gen2 import (GEN2_USER, DigestAuth, Gen2Meter, digest_for,  # noqa: F401
                                         gen2_component_from_status, parse_em, parse_em1)
from services.shelly_poller.models import GEN1_METERS, DeviceInfo, parse_device_info  # noqa: F401
from services.shelly_poller.relay import (RelayClient, RelayResult, parse_relay_answer,  # noqa: F401
                                          parse_switch_status, url_credentials)


def detect(host: str, timeout_s: float = 2.0, clock=SYSTEM_CLOCK) -> DeviceInfo:
    """GET /shelly (never needs a password) and return the generation and model."""
    http = ShellyHttp(host, timeout_s=timeout_s, clock=clock)
    body, _ = http.get("/shelly")
    return parse_device_info(http.host, body)


def connect_meter(host: str, credentials: Credentials, *, type_: str = "auto", timeout_s: float = 2.0,
                  channel: int = 0, clock=SYSTEM_CLOCK) -> Meter:
    """Build the right client. `type_` auto: detect with GET /shelly; gen1/gen2: skip or narrow detection.

    Credentials pinned to a generation (`credentials.gen`, see MeterPoller) are never handed to a client of
    another generation: a device that now claims another generation gets an auth error, not the password."""
    where = base_url(host).split("://", 1)[1]
    info: Optional[DeviceInfo] = None
    if type_ == "gen1":
        _check_pin(where, credentials, 1)
        return Gen1Meter(host, credentials, timeout_s, None, channel, clock)
    try:
        info = detect(host, timeout_s, clock)
    except (ShellyHttpError, ShellyInvalidResponse):
        if type_ != "gen2":
            raise
    if info is not None and type_ == "auto" and info.gen == 1:
        if info.meter_component is None:
            raise ShellyUnsupportedDevice(where, f"Gen1 type {info.model!r} is not an EM or 3EM")
        _check_pin(where, credentials, 1)
        return Gen1Meter(host, credentials, timeout_s, info.model, channel, clock)
    if info is not None and type_ == "gen2" and info.gen == 1:
        raise ShellyUnsupportedDevice(where, f"type = gen2 configured, but the device is Gen1 {info.model!r}")
    _check_pin(where, credentials, 2)
    model = info.model if info is not None else "gen2"
    component = info.meter_component if info is not None else None
    if component is None:
        probe = ShellyHttp(host, timeout_s=timeout_s, auth=digest_for(credentials), clock=clock)
        body, _ = probe.get("/rpc/Shelly.GetStatus")
        component = gen2_component_from_status(probe.host, body, channel)
    return Gen2Meter(host, credentials, timeout_s, model, component, channel, clock=clock)


def _check_pin(where: str, credentials: Credentials, gen: int) -> None:
    pinned = 1 if credentials.gen == 1 else 2 if credentials.gen is not None else None
    wanted = 1 if gen == 1 else 2
    if credentials.password and pinned is not None and pinned != wanted:
        raise ShellyAuthError(where, f"the device now says Gen{wanted}, its password belongs to Gen{pinned}: "
                                     "not sent (spoofed device?)")
