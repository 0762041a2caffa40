"""An AhoyDTU (lumapu/ahoy 0.8.x) client that delivers what the OpenDTU client delivers: the same data classes
(InverterSummary, InverterLive, LimitStatus), the same error classes and kinds, the same public methods, so the
reader and the writer work unchanged. The transport is not here: the client takes a `Request` callable.

AhoyDTU facts this relies on (lumapu/ahoy v0.8.156, src/web/RestApi.h, src/web/Protection.h, src/hm/*):
* inverters are addressed by their configuration position (gaps allowed); the serial comes from
  /api/inverter/list. Field values are arrays whose order /api/live names (`ch0_fld_names`, `fld_names`): indices
  are looked up by name, never assumed.
* `ts_last_success` (UTC s of the last live-data exchange) is compared with the DTU's own `ts_now`, not our clock.
* commands: POST /api/ctrl with a JSON body; errors are HTTP 200 {"success": false, "error": "ERR_..."}. The firmware
  checks no range (the value is stored as uint16(val × 10)): everything is clamped here. Limits are only ever sent
  as `limit_nonpersistent_absolute` (W).
* with an admin password a token is needed: one slot per DTU, bound to the caller's IPv4 address, dropped after
  20 min without a new auth or a GET that carries the `generic` block. On ERR_PROTECTED / ERR_AUTH the client
  authenticates once and retries.
* there is no pending or failure state for a limit. `power_limit_ack` turns false when the limit is transmitted
  and true on the inverter's positive reply; the limit is read back (`power_limit_read`, % of rated) at the next
  poll. Commands go to the front of the radio queue, so a live-data exchange that *started after* the command was
  posted (its `ts_last_success` at or beyond the DTU time of the post) proves the command was transmitted; with
  `power_limit_ack` true it was accepted. This client turns that into OpenDTU's states: Pending until proven,
  Ok, or Failure after `resends` timed-out resends. Proven is either the flag seen false after the post and then
  true (the inverter acknowledged this limit: seconds, when the status is read while it is in the air), or
  ack + transmitted + read-back (one refresh later). Waiting for the read-back alone made the controller learn of
  every limit 15 s after the inverter followed it, and the loop swung between minimum and cap; a read-back that
  disagrees still shows in `dtu.inverter` (limit_pct), and the writer re-sends an unchanged limit every minute.

Parsing is pure (`parse_*`); `AhoyClient` adds the request sequence, the token and the command tracking.
"""
from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Protocol

from common.clock import SYSTEM_CLOCK
from services.dtu_poller.client import (DcInput, DtuAuthError, DtuError, DtuHttpError, DtuInvalidResponse,
                                        DtuRejected, InverterLive, InverterSummary, LimitStatus)

log = logging.getLogger(__name__)

DEFAULT_REFRESH_S = 15.0          # SEND_INTERVAL of the firmware; the DTU's own value is read from /api/live
AVAILABLE_STATUSES = (1, 2, 3)    # InverterStatus STARTING, PRODUCING, WAS_PRODUCING (live data < 5 min old)
PRODUCING_STATUS = 2
MAX_LIMIT_W = 6553.5              # uint16(val × 10)
MIN_LIMIT_W = 1.0                 # the manual's lowest absolute limit
ACK_TOLERANCE_PCT = 1.0           # read-back within this of the sent value = applied (one decimal, whole % on HMS)
OFF_MAX_W = 5.0                   # "off" is confirmed by an AC power at most this in a sample after the command
ACK_MARGIN_S = 8.0                # per attempt: one poll interval plus this
LIST_REFRESH_S = 600.0            # /api/inverter/list and /api/live field names are re-read this often
MAX_POSITIONS = 32                # ESP32-S3: 0 … 31
GENERATIONS = {0: "MI", 1: "HM", 2: "HMS", 3: "HMT"}
AUTH_ERRORS = ("ERR_AUTH", "ERR_PROTECTED")


class Request(Protocol):
    """The transport the client needs. Sends `method path` to the gateway (json_body, if given, as a raw
    `application/json` body) and returns (HTTP status, decoded JSON) whenever the body is JSON, whatever the
    status. Raises DtuTimeout / DtuConnectionError when no answer arrives, DtuInvalidResponse (kind "html" for
    HTML, else "invalid") when the body is not JSON, with a message saying what came (status, content type)."""

    def __call__(self, method: str, path: str, json_body: Optional[dict] = None) -> tuple[int, Any]: ...


# ------------------------------------------------------------------ validation

