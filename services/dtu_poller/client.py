"""A small OpenDTU HTTP client: every answer is checked before use, every failure is an error of a named kind.

Facts: docs/opendtu-api.md; OpenDTU's Web API (github.com/tbnobody/OpenDTU, `src/WebApi_*.cpp`,
`docs/Web-API.md`). Unknown paths answer 200 with HTML, out-of-memory answers are 429 / 500 / `null`, validation
failures are 200 with type "warning", NaN prints as `null`. Values that are missing or NaN become None, never 0; a
value of the wrong shape, or a number outside its plausible range (common.plausible), makes the whole answer invalid.

Parsing is pure (`parse_*` functions); `OpenDtuClient` only adds HTTP (common.http: a total deadline per request)
around it. Every failure is a DtuError (each a subclass of common.http's error of the same kind); nothing else
escapes a call.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Optional
from urllib.parse import urlencode

from common import http, plausible
from common.clock import SYSTEM_CLOCK
from common.http import (HttpAuthError, HttpConnectionError, HttpError, HttpRateLimited, HttpStatusError,
                         HttpTimeout, InvalidResponse)
from common.plausible import Range


MAX_BODY_BYTES = 1 << 20       # a full legacy livedata answer for 16 inverters is ~200 KB

# ------------------------------------------------------------------ errors

class DtuError(HttpError):
    """Base of every OpenDTU problem. `kind` (from the common error each subclass also is) is what dtu.status
    publishes as error_kind."""


class DtuConnectionError(DtuError, HttpConnectionError):
    pass


class DtuTimeout(DtuError, HttpTimeout):
    pass


class DtuAuthError(DtuError, HttpAuthError):
    pass


class DtuRateLimited(DtuError, HttpRateLimited):
    pass


class DtuHttpError(DtuError, HttpStatusError):
    def __init__(self, message: str, status: int):
        super().__init__(message, status)


class DtuInvalidResponse(DtuError, InvalidResponse):
    """HTML instead of JSON, a `null` body, garbage, missing fields, bad value shapes, implausible numbers."""


class DtuRejected(DtuError):
    """HTTP 200 but type warning/danger: the DTU refused the command."""
    kind = "rejected"

    def __init__(self, message: str, code: Optional[int] = None):
        super().__init__(message)
        self.code = code


_AS_DTU = {HttpConnectionError: DtuConnectionError, HttpTimeout: DtuTimeout}


# ------------------------------------------------------------------ parsed answers

@dataclass
class DcInput:
    voltage_v: Optional[float]
    current_a: Optional[float]
    power_w: Optional[float]


@dataclass
class InverterSummary:
    """The common fields of one inverter (plain livedata call)."""
    serial: str
    name: str
    order: Optional[int]
    data_age_s: float
    reachable: bool
    producing: bool
    poll_enabled: Optional[bool]
    limit_relative_pct: Optional[float]
    limit_absolute_w: Optional[float]
    age_resolution_s: float = 1.0          # 0.001 with data_age_ms (v25.4.2+), else whole seconds


@dataclass
class InverterLive(InverterSummary):
    """Summary plus channel data (`?inv=<serial>`)."""
    ac_power_w: Optional[float] = None
    ac_voltage_v: Optional[float] = None
    temperature_c: Optional[float] = None
    yield_total_kwh: Optional[float] = None
    dc_inputs: list = field(default_factory=list)
    has_channels: bool = False


@dataclass
class LimitStatus:
    limit_relative_pct: Optional[float]
    max_power_w: Optional[float]
    status: str                    # Ok | Pending | Failure | Unknown
    applied_t_mono: Optional[float] = None   # Ok: when the inverter took it, if known before Ok is seen (AhoyDTU)


# ------------------------------------------------------------------ pure parsing

def decode_json(text: str | bytes) -> Any:
    """Strict JSON (no NaN/Infinity literals: OpenDTU prints NaN as null; no overflowing numbers)."""
    try:
        return http.decode_json(text)
    except InvalidResponse as exc:
        raise DtuInvalidResponse(str(exc)) from None


def _number(value: Any, where: str, rng: Range, allow_none: bool = True) -> Optional[float]:
    """A finite number within `rng`; None for null (OpenDTU's NaN); DtuInvalidResponse for anything else."""
    if value is None and allow_none:
        return None
    reason = plausible.why_not(value, rng)
    if reason is not None:
        raise DtuInvalidResponse(f"{where}: {reason}")
    return float(value)


def _opt_number(obj: dict, key: str, where: str, rng: Range) -> Optional[float]:
    return _number(obj.get(key), f"{where}.{key}", rng)


# the plausible range of each channel value read (unit as OpenDTU sends it)
_CHANNEL_RANGES = {"Power": plausible.POWER_W, "Voltage": plausible.VOLTAGE_V, "Current": plausible.CURRENT_A,
                   "Temperature": plausible.TEMPERATURE_C, "YieldTotal": plausible.ENERGY_KWH}


def _vud(group: Any, key: str, where: str) -> Optional[float]:
    """The `v` of a {v,u,d} object; None when the key is missing or v is null/NaN; invalid on a bad shape."""
    if group is None:
        return None
    if not isinstance(group, dict):
        raise DtuInvalidResponse(f"{where}: channel is not an object")
    if key not in group:
        return None
    obj = group[key]
    if not isinstance(obj, dict) or "v" not in obj:
        raise DtuInvalidResponse(f"{where}.{key}: not a {{v,u,d}} object")
    return _number(obj["v"], f"{where}.{key}.v", _CHANNEL_RANGES[key])


def _channel(doc: dict, group: str, channel: str, where: str) -> Optional[dict]:
    obj = doc.get(group)
    if obj is None:
        return None
    if not isinstance(obj, dict):
        raise DtuInvalidResponse(f"{where}.{group}: not an object")
    ch = obj.get(channel)
    if ch is not None and not isinstance(ch, dict):
        raise DtuInvalidResponse(f"{where}.{group}.{channel}: not an object")
    return ch


def _inverter_list(doc: Any) -> list:
    if doc is None:
        raise DtuInvalidResponse("body is null")
    if not isinstance(doc, dict) or not isinstance(doc.get("inverters"), list):
        raise DtuInvalidResponse("livedata without an 'inverters' list")
    return doc["inverters"]


def _summary_fields(item: Any, where: str) -> dict:
    if not isinstance(item, dict):
        raise DtuInvalidResponse(f"{where}: not an object")
    serial = item.get("serial")
    if not isinstance(serial, str) or not re.fullmatch(r"[0-9a-fA-F]{1,16}", serial):
        raise DtuInvalidResponse(f"{where}.serial: missing or not a hex string")
    where = f"inverter {serial}"
    for key in ("reachable", "producing"):
        if not isinstance(item.get(key), bool):
            raise DtuInvalidResponse(f"{where}.{key}: missing or not a boolean")
    age_ms = _opt_number(item, "data_age_ms", where, plausible.AGE_MS)
    age = _number(item.get("data_age"), f"{where}.data_age", plausible.AGE_S, allow_none=False) \
        if "data_age" in item else None
    resolution_s = 1.0
    if age_ms is not None:
        data_age_s, resolution_s = age_ms / 1000.0, 0.001
    elif age is not None:
        data_age_s = age
    else:
        raise DtuInvalidResponse(f"{where}.data_age: missing")
    name = item.get("name")
    order = item.get("order")
    order = None if isinstance(order, bool) or not isinstance(order, int) \
        else int(_number(order, f"{where}.order", plausible.ORDER))
    poll_enabled = item.get("poll_enabled")
    return dict(
        serial=serial.lower(),
        name=name if isinstance(name, str) else serial,
        order=order,
        data_age_s=data_age_s,
        reachable=item["reachable"],
        producing=item["producing"],
        poll_enabled=poll_enabled if isinstance(poll_enabled, bool) else None,
        limit_relative_pct=_opt_number(item, "limit_relative", where, plausible.PERCENT),
        limit_absolute_w=_opt_number(item, "limit_absolute", where, plausible.POWER_W),
        age_resolution_s=resolution_s,
    )


def parse_livedata_summary(doc: Any) -> list[InverterSummary]:
    """The plain call: every inverter, in the DTU's order (its `order` field, as the web UI shows them; the
    array position where `order` is missing, before v23.5.31)."""
    out = [InverterSummary(**_summary_fields(item, f"inverters[{i}]"))
           for i, item in enumerate(_inverter_list(doc))]
    positions = {id(inv): i for i, inv in enumerate(out)}
    out.sort(key=lambda inv: (inv.order if inv.order is not None else 1 << 30, positions[id(inv)]))
    seen = set()
    for inv in out:
        if inv.serial in seen:
            raise DtuInvalidResponse(f"serial {inv.serial} listed twice")
        seen.add(inv.serial)
    return out


def parse_livedata_inverter(doc: Any, serial: str) -> Optional[InverterLive]:
    """`?inv=<serial>`: pick the element whose serial matches (old firmware ignores ?inv= and sends all).

    None when the DTU does not know the serial (any more). Yield from INV."0", else AC."0" (before v24.2.12)."""
    serial = serial.lower()
    for i, item in enumerate(_inverter_list(doc)):
        if not isinstance(item, dict) or not isinstance(item.get("serial"), str) \
                or item["serial"].lower() != serial:
            continue
        base = _summary_fields(item, f"inverters[{i}]")
        where = f"inverter {serial}"
        ac0 = _channel(item, "AC", "0", where)
        inv0 = _channel(item, "INV", "0", where)
        dc_group = item.get("DC")
        if dc_group is not None and not isinstance(dc_group, dict):
            raise DtuInvalidResponse(f"{where}.DC: not an object")
        dc_inputs = []
        # ASCII channel numbers only ("²".isdigit() is true, int("²") raises)
        for key in sorted((k for k in (dc_group or {}) if re.fullmatch(r"[0-9]{1,3}", k)), key=int):
            ch = _channel(item, "DC", key, where)
            dc_inputs.append(DcInput(voltage_v=_vud(ch, "Voltage", f"{where}.DC.{key}"),
                                     current_a=_vud(ch, "Current", f"{where}.DC.{key}"),
                                     power_w=_vud(ch, "Power", f"{where}.DC.{key}")))
        yield_total = _vud(inv0, "YieldTotal", f"{where}.INV.0")
        if yield_total is None:
            yield_total = _vud(ac0, "YieldTotal", f"{where}.AC.0")
        return InverterLive(
            **base,
            ac_power_w=_vud(ac0, "Power", f"{where}.AC.0"),
            ac_voltage_v=_vud(ac0, "Voltage", f"{where}.AC.0"),
            temperature_c=_vud(inv0, "Temperature", f"{where}.INV.0"),
            yield_total_kwh=yield_total,
            dc_inputs=dc_inputs,
            has_channels=ac0 is not None,
        )
    return None


def parse_limit_status(doc: Any) -> dict[str, LimitStatus]:
    if doc is None:
        raise DtuInvalidResponse("body is null")
    if not isinstance(doc, dict):
        raise DtuInvalidResponse("limit status is not an object")
    out = {}
    for serial, item in doc.items():
        if not isinstance(item, dict):
            raise DtuInvalidResponse(f"limit status {serial}: not an object")
        status = item.get("limit_set_status")
        if not isinstance(status, str):
            raise DtuInvalidResponse(f"limit status {serial}: limit_set_status missing")
        out[serial.lower()] = LimitStatus(
            limit_relative_pct=_opt_number(item, "limit_relative", f"limit status {serial}", plausible.PERCENT),
            max_power_w=_opt_number(item, "max_power", f"limit status {serial}", plausible.RATING_W),
            status=status)
    return out


def parse_power_status(doc: Any) -> dict[str, str]:
    if doc is None:
        raise DtuInvalidResponse("body is null")
    if not isinstance(doc, dict):
        raise DtuInvalidResponse("power status is not an object")
    out = {}
    for serial, item in doc.items():
        if not isinstance(item, dict) or not isinstance(item.get("power_set_status"), str):
            raise DtuInvalidResponse(f"power status {serial}: power_set_status missing")
        out[serial.lower()] = item["power_set_status"]
    return out


def check_command_answer(doc: Any) -> dict:
    """A POST succeeded only with JSON and type == success; warning/danger is DtuRejected with its code."""
    if not isinstance(doc, dict) or not isinstance(doc.get("type"), str):
        raise DtuInvalidResponse("command answer without a type")
    code = doc.get("code") if isinstance(doc.get("code"), int) else None
    if doc["type"] != "success":
        message = doc.get("message") if isinstance(doc.get("message"), str) else ""
        raise DtuRejected(f"{doc['type']} {code}: {message[:120]}", code)
    return doc


def base_url(host: str) -> str:
    """host, host:port or http://host:port -> http://host[:port] (no trailing slash)."""
    host = host.strip().rstrip("/")
    if not host:
        raise ValueError("empty host")
    if not re.match(r"^https?://", host):
        host = "http://" + host
    return host


# ------------------------------------------------------------------ HTTP

class OpenDtuClient:
    """One request per call over common.http's Transport (total deadline `timeout_s`, bounded body); Basic
    auth sent pre-emptively when a password is set. Not thread-safe: one per thread."""

    def __init__(self, host: str, username: str = "admin", password: str = "", timeout_s: float = 2.5,
                 clock=SYSTEM_CLOCK):
        self.url = base_url(host)
        self._http = http.Transport(self.url, timeout_s, MAX_BODY_BYTES, clock)
        self.timeout_s = timeout_s
        self.clock = clock
        self.has_password = bool(password)
        self._headers = {"Authorization": http.basic_auth(username or "admin", password)} if password else {}
        self.last_arrival_t: Optional[float] = None     # monotonic time the last answer arrived

    def close(self) -> None:
        pass          # no connection outlives a request

    def _request(self, method: str, path: str, params: Optional[dict] = None,
                 data: Optional[dict] = None) -> http.Answer:
        """One request; any answer but 200 is the DtuError of its kind."""
        target = self._http.prefix + path + ("?" + urlencode(params) if params else "")
        headers = self._headers
        body = None
        if data is not None:
            body = urlencode(data)
            headers = dict(headers, **{"Content-Type": "application/x-www-form-urlencoded"})
        try:
            answer = self._http.request(method, target, headers, body)
        except InvalidResponse as exc:
            raise DtuInvalidResponse(str(exc), exc.kind) from None
        except HttpError as exc:
            raise _AS_DTU.get(type(exc), DtuConnectionError)(str(exc)) from None
        self.last_arrival_t = answer.t_mono
        if answer.status_code == 401:
            raise DtuAuthError(f"{method} {path}: 401 unauthorised (user name / password)")
        if answer.status_code == 429:
            raise DtuRateLimited(f"{method} {path}: 429 too many requests", http.retry_after_s(answer.headers))
        if answer.status_code != 200:
            raise DtuHttpError(f"{method} {path}: HTTP {answer.status_code}", answer.status_code)
        return answer

    def _json(self, resp: http.Answer, path: str) -> Any:
        ctype = (resp.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/json":
            kind = "html" if "html" in ctype else "invalid"
            raise DtuInvalidResponse(f"{path}: Content-Type {ctype or 'missing'!r}, not JSON "
                                     "(unknown path or old firmware?)", kind)
        doc = decode_json(resp.content)
        if doc is None:
            raise DtuInvalidResponse(f"{path}: body is null (DTU out of memory?)")
        return doc

    def get_json(self, path: str, params: Optional[dict] = None) -> Any:
        return self._json(self._request("GET", path, params=params), path)

    def post_command(self, path: str, data: dict) -> dict:
        resp = self._request("POST", path, data={"data": json.dumps(data)})
        return check_command_answer(self._json(resp, path))

    # -- endpoints
    def livedata_summary(self) -> list[InverterSummary]:
        return parse_livedata_summary(self.get_json("/api/livedata/status"))

    def livedata_inverter(self, serial: str) -> Optional[InverterLive]:
        return parse_livedata_inverter(self.get_json("/api/livedata/status", {"inv": serial}), serial)

    def limit_status(self) -> dict[str, LimitStatus]:
        return parse_limit_status(self.get_json("/api/limit/status"))

    def power_status(self) -> dict[str, str]:
        return parse_power_status(self.get_json("/api/power/status"))

    def command_flags(self) -> dict[str, tuple[bool, bool]]:
        """/api/inverter/list (admin): serial -> (command_enable, command_enable_night)."""
        doc = self.get_json("/api/inverter/list")
        items = doc.get("inverter") if isinstance(doc, dict) else None
        if not isinstance(items, list):
            raise DtuInvalidResponse("/api/inverter/list without an 'inverter' list")
        out = {}
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("serial"), str):
                raise DtuInvalidResponse("/api/inverter/list: an entry without a serial")
            day, night = item.get("command_enable"), item.get("command_enable_night")
            if not isinstance(day, bool) or not isinstance(night, bool):
                raise DtuInvalidResponse(f"/api/inverter/list {item['serial']}: command flags missing")
            out[item["serial"].lower()] = (day, night)
        return out

    def model(self, serial: str) -> Optional[str]:
        """hw_model_name from /api/devinfo/status; None until the DTU has read the device info."""
        doc = self.get_json("/api/devinfo/status", {"inv": serial})
        if not isinstance(doc, dict) or doc.get("valid_data") is not True:
            return None
        name = doc.get("hw_model_name")
        return name[:32] if isinstance(name, str) and name else None

    def firmware(self) -> Optional[str]:
        doc = self.get_json("/api/system/status")
        value = doc.get("git_hash") if isinstance(doc, dict) else None
        return value[:64] if isinstance(value, str) else None

    def set_limit_relative(self, serial: str, limit_pct: float) -> dict:
        """limit_type 1: relative, non-persistent (the same on every firmware). Value clamped to [0, 100]."""
        value = round(min(100.0, max(0.0, float(limit_pct))), 1)
        return self.post_command("/api/limit/config", {"serial": str(serial), "limit_type": 1, "limit_value": value})

    def set_power(self, serial: str, on: bool) -> dict:
        """Start (True) or stop (False) the inverter: /api/power/config {"power": bool}."""
        return self.post_command("/api/power/config", {"serial": str(serial), "power": bool(on)})

    def restart_inverter(self, serial: str) -> dict:
        return self.post_command("/api/power/config", {"serial": str(serial), "restart": True})

    def reboot_dtu(self) -> dict:
        return self.post_command("/api/maintenance/reboot", {"reboot": True})

