"""Small Shelly device clients (in the spirit of aioshelly): detection, Gen1 EM/3EM, Gen2+ EM1/EM meters.

Facts: docs/shelly-api.md. Every request has a timeout. Credentials travel only in an
Authorization header (Gen1: Basic with the configured user; Gen2+: Digest SHA-256, user always `admin`), never in a URL.
Every answer is hostile input: HTML, garbage, null, NaN, missing fields and implausible numbers are errors of
named kinds (ShellyError subclasses); an optional value that is unusable is None, never 0.

The parsers (`parse_*`) are pure functions of the decoded JSON, so they are tested without a device.
"""
from __future__ import annotations

import base64
import hashlib
import http.client
import json
import math
import os
import re
import socket
from dataclasses import dataclass, field
from typing import Any, Optional
from urllib.parse import urlencode, urlsplit

from common.clock import SYSTEM_CLOCK
from common.logsetup import redact_url

SIGN = "positive_is_import"
MAX_BODY_BYTES = 256 * 1024
GEN2_USER = "admin"

# plausibility bounds; a value outside is treated as unusable
POWER_LIMIT_W = 1.0e6
VOLTAGE_MAX_V = 1000.0
CURRENT_LIMIT_A = 1.0e4
ENERGY_MAX_WH = 1.0e13


# ---------------------------------------------------------------- errors

class ShellyError(Exception):
    """Any problem talking to a Shelly. `kind` is the short name used in meter.status / relay.state."""
    kind = "error"

    def __init__(self, host: str, message: str):
        self.host = host
        self.message = message
        super().__init__(f"Shelly {host}: {message}")


class ShellyConnectionError(ShellyError):
    kind = "connection"


class ShellyTimeout(ShellyError):
    kind = "timeout"


class ShellyAuthError(ShellyError):
    kind = "auth"


class ShellyRateLimited(ShellyError):
    kind = "rate_limited"


class ShellyHttpError(ShellyError):
    kind = "http"

    def __init__(self, host: str, message: str, status: int | None = None, code: int | None = None):
        super().__init__(host, message)
        self.status, self.code = status, code


class ShellyInvalidResponse(ShellyError):
    """The body is not what the API promises: HTML, garbage, null, NaN, missing or implausible fields."""
    kind = "invalid"

    def __init__(self, host: str, message: str, kind: str = "invalid"):
        super().__init__(host, message)
        self.kind = kind            # "html" for an HTML page, else "invalid"


class ShellyInvalidReading(ShellyError):
    """The device itself says the reading is not valid (`is_valid: false`, `errors: [...]`)."""
    kind = "invalid_reading"


class ShellyUnsupportedDevice(ShellyError):
    kind = "unsupported"


# ---------------------------------------------------------------- HTTP

def base_url(host: str) -> str:
    """`host`, `host:port` or `http://host:port` -> `http://host:port` (no trailing slash)."""
    host = host.strip().rstrip("/")
    if not host.startswith(("http://", "https://")):
        host = "http://" + host
    return host


def netloc_key(url_or_host: str) -> str:
    """Host and port of a URL or host string, lower case, without user info, default port made explicit."""
    parts = urlsplit(base_url(url_or_host) if "://" not in url_or_host else url_or_host)
    host = (parts.hostname or "").lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    return f"{host}:{port}"


@dataclass(frozen=True)
class Credentials:
    username: str = "admin"
    password: str = ""

    def __repr__(self) -> str:          # never print the password
        return f"Credentials(username={self.username!r}, password={'***' if self.password else ''!r})"


@dataclass
class Answer:
    """A complete HTTP answer: status, headers (case-insensitive `get`), body bytes."""
    status_code: int
    headers: Any
    content: bytes


def _basic_header(username: str, password: str) -> str:
    def enc(text: str) -> bytes:
        try:
            return text.encode("latin-1")
        except UnicodeEncodeError:
            return text.encode("utf-8")
    return "Basic " + base64.b64encode(enc(username) + b":" + enc(password)).decode("ascii")


