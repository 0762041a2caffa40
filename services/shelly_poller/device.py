"""What every Shelly client shares: addresses, credentials pinned to a generation, the HTTP layer with strict
decoding, the checked numbers and the readings.

Credentials travel only in an Authorization header, never in a URL or a log. Which scheme is used is decided by
the device's generation, configured or detected and then pinned (`Credentials.gen`): Gen1 gets HTTP Basic, Gen2+
only Digest (gen2.py). A 401 asking for another scheme than the pinned one is an auth error and no credentials
are sent: a Gen2 password never travels as Basic (readable by anyone on the path), even when a spoofed
`/shelly` or a Basic challenge asks for it.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional, Protocol
from urllib.parse import urlencode, urlsplit

from common import http, plausible
from common.clock import SYSTEM_CLOCK
from common.http import HttpError, clip
from common.plausible import Range
from services.shelly_poller.exceptions import (ShellyAuthError, ShellyHttpError, ShellyInvalidResponse,
                                               ShellyRateLimited, as_shelly)

SIGN = "positive_is_import"
MAX_BODY_BYTES = 256 * 1024


# ---------------------------------------------------------------- addresses and credentials

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
    gen: Optional[int] = None          # the generation the password belongs to, once configured or detected

    def __repr__(self) -> str:          # never print the password
        return (f"Credentials(username={self.username!r}, password={'***' if self.password else ''!r}, "
                f"gen={self.gen!r})")

    def pinned(self, gen: int) -> "Credentials":
        return dataclasses.replace(self, gen=gen)


def credentials_for(section) -> Credentials:
    """A meter section's credentials, pinned when `type` names the generation."""
    gen = {"gen1": 1, "gen2": 2}.get(getattr(section, "type", "auto"))
    return Credentials(section.username, section.password, gen)


class Auth(Protocol):
    username: str

    def header(self, method: str, uri: str) -> Optional[str]: ...

    def on_challenge(self, header: str) -> bool: ...


class BasicAuth:
    """Gen1: HTTP Basic, sent up front (only ever built for credentials pinned to Gen1)."""

    def __init__(self, username: str, password: str):
        self.username = username
        self._value = http.basic_auth(username, password)

    def header(self, method: str, uri: str) -> Optional[str]:
        return self._value

    def on_challenge(self, header: str) -> bool:
        return False            # sent already: a 401 means wrong credentials


# ---------------------------------------------------------------- HTTP

class ShellyHttp:
    """GET JSON from one device over common.http (total deadline `timeout_s`), with the given auth (None: no
    credentials) and strict decoding. `resolve_auth(challenge)` may supply the auth on the first 401 (the
    relay, whose generation may be unknown until then)."""

    def __init__(self, base: str, *, timeout_s: float, auth: Optional[Auth] = None, clock=SYSTEM_CLOCK,
                 resolve_auth=None):
        self.base = base_url(base)
        self._http = http.Transport(self.base, timeout_s, MAX_BODY_BYTES, clock)
        self.host = self._http.host
        self.timeout_s = float(timeout_s)
        self.auth = auth
        self.resolve_auth = resolve_auth
        self.clock = clock

    def close(self) -> None:
        pass          # no connection outlives a request

    def get(self, path_or_url: str, params: Optional[dict] = None) -> tuple[Any, float]:
        """GET and decode a JSON body. Returns (json, t_mono when the full response had arrived)."""
        if "://" in path_or_url:
            parts = urlsplit(path_or_url)
            target = (parts.path or "/") + ("?" + parts.query if parts.query else "")
        else:
            target = path_or_url
        if params:
            target += ("&" if "?" in target else "?") + urlencode(params)
        resp = self._request(target)
        if resp.status_code == 401:
            challenge = (resp.headers.get("WWW-Authenticate") or "").strip()
            resolved = False
            if self.auth is None and self.resolve_auth is not None:
                self.auth = self.resolve_auth(challenge)
                resolved = self.auth is not None
            if self.auth is not None and (self.auth.on_challenge(challenge) or resolved):
                resp = self._request(target)
        return self._decode(resp), resp.t_mono

    def _request(self, target: str) -> http.Answer:
        authorization = self.auth.header("GET", target) if self.auth is not None else None
        try:
            return self._http.request("GET", target, {"Authorization": authorization} if authorization else None)
        except HttpError as exc:
            raise as_shelly(self.host, exc) from None

    def _decode(self, resp: http.Answer) -> Any:
        status = resp.status_code
        if status == 401:
            if self.auth is None:
                raise ShellyAuthError(self.host, "the device requires a password, none is configured "
                                                 "(or none fits its generation)")
            raise ShellyAuthError(self.host, f"authentication failed for user {self.auth.username!r}: "
                                             "wrong password?")
        if status == 429:
            raise ShellyRateLimited(self.host, "too many requests (HTTP 429)")
        text = resp.content.decode("utf-8", errors="replace")
        looks_html = "html" in (resp.headers.get("Content-Type") or "").lower() or text.lstrip().startswith("<")
        if not 200 <= status < 300:
            code, message = rpc_error(text)
            if code == 429:
                raise ShellyRateLimited(self.host, f"too many requests ({message or 'code 429'})")
            detail = f"HTTP {status}"
            if code is not None:
                detail += f", error {code}: {clip(message)}"
            raise ShellyHttpError(self.host, detail, status=status, code=code)
        if looks_html:
            raise ShellyInvalidResponse(self.host, "answered with an HTML page instead of JSON", kind="html")
        try:
            value = http.decode_json(resp.content)
        except HttpError as exc:
            raise ShellyInvalidResponse(self.host, str(exc)) from None
        if value is None:
            raise ShellyInvalidResponse(self.host, "answer is null")
        if isinstance(value, dict):
            if isinstance(value.get("error"), dict) or (set(value) <= {"code", "message"} and "code" in value):
                code, message = rpc_error(text)
                if code == 429:
                    raise ShellyRateLimited(self.host, f"too many requests ({message or 'code 429'})")
                raise ShellyHttpError(self.host, f"RPC error {code}: {clip(message)}", status=status, code=code)
        return value