def _num(value: Any, where: str, lo: float, hi: float) -> float:
    """A finite number in [lo, hi] (ints compared before any float conversion: no OverflowError)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DtuInvalidResponse(f"{where}: not a number ({type(value).__name__})")
    if isinstance(value, float) and not math.isfinite(value):
        raise DtuInvalidResponse(f"{where}: not finite")
    if not lo <= value <= hi:
        raise DtuInvalidResponse(f"{where}: {str(value)[:20]} outside {lo:g} … {hi:g}")
    return float(value)


def _int(value: Any, where: str, lo: int, hi: int) -> int:
    number = _num(value, where, lo, hi)
    if number != int(number):
        raise DtuInvalidResponse(f"{where}: not an integer")
    return int(number)


def _obj(doc: Any, where: str) -> dict:
    if not isinstance(doc, dict):
        raise DtuInvalidResponse(f"{where}: not a JSON object")
    if "error" in doc and "success" not in doc and len(doc) == 1:
        raise DtuRejected(f"{where}: {str(doc['error'])[:80]}")     # "inverter not found!" (localised)
    return doc


def _bool(doc: dict, key: str, where: str) -> bool:
    if not isinstance(doc.get(key), bool):
        raise DtuInvalidResponse(f"{where}.{key}: missing or not a boolean")
    return doc[key]


def _str(doc: dict, key: str, where: str, default: Optional[str] = None) -> str:
    value = doc.get(key, default)
    if not isinstance(value, str):
        raise DtuInvalidResponse(f"{where}.{key}: missing or not a string")
    return value


def _ts(value: Any, where: str) -> int:
    return _int(value, where, 0, 2 ** 32 - 1)


def _serial(value: Any, where: str) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[0-9a-fA-F]{1,16}", value):
        raise DtuInvalidResponse(f"{where}.serial: missing or not a hex string")
    return value.lower()


# ------------------------------------------------------------------ parsed answers

@dataclass
class AhoyGeneric:
    version: str
    ts_now: int
    ts_uptime: int
    protected: bool            # menu_protEn: an admin password is set


@dataclass
class AhoySlot:
    """One configured inverter of /api/inverter/list."""
    position: int
    serial: str
    name: str
    enabled: bool
    night_pause: bool          # disnightcom: neither polled nor commanded between sunset and sunrise


@dataclass
class AhoyFields:
    """/api/live: field names in the order of the value arrays, and the poll interval."""
    ac_names: list
    dc_names: list
    refresh_s: float
    enabled: dict              # position -> enabled (iv[])
    ts_now: Optional[int]


@dataclass
class AhoyIndexEntry:
    position: int
    enabled: bool
    available: bool
    producing: bool
    ts_last_success: int


@dataclass
class AhoyIndex:
    ts_now: int
    night: bool                # between sunset and sunrise (+ offsets), only meaningful with night_pause
    inverters: dict            # position -> AhoyIndexEntry


@dataclass
class AhoyRecord:
    """/api/inverter/id/<n>, values looked up by field name."""
    position: int
    serial: str
    name: str
    enabled: bool
    status: int
    power_limit_read_pct: float
    power_limit_ack: bool
    max_power_w: float         # 0 until the inverter's hardware info was read
    ts_last_success: int
    generation: Optional[int]
    ac_power_w: Optional[float]
    ac_voltage_v: Optional[float]
    temperature_c: Optional[float]
    yield_total_kwh: Optional[float]
    dc_inputs: list = field(default_factory=list)


def parse_generic(doc: Any) -> AhoyGeneric:
    """/api/generic (the same block sits as `generic` in /api/index, /api/live, /api/system)."""
    doc = _obj(doc, "/api/generic")
    return AhoyGeneric(version=_str(doc, "version", "generic")[:32],
                       ts_now=_ts(doc.get("ts_now"), "generic.ts_now"),
                       ts_uptime=_ts(doc.get("ts_uptime", 0), "generic.ts_uptime"),
                       protected=doc.get("menu_protEn") is True)


def looks_like_ahoy(doc: Any) -> bool:
    return isinstance(doc, dict) and isinstance(doc.get("version"), str) and "ts_now" in doc \
        and ("esp_type" in doc or "menu_protEn" in doc)


def parse_inverter_list(doc: Any) -> dict[int, AhoySlot]:
    doc = _obj(doc, "/api/inverter/list")
    items = doc.get("inverter")
    if not isinstance(items, list):
        raise DtuInvalidResponse("/api/inverter/list without an 'inverter' list")
    out: dict[int, AhoySlot] = {}
    serials = set()
    for i, item in enumerate(items):
        where = f"inverter/list[{i}]"
        if not isinstance(item, dict):
            raise DtuInvalidResponse(f"{where}: not an object")
        position = _int(item.get("id"), f"{where}.id", 0, MAX_POSITIONS - 1)
        serial = _serial(item.get("serial"), where)
        if position in out or serial in serials:
            raise DtuInvalidResponse(f"{where}: position {position} or serial {serial} listed twice")
        if int(serial, 16) == 0:
            continue                                        # a slot without a serial is not an inverter
        serials.add(serial)
        name = item.get("name")
        out[position] = AhoySlot(position, serial, name[:32] if isinstance(name, str) and name else serial,
                                 enabled=item.get("enabled") is not False,
                                 night_pause=item.get("disnightcom") is True)
    return out


def _names(doc: dict, key: str) -> list:
    names = doc.get(key)
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise DtuInvalidResponse(f"/api/live.{key}: missing or not a list of names")
    return list(names)


def parse_live(doc: Any) -> AhoyFields:
    doc = _obj(doc, "/api/live")
    ac_names = _names(doc, "ch0_fld_names")
    if "P_AC" not in ac_names:
        raise DtuInvalidResponse("/api/live.ch0_fld_names: no P_AC")
    iv = doc.get("iv")
    if not isinstance(iv, list) or len(iv) > MAX_POSITIONS or not all(isinstance(x, bool) for x in iv):
        raise DtuInvalidResponse("/api/live.iv: missing or not a list of booleans")
    generic = doc.get("generic")
    ts_now = _ts(generic.get("ts_now"), "live.generic.ts_now") if isinstance(generic, dict) else None
    return AhoyFields(ac_names=ac_names, dc_names=_names(doc, "fld_names"),
                      refresh_s=_num(doc.get("refresh"), "/api/live.refresh", 1, 86400),
                      enabled=dict(enumerate(iv)), ts_now=ts_now)


def parse_index(doc: Any) -> AhoyIndex:
    doc = _obj(doc, "/api/index")
    ts_now = _ts(doc.get("ts_now"), "index.ts_now")
    items = doc.get("inverter")
    if not isinstance(items, list):
        raise DtuInvalidResponse("/api/index without an 'inverter' list")
    entries = {}
    for i, item in enumerate(items):
        where = f"index.inverter[{i}]"
        if not isinstance(item, dict):
            raise DtuInvalidResponse(f"{where}: not an object")
        position = _int(item.get("id"), f"{where}.id", 0, MAX_POSITIONS - 1)
        entries[position] = AhoyIndexEntry(position, enabled=item.get("enabled") is not False,
                                           available=_bool(item, "is_avail", where),
                                           producing=_bool(item, "is_producing", where),
                                           ts_last_success=_ts(item.get("ts_last_success"),
                                                               f"{where}.ts_last_success"))
    night = False
    sunrise, sunset = doc.get("ts_sunrise"), doc.get("ts_sunset")
    if sunrise and sunset:
        sunrise = _ts(sunrise, "index.ts_sunrise") + _int(doc.get("ts_offsSr", 0), "index.ts_offsSr", -86400, 86400)
        sunset = _ts(sunset, "index.ts_sunset") + _int(doc.get("ts_offsSs", 0), "index.ts_offsSs", -86400, 86400)
        night = ts_now < sunrise or ts_now > sunset
    return AhoyIndex(ts_now=ts_now, night=night, inverters=entries)


_AC_RANGES = {"P_AC": (-100.0, 10000.0), "U_AC": (0.0, 1000.0), "Temp": (-60.0, 150.0), "YieldTotal": (0.0, 1e7)}
_DC_RANGES = {"U_DC": (0.0, 1000.0), "I_DC": (-1.0, 100.0), "P_DC": (-100.0, 10000.0)}


def _field(values: list, names: list, name: str, where: str, ranges: dict) -> Optional[float]:
    """The value named `name`; None when the firmware has no such field. Every named value must be a number in
    its plausible range (a field the inverter lacks reads 0.0, never null)."""
    if name not in names:
        return None
    index = names.index(name)
    if index >= len(values):
        raise DtuInvalidResponse(f"{where}: {len(values)} values, but /api/live names {len(names)} "
                                 "(field list changed?)")
    lo, hi = ranges[name]
    return _num(values[index], f"{where}.{name}", lo, hi)


def parse_inverter(doc: Any, fields: AhoyFields, position: int) -> AhoyRecord:
    where = f"/api/inverter/id/{position}"
    doc = _obj(doc, where)
    got = _int(doc.get("id"), f"{where}.id", 0, MAX_POSITIONS - 1)
    if got != position:
        raise DtuInvalidResponse(f"{where}: answer for position {got}")
    ch = doc.get("ch")
    if not isinstance(ch, list) or not ch or not all(isinstance(c, list) for c in ch) or len(ch) > 7:
        raise DtuInvalidResponse(f"{where}.ch: missing or not a list of value lists")
    for c, values in enumerate(ch):
        for value in values:                                       # every value, named or not, must be sane
            _num(value, f"{where}.ch[{c}]", -1e7, 1e9)
    ac = ch[0]
    dc_inputs = []
    for c, values in enumerate(ch[1:], start=1):
        dc_inputs.append(DcInput(voltage_v=_field(values, fields.dc_names, "U_DC", f"{where}.ch[{c}]", _DC_RANGES),
                                 current_a=_field(values, fields.dc_names, "I_DC", f"{where}.ch[{c}]", _DC_RANGES),
                                 power_w=_field(values, fields.dc_names, "P_DC", f"{where}.ch[{c}]", _DC_RANGES)))
    generation = doc.get("generation")
    return AhoyRecord(
        position=position,
        serial=_serial(doc.get("serial"), where),
        name=str(doc.get("name"))[:32] if isinstance(doc.get("name"), str) else "",
        enabled=doc.get("enabled") is not False,
        status=_int(doc.get("status"), f"{where}.status", 0, 4),
        power_limit_read_pct=_num(doc.get("power_limit_read"), f"{where}.power_limit_read", 0.0, MAX_LIMIT_W),
        power_limit_ack=_bool(doc, "power_limit_ack", where),
        max_power_w=_num(doc.get("max_pwr"), f"{where}.max_pwr", 0, 65535),
        ts_last_success=_ts(doc.get("ts_last_success"), f"{where}.ts_last_success"),
        generation=generation if isinstance(generation, int) and not isinstance(generation, bool) else None,
        ac_power_w=_field(ac, fields.ac_names, "P_AC", f"{where}.ch[0]", _AC_RANGES),
        ac_voltage_v=_field(ac, fields.ac_names, "U_AC", f"{where}.ch[0]", _AC_RANGES),
        temperature_c=_field(ac, fields.ac_names, "Temp", f"{where}.ch[0]", _AC_RANGES),
        yield_total_kwh=_field(ac, fields.ac_names, "YieldTotal", f"{where}.ch[0]", _AC_RANGES),
        dc_inputs=dc_inputs,
    )


def ctrl_error(doc: Any) -> Optional[str]:
    """None when /api/ctrl said success, else its error code (ERR_AUTH, ERR_PROTECTED, ERR_INDEX, ...)."""
    if not isinstance(doc, dict):
        raise DtuInvalidResponse("/api/ctrl: answer is not a JSON object")
    if doc.get("success") is True:
        return None
    error = doc.get("error")
    return error[:60] if isinstance(error, str) and error else "ERR_UNKNOWN"


def readback_pct(record: AhoyRecord) -> Optional[float]:
    """The read-back limit in %: 0 until the first read (unknown), above 100 is not a limit."""
    value = record.power_limit_read_pct
    return value if 0 < value <= 100 else None


def limit_w_for(pct: float, rating_w: float) -> float:
    """The absolute limit sent for `pct` of `rating_w`: clamped to 0..100 %, then to what the firmware can store
    and the inverter can do (MIN_LIMIT_W … min(rating, 6553.5 W)), 0.1 W resolution."""
    pct = min(100.0, max(0.0, float(pct)))
    watts = round(pct * rating_w / 100.0, 1)
    return min(min(rating_w, MAX_LIMIT_W), max(MIN_LIMIT_W, watts))


# ------------------------------------------------------------------ detection

def _describe(status: Optional[int], doc: Any = None, error: Optional[Exception] = None) -> str:
    if error is not None:
        return f"{type(error).__name__}: {str(error)[:100]}"
    text = repr(doc)
    return f"HTTP {status} {text[:80]}{'…' if len(text) > 80 else ''}"


def detect_gateway(request: Request, host: str) -> str:
    """'ahoy' or 'opendtu'. AhoyDTU answers GET /api/generic with its `generic` block; OpenDTU answers it with its
    web app (HTML) and GET /api/system/status with `git_hash`. Neither: DtuInvalidResponse (kind "invalid")
    naming the host and both answers. Connection errors and timeouts pass through (ask again later)."""
    seen = []
    for path, kind, test in (("/api/generic", "ahoy", looks_like_ahoy),
                             ("/api/system/status", "opendtu",
                              lambda d: isinstance(d, dict) and isinstance(d.get("git_hash"), str))):
        try:
            status, doc = request("GET", path)
        except DtuInvalidResponse as exc:
            seen.append(f"{path}: {_describe(None, error=exc)}")
            continue
        if status == 200 and test(doc):
            return kind
        seen.append(f"{path}: {_describe(status, doc)}")
    raise DtuInvalidResponse(f"{host} is neither an OpenDTU nor an AhoyDTU ({'; '.join(seen)})")


# ------------------------------------------------------------------ the client

@dataclass
class _Command:
    """A limit or power command in flight, until proven, failed, or replaced."""
    kind: str                      # limit | power_on | power_off | restart
    position: int
    body: dict
    pct: Optional[float] = None    # limit: what was sent, in % of the rating used
    proof_ts: Optional[float] = None   # a live sample with ts_last_success >= this started after the post
    deadline: float = 0.0
    attempts: int = 1
    saw_unacked: bool = False
    ack_seen_t: Optional[float] = None   # first read (monotonic) of this attempt with power_limit_ack true
    by_flag: bool = False          # Ok from the ack flag's fall and rise, before the read-back
    state: str = "Pending"         # Pending | Ok | Failure


@dataclass
class _DtuClock:
    """The DTU's clock as seen from ours: ts_now read at `arrival` (monotonic), `rtt_s` the round trip."""
    ts_now: int
    arrival: float
    rtt_s: float

    def latest(self, mono: float) -> float:
        """Upper bound of the DTU's time at our monotonic `mono` (ts_now is whole seconds, generated during the
        round trip)."""
        return self.ts_now + 1.0 + self.rtt_s + (mono - self.arrival)

    def estimate(self, mono: float) -> float:
        return self.ts_now + 0.5 + (mono - self.arrival)