_CHALLENGE_PARAM = re.compile(r'([A-Za-z][\w-]*)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)')
_DIGEST_HASHES = {"MD5": "md5", "MD5-SESS": "md5", "SHA-256": "sha256", "SHA-256-SESS": "sha256",
                  "SHA-512": "sha512", "SHA-512-SESS": "sha512"}


class DigestAuth:
    """HTTP Digest (RFC 7616) as Shelly Gen2+ uses it: SHA-256 (or MD5), qop=auth, opaque. After the first
    challenge the header is sent up front with a counting nc; a 401 with a new nonce is answered once."""

    def __init__(self, username: str, password: str):
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


class ShellyHttp:
    """GET JSON from one device with a timeout, the right auth scheme and strict decoding.

    auth_mode: "basic" (Gen1, sent up front), "digest" (Gen2+, SHA-256 as challenged: DigestAuth handles
    algorithm=SHA-256, qop=auth, opaque, and a new nonce on a 401), or "auto" (no auth until a 401, then the
    scheme the device's WWW-Authenticate asks for; for relay URLs of unknown generation).
    HTTP/1.1 over http.client, one connection per request, no proxies or .netrc from the environment
    (requests cost several times the CPU per call: see bench.footprint).
    """

    def __init__(self, base: str, *, timeout_s: float, credentials: Credentials = Credentials(),
                 auth_mode: str = "auto", clock=SYSTEM_CLOCK):
        if auth_mode not in ("basic", "digest", "auto"):
            raise ValueError(f"auth_mode {auth_mode!r}")
        self.base = base_url(base)
        parts = urlsplit(self.base)
        self._https = parts.scheme == "https"
        self.host = parts.netloc.rsplit("@", 1)[-1]
        self.timeout_s = float(timeout_s)
        self.credentials = credentials
        self.auth_mode = auth_mode
        self.clock = clock
        self._scheme: Optional[str] = None       # basic | digest once known
        self._digest: Optional[DigestAuth] = None
        if credentials.password and auth_mode in ("basic", "digest"):
            self._use(auth_mode)

    def _use(self, scheme: str) -> None:
        self._scheme = scheme
        if scheme == "digest":
            self._digest = DigestAuth(GEN2_USER, self.credentials.password)

    def close(self) -> None:
        pass          # no connection outlives a request

    def _authorization(self, target: str) -> Optional[str]:
        if self._scheme == "basic":
            return _basic_header(self.credentials.username, self.credentials.password)
        if self._scheme == "digest" and self._digest is not None:
            return self._digest.header("GET", target)
        return None

    def get(self, path_or_url: str, params: Optional[dict] = None) -> tuple[Any, float]:
        """GET and decode a JSON body. Returns (json, t_mono when the full response had arrived)."""
        if "://" in path_or_url:
            parts = urlsplit(path_or_url)
            target = (parts.path or "/") + ("?" + parts.query if parts.query else "")
        else:
            target = path_or_url
        if params:
            target += ("&" if "?" in target else "?") + urlencode(params)
        resp, t_mono = self._request(target)
        if resp.status_code == 401 and self.credentials.password:
            challenge = (resp.headers.get("WWW-Authenticate") or "").strip()
            retry = False
            if self._scheme is None and self.auth_mode == "auto":
                scheme = "digest" if challenge.lower().startswith("digest") \
                    else "basic" if challenge.lower().startswith("basic") else None
                if scheme is not None:
                    self._use(scheme)
                    retry = scheme == "basic"
            if self._scheme == "digest" and self._digest is not None:
                retry = self._digest.on_challenge(challenge)
            if retry:
                resp, t_mono = self._request(target)
        return self._decode(resp, resp.content), t_mono

    def _request(self, target: str) -> tuple[Answer, float]:
        start = self.clock.monotonic()
        headers = {"Accept": "application/json", "User-Agent": "dbus-opendtu", "Connection": "close"}
        authorization = self._authorization(target)
        if authorization:
            headers["Authorization"] = authorization
        conn = (http.client.HTTPSConnection if self._https else http.client.HTTPConnection)(
            self.host, timeout=self.timeout_s)
        try:
            conn.request("GET", target, headers=headers)
            resp = conn.getresponse()
            body = bytearray()
            while True:
                chunk = resp.read(8192)
                if not chunk:
                    break
                body += chunk
                if len(body) > MAX_BODY_BYTES:
                    raise ShellyInvalidResponse(self.host, f"answer larger than {MAX_BODY_BYTES} bytes")
                # a device dripping bytes must not hold us far beyond the timeout
                if self.clock.monotonic() - start > 3 * self.timeout_s:
                    raise ShellyTimeout(self.host, f"answer took longer than {3 * self.timeout_s:g} s")
            answer = Answer(resp.status, resp.headers, bytes(body))
        except (socket.timeout, TimeoutError):
            raise ShellyTimeout(self.host, f"no answer within {self.timeout_s:g} s") from None
        except OSError as exc:
            raise ShellyConnectionError(self.host, f"cannot connect: {_short_reason(exc)}") from None
        except http.client.HTTPException as exc:
            raise ShellyConnectionError(self.host, f"request failed: {type(exc).__name__}") from None
        finally:
            conn.close()
        return answer, self.clock.monotonic()

    def _decode(self, resp: Answer, body: bytes) -> Any:
        status = resp.status_code
        if status == 401:
            if not self.credentials.password:
                raise ShellyAuthError(self.host, "the device requires a password, none is configured")
            user = GEN2_USER if self._scheme == "digest" else self.credentials.username
            raise ShellyAuthError(self.host, f"authentication failed for user {user!r}: wrong password?")
        if status == 429:
            raise ShellyRateLimited(self.host, "too many requests (HTTP 429)")
        text = body.decode("utf-8", errors="replace")
        looks_html = "html" in (resp.headers.get("Content-Type") or "").lower() or text.lstrip().startswith("<")
        if not 200 <= status < 300:
            code, message = _rpc_error(text)
            if code == 429:
                raise ShellyRateLimited(self.host, f"too many requests ({message or 'code 429'})")
            detail = f"HTTP {status}"
            if code is not None:
                detail += f", error {code}: {_clip(message)}"
            raise ShellyHttpError(self.host, detail, status=status, code=code)
        if looks_html:
            raise ShellyInvalidResponse(self.host, "answered with an HTML page instead of JSON", kind="html")
        try:
            value = json.loads(text, parse_constant=_reject_constant)
        except ValueError as exc:
            raise ShellyInvalidResponse(self.host, f"answer is not JSON ({_clip(str(exc), 60)})") from None
        if value is None:
            raise ShellyInvalidResponse(self.host, "answer is null")
        if isinstance(value, dict):
            if isinstance(value.get("error"), dict) or (set(value) <= {"code", "message"} and "code" in value):
                code, message = _rpc_error(text)
                if code == 429:
                    raise ShellyRateLimited(self.host, f"too many requests ({message or 'code 429'})")
                raise ShellyHttpError(self.host, f"RPC error {code}: {_clip(message)}", status=status, code=code)
        return value


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a number")


