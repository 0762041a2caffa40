"""Gen2+ Shelly meters (Pro EM, EM Gen3/Gen4, Pro 3EM, 3EM-63): RPC over HTTP GET with Digest auth (RFC 7616,
SHA-256, qop=auth, opaque, a new nonce answered once; user always `admin`). Never Basic: Gen2 does not accept
it, and a password sent as Basic is readable on the path."""
from __future__ import annotations

import hashlib
import os
import re
from typing import Any, Optional

from common import plausible
from common.clock import SYSTEM_CLOCK
from common.http import clip
from services.shelly_poller.device import (Credentials, Meter, MeterReading, MeterValues, PhaseReading, current,
                                           kwh, power, raw_numbers, require_dict, sum_or_none, voltage)
from services.shelly_poller.exceptions import (ShellyError, ShellyInvalidReading, ShellyInvalidResponse,
                                               ShellyUnsupportedDevice)

GEN2_USER = "admin"

_CHALLENGE_PARAM = re.compile(r'([A-Za-z][\w-]*)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)')
_DIGEST_HASHES = {"MD5": "md5", "MD5-SESS": "md5", "SHA-256": "sha256", "SHA-256-SESS": "sha256",
                  "SHA-512": "sha512", "SHA-512-SESS": "sha512"}


class DigestAuth:
    """HTTP Digest (RFC 7616) as Shelly Gen2+ uses it: SHA-256 (or MD5), qop=auth, opaque. After the first
    challenge the header is sent up front with a counting nc; a 401 with a new nonce is answered once.
    Any other challenge (Basic) is refused: nothing is sent."""

    def __init__(self, password: str, username: str = GEN2_USER):
        self.username, self.password = username, password
        self.challenge: Optional[dict] = None
        self.nc = 0

    def on_challenge(self, header: str) -> bool:
        """Take a `WWW-Authenticate: Digest ...` header; False when it is not a usable Digest challenge."""
        if not header.strip().lower().startswith("digest"):
            return False
        params = {k.lower(): (v[1:-1].replace('\\"', '"') if v.startswith('"') else v)
                  for k, v in _CHALLENGE_PARAM.findall(header.strip()[6:])}
        algorithm = (params.get("algorithm") or "MD5").upper()
        qops = [q.strip() for q in (params.get("qop") or "").split(",") if q.strip()]
        if "nonce" not in params or algorithm not in _DIGEST_HASHES or (qops and "auth" not in qops):
            return False
        params["algorithm"], params["qop"] = algorithm, "auth" if qops else None
        if self.challenge is None or self.challenge.get("nonce") != params["nonce"]:
            self.nc = 0
        self.challenge = params
        return True

    def header(self, method: str, uri: str) -> Optional[str]:
        c = self.challenge
        if c is None:
            return None
        name = _DIGEST_HASHES[c["algorithm"]]

        def h(text: str) -> str:
            return hashlib.new(name, text.encode("utf-8")).hexdigest()
        realm, nonce = c.get("realm", ""), c["nonce"]
        self.nc += 1
        nc, cnonce = f"{self.nc:08x}", os.urandom(8).hex()
        ha1 = h(f"{self.username}:{realm}:{self.password}")
        if c["algorithm"].endswith("-SESS"):
            ha1 = h(f"{ha1}:{nonce}:{cnonce}")
        ha2 = h(f"{method}:{uri}")
        if c["qop"]:
            response = h(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")
        else:
            response = h(f"{ha1}:{nonce}:{ha2}")
        parts = [f'username="{self.username}"', f'realm="{realm}"', f'nonce="{nonce}"', f'uri="{uri}"',
                 f'response="{response}"', f'algorithm={c["algorithm"]}']
        if c.get("opaque") is not None:
            parts.append(f'opaque="{c["opaque"]}"')
        if c["qop"]:
            parts += ["qop=auth", f"nc={nc}", f'cnonce="{cnonce}"']
        return "Digest " + ", ".join(parts)


def digest_for(credentials: Credentials) -> Optional[DigestAuth]:
    return DigestAuth(credentials.password) if credentials.password else None


def _gen2_errors(obj: dict, keys) -> list[str]:
    found = []
    for key in keys:
        if key not in obj:
            continue
        value = obj[key]
        if isinstance(value, list):
            found.extend(f"{key}: {clip(_text(item), 40)}" for item in value[:8])
        elif value:
            found.append(f"{key}: {clip(_text(value), 40)}")
    return found


def _text(value: Any) -> str:
    return value[:60] if isinstance(value, str) else type(value).__name__


def parse_em1(host: str, status: Any, data: Any = None) -> MeterValues:
    """Gen2+ `EM1.GetStatus?id=N` (+ optional `EM1Data.GetStatus?id=N`): Pro EM, EM Gen3/Gen4, monophase Pro 3EM."""
    status = require_dict(host, status, "EM1.GetStatus")
    errors = _gen2_errors(status, ("errors",))
    if errors:
        raise ShellyInvalidReading(host, "EM1 errors: " + ", ".join(errors))
    power_w = power(status, "act_power")
    if power_w is None:
        raise ShellyInvalidResponse(host, "EM1.GetStatus: act_power missing, not a number or implausible")
    e_in = e_out = None
    if isinstance(data, dict):
        e_in, e_out = kwh(data, "total_act_energy"), kwh(data, "total_act_ret_energy")
    phase = PhaseReading(power_w, voltage(status, "voltage"), current(status, "current"), e_in, e_out)
    raw = raw_numbers(status, ("act_power", "aprt_power", "voltage", "current", "pf", "freq"))
    return MeterValues(power_w, (phase,), e_in, e_out, None, raw)


def parse_em(host: str, status: Any, data: Any = None) -> MeterValues:
    """Gen2+ `EM.GetStatus?id=0` (+ optional `EMData.GetStatus?id=0`): Pro 3EM / 3EM-63 in triphase profile."""
    status = require_dict(host, status, "EM.GetStatus")
    errors = _gen2_errors(status, ("errors", "a_errors", "b_errors", "c_errors", "n_errors"))
    if errors:
        raise ShellyInvalidReading(host, "EM errors: " + ", ".join(errors))
    data = data if isinstance(data, dict) else {}
    phases, raw = [], []
    for p in ("a", "b", "c"):
        phases.append(PhaseReading(power(status, f"{p}_act_power"), voltage(status, f"{p}_voltage"),
                                   current(status, f"{p}_current"), kwh(data, f"{p}_total_act_energy"),
                                   kwh(data, f"{p}_total_act_ret_energy")))
        raw.extend(raw_numbers(status, (f"{p}_act_power", f"{p}_aprt_power", f"{p}_voltage", f"{p}_current",
                                        f"{p}_pf", f"{p}_freq")))
    total = power(status, "total_act_power")
    if total is None:
        total = sum_or_none(p.power_w for p in phases)
    if total is None or plausible.why_not(total, plausible.POWER_W):
        raise ShellyInvalidResponse(host, "EM.GetStatus: total_act_power missing, not a number or implausible")
    raw.extend(raw_numbers(status, ("total_act_power", "total_current", "total_aprt_power")))
    e_in, e_out = kwh(data, "total_act"), kwh(data, "total_act_ret")
    return MeterValues(total, tuple(phases), e_in, e_out, None, tuple(raw))


class Gen2Meter(Meter):
    """Gen2+ RPC over HTTP GET, Digest auth. component 'em1' (channel `channel`) or 'em' (three phases).

    Energy counters (EM1Data/EMData) cost a second request, so they are read at most every `energy_interval_s`,
    after the power reading. Samples carry the last counters read (cumulative Wh: a few seconds of age do not
    matter for them) while they are younger than 3 intervals; a failed counter read never holds up the power.
    """
    gen = 2

    def __init__(self, host: str, credentials: Credentials, timeout_s: float, model: str, component: str,
                 channel: int = 0, energy_interval_s: float = 5.0, clock=SYSTEM_CLOCK):
        super().__init__(host, digest_for(credentials), timeout_s, model, clock)
        if component not in ("em", "em1"):
            raise ValueError(f"component {component!r}")
        self.component = component
        self.channel = channel if component == "em1" else 0
        self.energy_interval_s = energy_interval_s
        self._energy_tried_t: Optional[float] = None
        self._energy: Any = None
        self._energy_t: Optional[float] = None
        self.energy_error: Optional[str] = None

    def read(self) -> MeterReading:
        method = "EM1" if self.component == "em1" else "EM"
        status, t_mono = self.http.get(f"/rpc/{method}.GetStatus", {"id": self.channel})
        parser = parse_em1 if self.component == "em1" else parse_em
        parser(self.host, status)      # validate before spending a request on the counters
        now = self.clock.monotonic()
        if self._energy_tried_t is None or now - self._energy_tried_t >= self.energy_interval_s:
            self._energy_tried_t = now
            try:
                self._energy, self._energy_t = self.http.get(f"/rpc/{method}Data.GetStatus", {"id": self.channel})
                self.energy_error = None
            except ShellyError as exc:
                self.energy_error = str(exc)
        fresh = self._energy_t is not None and now - self._energy_t < 3 * self.energy_interval_s
        return self._reading(parser(self.host, status, self._energy if fresh else None), t_mono)


def gen2_component_from_status(host: str, body: Any, channel: int) -> str:
    """Fallback for unknown Gen2 models: look for `em:0` / `em1:N` in `Shelly.GetStatus`."""
    body = require_dict(host, body, "Shelly.GetStatus")
    if "em:0" in body:
        return "em"
    if f"em1:{channel}" in body:
        return "em1"
    raise ShellyUnsupportedDevice(host, "no em:0 or em1 component: not an energy meter")