class AhoyClient:
    """The OpenDtuClient interface over AhoyDTU. Not thread-safe: one per thread, like OpenDtuClient (the poll
    thread's client never posts; the writer's client keeps the token and the command tracking).

    `rating_bound(serial, position) -> W or None`: the configured max_power_w, used only while the DTU does not
    know the rating yet (see rating_w)."""

    def __init__(self, request: Request, host: str = "", password: str = "", clock=SYSTEM_CLOCK,
                 resends: int = 1, ack_timeout_s: Optional[float] = None,
                 rating_bound: Optional[Callable[[str, int], Optional[float]]] = None):
        self.request = request
        self.url = host
        self.password = password
        self.has_password = bool(password)
        self.clock = clock
        self.resends = resends
        self._ack_timeout_s = ack_timeout_s
        self.rating_bound = rating_bound
        self.last_arrival_t: Optional[float] = None
        self.slots: dict[int, AhoySlot] = {}
        self._slots_t: Optional[float] = None
        self.fields: Optional[AhoyFields] = None
        self._fields_t: Optional[float] = None
        self.records: dict[int, AhoyRecord] = {}
        self.index: Optional[AhoyIndex] = None
        self.dtu_clock: Optional[_DtuClock] = None
        self.protected: Optional[bool] = None
        self._token: Optional[str] = None
        self.commands: dict[int, _Command] = {}       # position -> the last limit command
        self.power_commands: dict[int, _Command] = {}
        self.auth_count = 0

    def close(self) -> None:
        pass

    # -- transport
    def _get(self, path: str) -> Any:
        started = self.clock.monotonic()
        status, doc = self.request("GET", path)
        self.last_arrival_t = self.clock.monotonic()
        if status != 200:
            raise DtuHttpError(f"GET {path}: HTTP {status}", status)
        if doc is None:
            raise DtuInvalidResponse(f"GET {path}: body is null")
        generic = doc.get("generic") if isinstance(doc, dict) else None
        if isinstance(doc, dict) and path == "/api/generic":
            generic = doc
        if isinstance(generic, dict) and isinstance(generic.get("ts_now"), int) \
                and not isinstance(generic.get("ts_now"), bool) and 0 < generic["ts_now"] < 2 ** 32:
            self.dtu_clock = _DtuClock(generic["ts_now"], self.last_arrival_t, self.last_arrival_t - started)
            if isinstance(generic.get("menu_protEn"), bool):
                self.protected = generic["menu_protEn"]
        return doc

    def get_json(self, path: str, params: Optional[dict] = None) -> Any:
        return self._get(path)

    def _post_ctrl(self, body: dict) -> dict:
        status, doc = self.request("POST", "/api/ctrl", body)
        self.last_arrival_t = self.clock.monotonic()
        if status != 200:
            raise DtuHttpError(f"POST /api/ctrl: HTTP {status}", status)
        if not isinstance(doc, dict):
            raise DtuInvalidResponse("POST /api/ctrl: answer is not a JSON object")
        return doc

    def post_command(self, path: str, data: dict) -> dict:
        """POST /api/ctrl (the only command path used) with the token; re-authenticates once on ERR_PROTECTED /
        ERR_AUTH. Raises DtuAuthError (kind auth) when that does not help, DtuRejected for any other error code."""
        if path != "/api/ctrl":
            raise ValueError(f"AhoyDTU commands go to /api/ctrl, not {path}")
        body = dict(data)
        if self._token:
            body["token"] = self._token
        doc = self._post_ctrl(body)
        error = ctrl_error(doc)
        if error in AUTH_ERRORS and self.password:
            self._token = None
            body.pop("token", None)
            body["auth"] = self.password                   # the command rides along with the new auth
            self.auth_count += 1
            doc = self._post_ctrl(body)
            error = ctrl_error(doc)
            token = doc.get("token")
            if isinstance(token, str) and re.fullmatch(r"[0-9A-Z]{16}", token):
                self._token = token
            elif error is None:
                raise DtuInvalidResponse("POST /api/ctrl: authenticated, but no valid token in the answer")
        if error == "ERR_AUTH":
            raise DtuAuthError("AhoyDTU refused the admin password (ERR_AUTH)")
        if error == "ERR_PROTECTED":
            raise DtuAuthError("AhoyDTU is protected by an admin password: " +
                               ("the token was refused again after a new login (another client, or another IP?)"
                                if self.password else "set [opendtu] password"))
        if error is not None:
            raise DtuRejected(f"AhoyDTU refused {data.get('cmd')} for position {data.get('id')}: {error}")
        return doc

    # -- inventory and field names
    def _slots(self, force: bool = False) -> dict[int, AhoySlot]:
        now = self.clock.monotonic()
        if force or self._slots_t is None or now - self._slots_t >= LIST_REFRESH_S:
            self.slots = parse_inverter_list(self._get("/api/inverter/list"))
            self._slots_t = now
        return self.slots

    def _fields(self, force: bool = False) -> AhoyFields:
        now = self.clock.monotonic()
        if force or self.fields is None or now - self._fields_t >= LIST_REFRESH_S:
            self.fields = parse_live(self._get("/api/live"))
            self._fields_t = now
        return self.fields

    @property
    def refresh_s(self) -> float:
        """The DTU's poll interval (all inverters each interval), from /api/live."""
        return self.fields.refresh_s if self.fields is not None else DEFAULT_REFRESH_S

    def read_refresh_s(self) -> float:
        """The DTU's poll interval, read now (/api/live) rather than the default until a first record."""
        return self._fields(force=True).refresh_s

    @property
    def ack_timeout_s(self) -> float:
        """Per attempt: one poll interval (the read-back comes with the next poll) plus a margin."""
        return self._ack_timeout_s if self._ack_timeout_s is not None else self.refresh_s + ACK_MARGIN_S

    @property
    def limit_ack_budget_s(self) -> float:
        """How long a limit may stay Pending here (all attempts): the writer's ack timeout must be longer."""
        return (self.resends + 1) * self.ack_timeout_s + 2.0

    def position_of(self, serial: str) -> int:
        serial = serial.lower()
        for force in (False, True):
            for position, slot in self._slots(force).items():
                if slot.serial == serial:
                    return position
        raise DtuRejected(f"AhoyDTU lists no inverter with serial {serial}")

    def _record(self, position: int) -> AhoyRecord:
        before = self.fields
        fields = self._fields()
        doc = self._get(f"/api/inverter/id/{position}")
        try:
            record = parse_inverter(doc, fields, position)
        except DtuInvalidResponse:
            if fields is not before:
                raise
            record = parse_inverter(doc, self._fields(force=True), position)   # firmware changed its fields?
        self.records[position] = record
        return record

    # -- reads (the OpenDtuClient interface)
    def livedata_summary(self) -> list[InverterSummary]:
        """Every configured inverter in position order (GET /api/index; /api/inverter/list when a position is
        new or every LIST_REFRESH_S)."""
        index = parse_index(self._get("/api/index"))
        self.index = index
        slots = self._slots()
        if set(index.inverters) - set(slots):
            slots = self._slots(force=True)
        out = []
        for position in sorted(index.inverters):
            slot = slots.get(position)
            if slot is None:
                continue
            out.append(InverterSummary(**self._summary_fields(slot, index.inverters[position], index)))
        return out

    def _summary_fields(self, slot: AhoySlot, entry: AhoyIndexEntry, index: AhoyIndex) -> dict:
        record = self.records.get(slot.position)
        rel = readback_pct(record) if record is not None else None
        rating = record.max_power_w if record is not None and record.max_power_w > 0 else None
        return dict(serial=slot.serial, name=slot.name, order=slot.position,
                    data_age_s=self._age_s(entry.ts_last_success, index.ts_now),
                    reachable=entry.enabled and slot.enabled and entry.available and entry.ts_last_success > 0,
                    producing=entry.producing,
                    poll_enabled=slot.enabled and entry.enabled and not (slot.night_pause and index.night),
                    limit_relative_pct=rel,
                    limit_absolute_w=round(rel * rating / 100.0, 1) if rel is not None and rating else None,
                    age_resolution_s=1.0)

    def _age_s(self, ts_last_success: int, ts_now: Optional[float]) -> float:
        """Age of the sample on the DTU's clock; never polled: the DTU's uptime-like 'forever' (1 day)."""
        if ts_last_success <= 0 or ts_now is None or ts_now <= 0:
            return 86400.0
        return float(min(86400.0, max(0.0, ts_now - ts_last_success)))

    def livedata_inverter(self, serial: str) -> Optional[InverterLive]:
        """GET /api/inverter/id/<position>. None when the DTU does not list the serial any more."""
        serial = serial.lower()
        position = next((p for p, s in self._slots().items() if s.serial == serial), None)
        if position is None:
            return None
        try:
            record = self._record(position)
        except DtuRejected:                          # "inverter not found!": gone since the summary
            return None
        if record.serial != serial:
            return None
        slot = self.slots[position]
        ts_now = self.dtu_clock.estimate(self.last_arrival_t) if self.dtu_clock else None
        night = self.index.night if self.index is not None else False
        reachable = record.enabled and record.status in AVAILABLE_STATUSES and record.ts_last_success > 0
        rel = readback_pct(record)
        rating = record.max_power_w if record.max_power_w > 0 else None
        return InverterLive(
            serial=serial, name=slot.name, order=position,
            data_age_s=self._age_s(record.ts_last_success, ts_now),
            reachable=reachable, producing=reachable and record.status == PRODUCING_STATUS,
            poll_enabled=record.enabled and not (slot.night_pause and night),
            limit_relative_pct=rel,
            limit_absolute_w=round(rel * rating / 100.0, 1) if rel is not None and rating else None,
            age_resolution_s=1.0,
            ac_power_w=record.ac_power_w, ac_voltage_v=record.ac_voltage_v, temperature_c=record.temperature_c,
            yield_total_kwh=record.yield_total_kwh, dc_inputs=record.dc_inputs,
            has_channels=record.ts_last_success > 0)

    def limit_status(self) -> dict[str, LimitStatus]:
        """serial -> LimitStatus. With limits in flight only those inverters are read (GET /api/inverter/id per
        inverter), and their command is advanced (proven, resent, or failed); otherwise every inverter."""
        slots = self._slots()
        pending = [p for p, c in self.commands.items() if c.state == "Pending" and p in slots]
        out = {}
        for position in pending or sorted(slots):
            record = self._record(position)
            command = self.commands.get(position)
            if command is not None and command.state == "Pending":
                self._advance_limit(command, record)
            out[slots[position].serial] = LimitStatus(
                limit_relative_pct=command.pct if command is not None and command.by_flag else readback_pct(record),
                max_power_w=record.max_power_w if record.max_power_w > 0 else None,
                status=command.state if command is not None else "Ok",
                applied_t_mono=command.ack_seen_t if command is not None and command.state == "Ok" else None)
        return out

    def power_status(self) -> dict[str, str]:
        """serial -> Ok | Pending | Failure of the last power/restart command (Ok when none was sent)."""
        slots = self._slots()
        out = {slot.serial: "Ok" for slot in slots.values()}
        for position, command in self.power_commands.items():
            if position not in slots:
                continue
            if command.state == "Pending":
                self._advance_power(command, self._record(position))
            out[slots[position].serial] = command.state
        return out

    def command_flags(self) -> dict[str, tuple[bool, bool]]:
        """serial -> (commands possible, commands possible at night): AhoyDTU has no command switch; a disabled
        inverter is not talked to, and 'pause at night' (disnightcom) holds commands until sunrise."""
        return {slot.serial: (slot.enabled, slot.enabled and not slot.night_pause)
                for slot in self._slots().values()}

    def model(self, serial: str) -> Optional[str]:
        """e.g. "HM-600" from the generation and the rated power (no extra request; None until both known)."""
        position = next((p for p, s in self.slots.items() if s.serial == serial.lower()), None)
        record = self.records.get(position) if position is not None else None
        if record is None or record.max_power_w <= 0 or record.generation not in GENERATIONS:
            return None
        return f"{GENERATIONS[record.generation]}-{int(record.max_power_w)}"

    def firmware(self) -> Optional[str]:
        return "AhoyDTU " + parse_generic(self._get("/api/generic")).version

    # -- commands
    def rating_w(self, serial: str, position: int) -> float:
        """The rating a relative limit is converted with: the DTU's max_pwr, the same rating the reader
        publishes and the writer's percent refers to (and the read-back's 100 %); the configured max_power_w only
        while the DTU does not know it yet (then the read-back matches only if that is the true rating). Judging
        a DTU rating against the configured bound is the writer's business."""
        record = self.records.get(position) or self._record(position)
        if record.max_power_w > 0:
            return record.max_power_w
        bound = self.rating_bound(serial, position) if self.rating_bound else None
        if bound is not None and 0 < bound <= MAX_LIMIT_W:
            return float(bound)
        raise DtuRejected(f"inverter {serial}: rated power not known yet (AhoyDTU max_pwr 0, no "
                          "max_power_w configured): a relative limit cannot be converted to W")

    def _proof_ts(self, sent_t: float) -> Optional[float]:
        return self.dtu_clock.latest(sent_t) if self.dtu_clock is not None else None

    def _send(self, command: _Command) -> dict:
        if self.dtu_clock is None:
            self._get("/api/generic")                 # the DTU's time, to prove the command was transmitted
        answer = self.post_command("/api/ctrl", command.body)
        now = self.clock.monotonic()
        command.proof_ts = self._proof_ts(now)
        command.deadline = now + self.ack_timeout_s
        command.saw_unacked = False
        command.ack_seen_t = None
        return answer

    def set_limit_relative(self, serial: str, limit_pct: float) -> dict:
        """A non-persistent absolute limit: `limit_pct` of the rating (see rating_w), clamped (limit_w_for).
        Tracked until proven applied: see limit_status."""
        if not isinstance(limit_pct, (int, float)) or isinstance(limit_pct, bool) or not math.isfinite(limit_pct):
            raise ValueError(f"limit_pct must be a finite number, not {limit_pct!r}")
        position = self.position_of(serial)
        rating = self.rating_w(serial.lower(), position)
        watts = limit_w_for(limit_pct, rating)
        command = _Command("limit", position, {"id": position, "cmd": "limit_nonpersistent_absolute", "val": watts},
                           pct=round(watts * 100.0 / rating, 2))
        self.commands.pop(position, None)
        answer = self._send(command)
        self.commands[position] = command
        return answer

    def set_power(self, serial: str, on: bool) -> dict:
        position = self.position_of(serial)
        command = _Command("power_on" if on else "power_off", position,
                           {"id": position, "cmd": "power", "val": 1 if on else 0})
        self.power_commands.pop(position, None)
        answer = self._send(command)
        self.power_commands[position] = command
        return answer

    def restart_inverter(self, serial: str) -> dict:
        """Nothing can confirm a restart (the inverter drops out): Ok once AhoyDTU accepted it."""
        position = self.position_of(serial)
        command = _Command("restart", position, {"id": position, "cmd": "restart"}, state="Ok")
        self.power_commands.pop(position, None)
        answer = self._send(command)
        self.power_commands[position] = command
        return answer

    def reboot_dtu(self) -> dict:
        """restart_ahoy; the firmware wants a valid inverter position even for this."""
        slots = self._slots()
        if not slots:
            raise DtuRejected("AhoyDTU lists no inverter: restart_ahoy needs a valid position")
        answer = self.post_command("/api/ctrl", {"id": min(slots), "cmd": "restart_ahoy"})
        self.dtu_clock = None
        self.commands.clear()
        self.power_commands.clear()
        return answer

    # -- command tracking (AhoyDTU has no pending/failure state)
    def _transmitted(self, command: _Command, record: AhoyRecord) -> bool:
        """A live sample that started after the post: the command (front of the queue) went out before it."""
        return command.proof_ts is not None and record.ts_last_success >= command.proof_ts

    def _advance_limit(self, command: _Command, record: AhoyRecord) -> None:
        """Ok once proven (see the module docstring); the proof comes with the read-back one refresh later, but the
        inverter took the limit when its ack arrived: `ack_seen_t`, the first read with the flag true (a flag still
        true from before the transmission makes it at most one status poll early)."""
        if not record.power_limit_ack:
            command.saw_unacked = True
            command.ack_seen_t = None                    # a flag up before this was an older command's
        elif command.ack_seen_t is None:
            command.ack_seen_t = self.last_arrival_t
        if record.power_limit_ack and command.saw_unacked:
            command.state, command.by_flag = "Ok", True   # the flag fell after the post and rose: acknowledged
            return
        read = readback_pct(record)
        if record.power_limit_ack and (command.saw_unacked or self._transmitted(command, record)) \
                and read is not None and abs(read - command.pct) <= ACK_TOLERANCE_PCT:
            command.state = "Ok"
            return
        self._timeout(command, f"limit {command.body['val']} W: ack {record.power_limit_ack}, read back {read} %")

    def _advance_power(self, command: _Command, record: AhoyRecord) -> None:
        if self._transmitted(command, record) and (
                command.kind == "power_on" or (record.ac_power_w is not None and record.ac_power_w <= OFF_MAX_W)):
            command.state = "Ok"
            return
        self._timeout(command, f"{command.kind}: AC {record.ac_power_w} W at ts {record.ts_last_success}")

    def _timeout(self, command: _Command, detail: str) -> None:
        if self.clock.monotonic() < command.deadline:
            return
        if command.attempts > self.resends:
            command.state = "Failure"
            log.warning("AhoyDTU position %d: %s not confirmed after %d attempt(s): %s", command.position,
                        command.kind, command.attempts, detail)
            return
        command.attempts += 1
        log.info("AhoyDTU position %d: %s not confirmed within %g s (%s): sending again", command.position,
                 command.kind, self.ack_timeout_s, detail)
        try:
            self._send(command)
        except DtuError as exc:
            command.state = "Failure"
            log.warning("AhoyDTU position %d: resending %s failed (%s: %s)", command.position, command.kind,
                        exc.kind, exc)