def _rpc_error(text: str) -> tuple[Optional[int], Optional[str]]:
    """Error code and message from `{"error":{"code","message"}}` or a bare `{"code","message"}`."""
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except ValueError:
        return None, None
    if isinstance(value, dict) and isinstance(value.get("error"), dict):
        value = value["error"]
    if not isinstance(value, dict):
        return None, None
    code = value.get("code")
    message = value.get("message")
    return (code if isinstance(code, int) and not isinstance(code, bool) else None,
            message if isinstance(message, str) else None)


def _clip(text: Optional[str], limit: int = 80) -> str:
    text = (text or "").replace("\n", " ")
    return text if len(text) <= limit else text[:limit] + "..."


def _short_reason(exc: Exception) -> str:
    text = str(exc)
    for marker in ("Connection refused", "Name or service not known", "No route to host",
                   "Connection reset", "Network is unreachable", "Temporary failure in name resolution",
                   "RemoteDisconnected", "Connection aborted"):
        if marker in text:
            return marker
    return redact_url(_clip(text, 100))


# ---------------------------------------------------------------- numbers

def _num(obj: Any, key: str, low: float, high: float) -> Optional[float]:
    """A finite number within [low, high] from obj[key], else None (bool is not a number)."""
    if not isinstance(obj, dict):
        return None
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    if not math.isfinite(value) or not low <= value <= high:
        return None
    return value