def rpc_error(text: str) -> tuple[Optional[int], Optional[str]]:
    """Error code and message from `{"error":{"code","message"}}` or a bare `{"code","message"}`."""
    try:
        value = http.decode_json(text)
    except HttpError:
        return None, None
    if isinstance(value, dict) and isinstance(value.get("error"), dict):
        value = value["error"]
    if not isinstance(value, dict):
        return None, None
    code = value.get("code")
    message = value.get("message")
    return (code if isinstance(code, int) and not isinstance(code, bool) else None,
            message if isinstance(message, str) else None)


# ---------------------------------------------------------------- numbers

def num(obj: Any, key: str, rng: Range) -> Optional[float]:
    """A finite number within `rng` from obj[key], else None (bool is not a number)."""
    return plausible.in_range(obj.get(key), rng) if isinstance(obj, dict) else None


def power(obj: Any, key: str) -> Optional[float]:
    return num(obj, key, plausible.POWER_W)


def voltage(obj: Any, key: str) -> Optional[float]:
    return num(obj, key, plausible.VOLTAGE_V)


def current(obj: Any, key: str) -> Optional[float]:
    return num(obj, key, plausible.CURRENT_A)


def kwh(obj: Any, key: str) -> Optional[float]:
    wh = num(obj, key, plausible.ENERGY_WH)
    return None if wh is None else wh / 1000.0


def sum_or_none(values) -> Optional[float]:
    values = list(values)
    if not values or any(v is None for v in values):
        return None
    return float(sum(values))


def require_dict(host: str, body: Any, what: str) -> dict:
    if body is None:
        raise ShellyInvalidResponse(host, f"{what}: answer is null")
    if not isinstance(body, dict):
        raise ShellyInvalidResponse(host, f"{what}: answer is a {type(body).__name__}, not an object")
    return body


def raw_numbers(obj: dict, keys) -> tuple:
    """The measured numbers as sent (only compared, to spot frozen readings)."""
    out = []
    for key in keys:
        value = obj.get(key)
        out.append(value if isinstance(value, (int, float)) and not isinstance(value, bool) else None)
    return tuple(out)


# ---------------------------------------------------------------- readings

def _with_known(body: dict, obj, names) -> dict:
    """body plus each of obj's fields `names` that is not None."""
    body.update((name, getattr(obj, name)) for name in names if getattr(obj, name) is not None)
    return body


@dataclass(frozen=True)
class PhaseReading:
    power_w: Optional[float]
    voltage_v: Optional[float] = None
    current_a: Optional[float] = None
    energy_import_kwh: Optional[float] = None
    energy_export_kwh: Optional[float] = None

    def to_body(self) -> dict:
        return _with_known({"power_w": self.power_w}, self,
                           ("voltage_v", "current_a", "energy_import_kwh", "energy_export_kwh"))


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
        return _with_known(body, self, ("energy_import_kwh", "energy_export_kwh", "device_time"))


@dataclass(frozen=True)
class MeterValues:
    """What a parser extracts; the client adds the device name and the arrival time."""
    power_w: float
    phases: tuple
    energy_import_kwh: Optional[float] = None
    energy_export_kwh: Optional[float] = None
    device_time: Optional[float] = None
    values: tuple = ()


class Meter:
    """Base of the meter clients: `read()` returns one MeterReading or raises a ShellyError."""
    gen = 0

    def __init__(self, host: str, auth: Optional[Auth], timeout_s: float, model: str, clock=SYSTEM_CLOCK):
        self.http = ShellyHttp(host, timeout_s=timeout_s, auth=auth, clock=clock)
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