def _power(obj: Any, key: str) -> Optional[float]:
    return _num(obj, key, -POWER_LIMIT_W, POWER_LIMIT_W)


def _voltage(obj: Any, key: str) -> Optional[float]:
    return _num(obj, key, 0.0, VOLTAGE_MAX_V)


def _current(obj: Any, key: str) -> Optional[float]:
    return _num(obj, key, -CURRENT_LIMIT_A, CURRENT_LIMIT_A)


def _kwh(obj: Any, key: str) -> Optional[float]:
    wh = _num(obj, key, 0.0, ENERGY_MAX_WH)
    return None if wh is None else wh / 1000.0


def _sum_or_none(values) -> Optional[float]:
    values = list(values)
    if not values or any(v is None for v in values):
        return None
    return float(sum(values))


# ---------------------------------------------------------------- readings

@dataclass(frozen=True)
class PhaseReading:
    power_w: Optional[float]
    voltage_v: Optional[float] = None
    current_a: Optional[float] = None
    energy_import_kwh: Optional[float] = None
    energy_export_kwh: Optional[float] = None

    def to_body(self) -> dict:
        body = {"power_w": self.power_w}
        for name in ("voltage_v", "current_a", "energy_import_kwh", "energy_export_kwh"):
            value = getattr(self, name)
            if value is not None:
                body[name] = value
        return body


@dataclass(frozen=True)
class MeterReading:
    """One sample. `power_w` is signed (positive = import), the sum of the phases/the configured channel."""
    device: str
    power_w: float
    phases: tuple
    sample_t_mono: float
    energy_import_kwh: Optional[float] = None
    energy_export_kwh: Optional[float] = None
    device_time: Optional[float] = None
    values: tuple = field(default=(), compare=False)   # every raw measured number, to spot frozen readings

    def to_body(self) -> dict:
        body = {"device": self.device, "power_w": self.power_w, "sign": SIGN,
                "phases": [p.to_body() for p in self.phases], "sample_t_mono": self.sample_t_mono}
        for name in ("energy_import_kwh", "energy_export_kwh", "device_time"):
            value = getattr(self, name)
            if value is not None:
                body[name] = value
        return body


@dataclass(frozen=True)
class MeterValues:
    """What a parser extracts; the client adds the device name and the arrival time."""
    power_w: float
    phases: tuple
    energy_import_kwh: Optional[float] = None
    energy_export_kwh: Optional[float] = None
    device_time: Optional[float] = None
    values: tuple = ()


def _require_dict(host: str, body: Any, what: str) -> dict:
    if body is None:
        raise ShellyInvalidResponse(host, f"{what}: answer is null")
    if not isinstance(body, dict):
        raise ShellyInvalidResponse(host, f"{what}: answer is a {type(body).__name__}, not an object")
    return body


def _raw_numbers(obj: dict, keys) -> tuple:
    out = []
    for key in keys:
        value = obj.get(key)
        out.append(value if isinstance(value, (int, float)) and not isinstance(value, bool) else None)
    return tuple(out)


def parse_gen1_status(host: str, body: Any, three_phase: bool, channel: int = 0) -> MeterValues:
    """Gen1 `GET /status` of a Shelly EM (one channel: `channel`) or 3EM (sum of the three phases)."""
    body = _require_dict(host, body, "/status")
    emeters = body.get("emeters")
    if not isinstance(emeters, list) or not emeters or not all(isinstance(e, dict) for e in emeters):
        raise ShellyInvalidResponse(host, "/status: no emeters list")
    device_time = _num(body, "unixtime", 0, 1.0e11)
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
        power = _power(em, "power")
        if power is None:
            raise ShellyInvalidResponse(host, f"emeter {index}: power missing or not a number")
        voltage = _voltage(em, "voltage")
        current = _current(em, "current")
        if current is None and "current" not in em and voltage is not None and voltage > 1.0:
            current = power / voltage         # Shelly EM has no current field
        phases.append(PhaseReading(power, voltage, current, _kwh(em, "total"), _kwh(em, "total_returned")))
        raw.extend(_raw_numbers(em, ("power", "reactive", "pf", "current", "voltage", "total", "total_returned")))
    if three_phase:
        total = _power(body, "total_power")
        power_w = total if total is not None else sum(p.power_w for p in phases)
        raw.append(body.get("total_power") if total is not None else None)
    else:
        power_w = phases[0].power_w
    return MeterValues(power_w, tuple(phases),
                       _sum_or_none(p.energy_import_kwh for p in phases),
                       _sum_or_none(p.energy_export_kwh for p in phases),
                       device_time, tuple(raw))


def _gen2_errors(obj: dict, keys) -> list[str]:
    found = []
    for key in keys:
        if key not in obj:
            continue
        value = obj[key]
        if isinstance(value, list):
            found.extend(f"{key}: {_clip(str(item), 40)}" for item in value)
        elif value:
            found.append(f"{key}: {_clip(str(value), 40)}")
    return found


def parse_em1(host: str, status: Any, data: Any = None) -> MeterValues:
    """Gen2+ `EM1.GetStatus?id=N` (+ optional `EM1Data.GetStatus?id=N`): Pro EM, EM Gen3/Gen4, monophase Pro 3EM."""
    status = _require_dict(host, status, "EM1.GetStatus")
    errors = _gen2_errors(status, ("errors",))
    if errors:
        raise ShellyInvalidReading(host, "EM1 errors: " + ", ".join(errors))
    power = _power(status, "act_power")
    if power is None:
        raise ShellyInvalidResponse(host, "EM1.GetStatus: act_power missing or not a number")
    e_in = e_out = None
    if isinstance(data, dict):
        e_in, e_out = _kwh(data, "total_act_energy"), _kwh(data, "total_act_ret_energy")
    phase = PhaseReading(power, _voltage(status, "voltage"), _current(status, "current"), e_in, e_out)
    raw = _raw_numbers(status, ("act_power", "aprt_power", "voltage", "current", "pf", "freq"))
    return MeterValues(power, (phase,), e_in, e_out, None, raw)


def parse_em(host: str, status: Any, data: Any = None) -> MeterValues:
    """Gen2+ `EM.GetStatus?id=0` (+ optional `EMData.GetStatus?id=0`): Pro 3EM / 3EM-63 in triphase profile."""
    status = _require_dict(host, status, "EM.GetStatus")
    errors = _gen2_errors(status, ("errors", "a_errors", "b_errors", "c_errors", "n_errors"))
    if errors:
        raise ShellyInvalidReading(host, "EM errors: " + ", ".join(errors))
    data = data if isinstance(data, dict) else {}
    phases, raw = [], []
    for p in ("a", "b", "c"):
        phases.append(PhaseReading(_power(status, f"{p}_act_power"), _voltage(status, f"{p}_voltage"),
                                   _current(status, f"{p}_current"), _kwh(data, f"{p}_total_act_energy"),
                                   _kwh(data, f"{p}_total_act_ret_energy")))
        raw.extend(_raw_numbers(status, (f"{p}_act_power", f"{p}_aprt_power", f"{p}_voltage", f"{p}_current",
                                         f"{p}_pf", f"{p}_freq")))
    total = _power(status, "total_act_power")
    if total is None:
        total = _sum_or_none(p.power_w for p in phases)
    if total is None:
        raise ShellyInvalidResponse(host, "EM.GetStatus: total_act_power missing or not a number")
    raw.extend(_raw_numbers(status, ("total_act_power", "total_current", "total_aprt_power")))
    e_in, e_out = _kwh(data, "total_act"), _kwh(data, "total_act_ret")
    return MeterValues(total, tuple(phases), e_in, e_out, None, tuple(raw))


# ---------------------------------------------------------------- detection

# Gen2+ model id prefixes -> meter component (reference §1)
_EM1_MODELS = ("SPEM-002", "S3EM-002", "S4EM-001")
_EM_MODELS = ("SPEM-003", "S3EM-003")
GEN1_METERS = {"SHEM": False, "SHEM-3": True}     # type -> three_phase


@dataclass(frozen=True)
class DeviceInfo:
    gen: int
    model: str                    # Gen1 `type`, Gen2 `model`
    device_id: Optional[str] = None
    auth_required: Optional[bool] = None
    profile: Optional[str] = None
    app: Optional[str] = None

    @property
    def meter_component(self) -> Optional[str]:
        """Gen1: 'gen1' / 'gen1_3phase'; Gen2: 'em' or 'em1'; None if this is no known meter."""
        if self.gen == 1:
            if self.model in GEN1_METERS:
                return "gen1_3phase" if GEN1_METERS[self.model] else "gen1"
            return None
        if self.profile == "monophase":
            return "em1"
        if self.profile == "triphase":
            return "em"
        if self.model.startswith(_EM_MODELS) or self.app in ("Pro3EM", "Pro3EM63", "S3EM63"):
            return "em"
        if self.model.startswith(_EM1_MODELS) or self.app in ("ProEM", "EMG3", "EMG4", "EMMiniG4"):
            return "em1"
        return None


def parse_device_info(host: str, body: Any) -> DeviceInfo:
    """`GET /shelly`: Gen1 has no `gen` key (aioshelly: `info.get("gen", 1)`)."""
    body = _require_dict(host, body, "/shelly")
    gen = body.get("gen", 1)
    if isinstance(gen, bool) or not isinstance(gen, int) or not 1 <= gen <= 9:
        raise ShellyInvalidResponse(host, f"/shelly: gen {gen!r} is not a generation")
    if gen == 1:
        model = body.get("type")
        auth = body.get("auth")
    else:
        model = body.get("model")
        auth = body.get("auth_en")
    if not isinstance(model, str) or not model:
        raise ShellyInvalidResponse(host, "/shelly: no model/type")

    def opt_str(key):
        value = body.get(key)
        return value if isinstance(value, str) and value else None

    return DeviceInfo(gen, model, opt_str("id"), auth if isinstance(auth, bool) else None,
                      opt_str("profile"), opt_str("app"))


def detect(host: str, timeout_s: float = 2.0, clock=SYSTEM_CLOCK) -> DeviceInfo:
    """GET /shelly (never needs a password) and return the generation and model."""
    http = ShellyHttp(host, timeout_s=timeout_s, clock=clock)
    try:
        body, _ = http.get("/shelly")
    finally:
        http.close()
    return parse_device_info(http.host, body)


# ---------------------------------------------------------------- meters

class Meter:
    """Base of the meter clients: `read()` returns one MeterReading or raises a ShellyError."""
    gen = 0

    def __init__(self, host: str, credentials: Credentials, timeout_s: float, model: str, clock=SYSTEM_CLOCK,
                 auth_mode: str = "auto"):
        self.http = ShellyHttp(host, timeout_s=timeout_s, credentials=credentials, auth_mode=auth_mode,
                               clock=clock)
        self.host = self.http.host
        self.model = model
        self.clock = clock

    def read(self) -> MeterReading:
        raise NotImplementedError

    def close(self) -> None:
        self.http.close()

    def _reading(self, values: MeterValues, t_mono: float) -> MeterReading:
        return MeterReading(self.model, values.power_w, values.phases, t_mono, values.energy_import_kwh,
                            values.energy_export_kwh, values.device_time, values.values)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.host}, {self.model})"


class Gen1Meter(Meter):
    """Shelly EM (channel `channel`) or 3EM (sum of phases) via `GET /status`, Basic auth."""
    gen = 1

    def __init__(self, host: str, credentials: Credentials, timeout_s: float, model: Optional[str] = None,
                 channel: int = 0, clock=SYSTEM_CLOCK):
        super().__init__(host, credentials, timeout_s, model or "SHEM", clock, auth_mode="basic")
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


class Gen2Meter(Meter):
    """Gen2+ RPC over HTTP GET, Digest auth. component 'em1' (channel `channel`) or 'em' (three phases).

    Energy counters (EM1Data/EMData) cost a second request, so they are read at most every `energy_interval_s`,
    after the power reading. Samples carry the last counters read (cumulative Wh: a few seconds of age do not
    matter for them) while they are younger than 3 intervals; a failed counter read never holds up the power.
    """
    gen = 2

    def __init__(self, host: str, credentials: Credentials, timeout_s: float, model: str, component: str,
                 channel: int = 0, energy_interval_s: float = 5.0, clock=SYSTEM_CLOCK):
        super().__init__(host, credentials, timeout_s, model, clock, auth_mode="digest")
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
    body = _require_dict(host, body, "Shelly.GetStatus")
    if "em:0" in body:
        return "em"
    if f"em1:{channel}" in body:
        return "em1"
    raise ShellyUnsupportedDevice(host, "no em:0 or em1 component: not an energy meter")


def connect_meter(host: str, credentials: Credentials, *, type_: str = "auto", timeout_s: float = 2.0,
                  channel: int = 0, clock=SYSTEM_CLOCK) -> Meter:
    """Build the right client. `type_` auto: detect with GET /shelly; gen1/gen2: skip or narrow detection."""
    info: Optional[DeviceInfo] = None
    if type_ == "gen1":
        return Gen1Meter(host, credentials, timeout_s, None, channel, clock)
    try:
        info = detect(host, timeout_s, clock)
    except (ShellyHttpError, ShellyInvalidResponse):
        if type_ != "gen2":
            raise
    if info is not None and type_ == "auto" and info.gen == 1:
        if info.meter_component is None:
            raise ShellyUnsupportedDevice(base_url(host).split("://", 1)[1],
                                          f"Gen1 type {info.model!r} is not an EM or 3EM")
        return Gen1Meter(host, credentials, timeout_s, info.model, channel, clock)
    if info is not None and type_ == "gen2" and info.gen == 1:
        raise ShellyUnsupportedDevice(base_url(host).split("://", 1)[1],
                                      f"type = gen2 configured, but the device is Gen1 {info.model!r}")
    model = info.model if info is not None else "gen2"
    component = info.meter_component if info is not None else None
    if component is None:
        probe = ShellyHttp(host, timeout_s=timeout_s, credentials=credentials, auth_mode="digest", clock=clock)
        try:
            body, _ = probe.get("/rpc/Shelly.GetStatus")
        finally:
            probe.close()
        component = gen2_component_from_status(probe.host, body, channel)
    return Gen2Meter(host, credentials, timeout_s, model, component, channel, clock=clock)


# ---------------------------------------------------------------- the relay

@dataclass(frozen=True)
class RelayResult:
    ok: bool                         # the device confirmed the asked state (and, for on, a running timer)
    on: Optional[bool]               # state the device reported; None if unknown
    timer_remaining_s: Optional[float] = None
    error_kind: Optional[str] = None
    detail: Optional[str] = None


def parse_relay_answer(answer: Any, want_on: bool) -> RelayResult:
    """Judge a relay URL's answer. Gen1 `/relay/N` (and the Gen1-style endpoint of Gen2): relay state with
    `ison` and the timer. Gen2 `Switch.Set`: `{"was_on": ...}` (or wrapped in `result`), which only says the
    command was accepted; the caller then reads Switch.GetStatus to learn the state."""
    if isinstance(answer, dict) and isinstance(answer.get("result"), dict):
        answer = answer["result"]
    if not isinstance(answer, dict):
        return RelayResult(False, None, None, "invalid", "answer is not a JSON object")
    if "ison" in answer:
        ison = answer.get("ison")
        if not isinstance(ison, bool):
            return RelayResult(False, None, None, "invalid", f"ison is {ison!r}")
        remaining = _num(answer, "timer_remaining", 0, 1.0e7)
        has_timer = answer.get("has_timer") is True
        if ison != want_on:
            return RelayResult(False, ison, remaining, "unconfirmed",
                               f"asked {'on' if want_on else 'off'}, relay reports {'on' if ison else 'off'}")
        if want_on and not (has_timer and remaining is not None and remaining > 0):
            return RelayResult(False, ison, remaining, "no_timer",
                               "relay on without a running flip-back timer: the life signal would not expire "
                               "(keepalive_url needs timer=...)")
        return RelayResult(True, ison, remaining if want_on else None)
    if "was_on" in answer:
        was_on = answer.get("was_on")
        if not isinstance(was_on, bool):
            return RelayResult(False, None, None, "invalid", f"was_on is {was_on!r}")
        return RelayResult(True, None, None, None, "Switch.Set accepted")
    return RelayResult(False, None, None, "invalid", "answer has neither ison nor was_on")


def parse_switch_status(answer: Any, want_on: bool) -> RelayResult:
    """Gen2 `Switch.GetStatus`: `output`, and `timer_started_at`/`timer_duration` while a timer runs."""
    if not isinstance(answer, dict) or not isinstance(answer.get("output"), bool):
        return RelayResult(False, None, None, "invalid", "Switch.GetStatus: no output state")
    on = answer["output"]
    duration = _num(answer, "timer_duration", 0, 1.0e7)
    if on != want_on:
        return RelayResult(False, on, None, "unconfirmed",
                           f"asked {'on' if want_on else 'off'}, switch reports {'on' if on else 'off'}")
    if want_on and not duration:
        return RelayResult(False, on, None, "no_timer",
                           "switch on without a flip-back timer: the life signal would not expire "
                           "(keepalive_url needs toggle_after=...)")
    # just armed: the remaining time is the whole duration
    return RelayResult(True, on, duration if want_on else None)


class RelayClient:
    """Carries out one relay command: GET the configured URL, verify the answer, report a RelayResult.

    Credentials: those of the meter with the same host:port as the URL (passed in by the caller), else none.
    The scheme (Basic/Digest) follows the device's 401 challenge.
    """

    def __init__(self, url: str, timeout_s: float, credentials: Credentials = Credentials(), clock=SYSTEM_CLOCK):
        parts = urlsplit(url)
        self.url = url
        self.http = ShellyHttp(f"{parts.scheme}://{parts.netloc}", timeout_s=timeout_s, credentials=credentials,
                               auth_mode="auto", clock=clock)
        self.host = self.http.host

    def close(self) -> None:
        self.http.close()

    def switch(self, want_on: bool) -> RelayResult:
        try:
            answer, _ = self.http.get(self.url)
        except ShellyError as exc:
            return RelayResult(False, None, None, exc.kind, str(exc))
        result = parse_relay_answer(answer, want_on)
        if not result.ok or result.on is not None:
            return result
        # Gen2 Switch.Set accepted: read the switch back to learn its state and timer
        parts = urlsplit(self.url)
        switch_id = _query_value(parts.query, "id") or "0"
        try:
            status, _ = self.http.get("/rpc/Switch.GetStatus", {"id": switch_id})
        except ShellyError as exc:
            if want_on and _query_value(parts.query, "toggle_after") is None:
                return RelayResult(False, None, None, "no_timer",
                                   "Switch.Set without toggle_after: the life signal would not expire")
            return RelayResult(True, None, None, None,
                               f"Switch.Set accepted; state not verified ({exc.kind}: {exc})")
        return parse_switch_status(status, want_on)


def _query_value(query: str, key: str) -> Optional[str]:
    for part in query.split("&"):
        name, _, value = part.partition("=")
        if name == key:
            return value
    return None
