"""The functional core of venus_publisher: what every D-Bus path shows, given the bus messages seen and the time.

No D-Bus here. `Inputs` keeps the last message of each kind with the monotonic time it arrived; the functions
`dcload_values`, `dcsystem_values`, `acload_values` and `alarm_levels` turn it into {path: value} for a moment
`now`. A value whose source is stale is None (invalid on D-Bus), never an old number shown as live.
`SettingRequests` tracks the user's SetValue requests until the controller confirms them.
"""
from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from typing import Any, Optional

from common import messages as m
from common.settings import USER_SETTINGS

STATUS_STALE_S = 15.0        # dtu.status / meter.status / ctrl.status older than this: their source is stale
SETTING_REPEAT_S = 1.0       # venus.setting is repeated this often until ctrl.settings confirms it
SETTING_GIVE_UP_S = 30.0     # ... and abandoned after this (the path falls back to the confirmed value)

# writable acload path -> (ctrl.settings / venus.setting name, min, max); all integers; from common/settings.py
SETTINGS: dict[str, tuple[str, int, int]] = {s.dbus_path: (s.name, s.min, s.max) for s in USER_SETTINGS}

# acload /Alarms/<Name> -> ALARM_NAMES key in ctrl.status alarms
ALARM_PATHS: dict[str, str] = {
    "/Alarms/GridMeter": "grid_meter",
    "/Alarms/BalconyMeter": "balcony_meter",
    "/Alarms/Dtu": "dtu",
    "/Alarms/Inverter": "inverter",
    "/Alarms/Temperature": "temperature",
    "/Alarms/Battery": "battery",
    "/Alarms/Controller": "controller",
}
OK, WARNING, ALARM = 0, 1, 2


def num(value: Any) -> Optional[float]:
    """A finite number or None (hostile input never becomes 0)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _round(value: Any, digits: int) -> Optional[float]:
    value = num(value)
    return None if value is None else round(float(value), digits)


@dataclass
class Params:
    grid_stale_s: float = 5.0
    dtu_stale_s: float = 30.0
    balcony_stale_s: float = 30.0
    status_stale_s: float = STATUS_STALE_S
    max_temperature_c: float = 50.0
    temperature_hysteresis_k: float = 5.0
    relay_stale_s: Optional[float] = None      # None: no [relay] section
    balcony_configured: bool = False

    @classmethod
    def from_config(cls, cfg) -> "Params":
        relay = getattr(cfg, "relay", None)
        return cls(grid_stale_s=cfg.control.grid_stale_s, dtu_stale_s=cfg.control.dtu_stale_s,
                   balcony_stale_s=getattr(cfg.control, "balcony_stale_s", 30.0),
                   max_temperature_c=cfg.control.max_temperature,
                   temperature_hysteresis_k=cfg.control.temperature_hysteresis,
                   status_stale_s=cfg.venus.status_stale_s,
                   relay_stale_s=None if relay is None else 2.5 * relay.interval + 30,
                   balcony_configured=getattr(cfg, "balcony_meter", None) is not None)


@dataclass
class Seen:
    body: dict
    t: float          # our monotonic time of receipt


@dataclass
class BatteryView:
    """What the battery monitor knows (from D-Bus), for the dcsystem voltage and the battery alarm."""
    present: bool = False
    voltage_v: Optional[float] = None
    temperature_c: Optional[float] = None
    detail: Optional[str] = None


def _news(body: dict) -> dict:
    """A status without the fields that move with every poll (not shown: a status in which only they moved
    redraws nothing)."""
    return {k: v for k, v in body.items() if k not in m.STATUS_VOLATILE}


@dataclass
class Inputs:
    started_t: float
    inverters: dict[str, Seen] = field(default_factory=dict)       # serial -> last dtu.inverter
    dtu_status: Optional[Seen] = None
    dtu_alarms: dict[tuple, Seen] = field(default_factory=dict)     # (kind, serial or None) -> last dtu.alarm
    grid: Optional[Seen] = None
    balcony: Optional[Seen] = None
    meter_status: dict[str, Seen] = field(default_factory=dict)     # role -> last meter.status
    relay: Optional[Seen] = None
    ctrl_status: Optional[Seen] = None
    ctrl_settings: Optional[Seen] = None

    def active_dtu_alarms(self) -> list[dict]:
        return [seen.body for seen in self.dtu_alarms.values() if seen.body.get("active")]

    def on_message(self, topic: str, body: dict, now: float) -> bool:
        """Store a message. Returns False when no shown value can change now: a topic not shown (ctrl.setpoint,
        ctrl.relay, dtu.ack), or a status repeated unchanged (only its time moved; ages are redrawn each tick)."""
        seen = Seen(body, now)
        if topic == m.DTU_INVERTER:
            self.inverters[body["serial"]] = seen
        elif topic == m.DTU_STATUS:
            same = self.dtu_status is not None and _news(self.dtu_status.body) == _news(body)
            self.dtu_status = seen
            keep = set(body["serials"])
            for serial in list(self.inverters):
                if serial not in keep:
                    del self.inverters[serial]
            return not same
        elif topic == m.DTU_ALARM:
            # one per kind and inverter: the watchdog's "inactive" must not hide an inverter's unconfirmed stop
            self.dtu_alarms[(body["kind"], body.get("serial"))] = seen
        elif topic == m.METER_GRID:
            self.grid = seen
        elif topic == m.METER_BALCONY:
            self.balcony = seen
        elif topic == m.METER_STATUS:
            last = self.meter_status.get(body["role"])
            self.meter_status[body["role"]] = seen
            return last is None or _news(last.body) != _news(body)
        elif topic == m.RELAY_STATE:
            self.relay = seen
        elif topic == m.CTRL_STATUS:
            self.ctrl_status = seen
        elif topic == m.CTRL_SETTINGS:
            self.ctrl_settings = seen
        else:
            return False
        return True

    # ------------------------------------------------------------ inventory and freshness
    def inventory(self) -> dict[int, str]:
        """DTU index -> serial: the DTU's order from dtu.status, else the indexes dtu.inverter reported."""
        if self.dtu_status is not None:
            return dict(enumerate(self.dtu_status.body["serials"]))
        out: dict[int, str] = {}
        for serial, seen in self.inverters.items():
            out.setdefault(seen.body["index"], serial)
        return out

    def fresh_inverter(self, serial: str, now: float, params: Params) -> Optional[dict]:
        return self.fresh(self.inverters.get(serial), now, params.dtu_stale_s, "sample_t_mono")

    @staticmethod
    def _since_t(seen: Seen, sample_key: Optional[str]) -> float:
        """What a value's age counts from: its arrival, or the sample time it carries when that is earlier."""
        sample_t = num(seen.body.get(sample_key)) if sample_key is not None else None
        return seen.t if sample_t is None else min(seen.t, sample_t)

    def fresh(self, seen: Optional[Seen], now: float, max_age_s: float, sample_key: Optional[str] = None):
        if seen is None:
            return None
        return seen.body if now - self._since_t(seen, sample_key) <= max_age_s else None

    def next_stale_t(self, now: float, params: Params) -> float:
        """The earliest time after `now` at which something shown turns stale without a new message (a sample,
        a status, the relay's state, the start-up grace): venus_publisher redraws then instead of every second.
        `fresh` keeps a value up to and including its limit, so it is stale just after this time."""
        deadlines = [self.started_t + params.status_stale_s]

        def add(seen: Optional[Seen], max_age_s: Optional[float], sample_key: Optional[str] = None) -> None:
            if seen is not None and max_age_s is not None:
                deadlines.append(self._since_t(seen, sample_key) + max_age_s)

        add(self.grid, params.grid_stale_s, "sample_t_mono")
        add(self.balcony, params.balcony_stale_s, "sample_t_mono")
        for seen in self.inverters.values():
            add(seen, params.dtu_stale_s, "sample_t_mono")
        add(self.dtu_status, params.status_stale_s)
        for seen in self.meter_status.values():
            add(seen, params.status_stale_s)
        add(self.ctrl_status, params.status_stale_s)
        add(self.relay, params.relay_stale_s)
        return min((t for t in deadlines if t > now), default=math.inf)

    def relay_off(self, now: float, params: Params) -> bool:
        """True only when the relay is known (recently) to be open: the inverters are cut off."""
        if params.relay_stale_s is None:
            return False
        body = self.fresh(self.relay, now, params.relay_stale_s)
        return body is not None and body.get("on") is False


# ---------------------------------------------------------------- per service values

def temperature_level(temperature_c: Any, params: Params) -> Optional[int]:
    t = num(temperature_c)
    if t is None:
        return None
    if t >= params.max_temperature_c:
        return ALARM
    if t >= params.max_temperature_c - params.temperature_hysteresis_k:
        return WARNING
    return OK


def dcload_values(inv: Optional[dict], params: Params) -> dict[str, Any]:
    """One inverter; `inv` is its fresh dtu.inverter body or None when stale or never seen."""
    if inv is None:
        return {"/Dc/0/Voltage": None, "/Dc/0/Current": None, "/Dc/0/Power": None, "/Dc/0/Temperature": None,
                "/History/EnergyIn": None, "/Ac/Power": None, "/Limit/Percent": None, "/Limit/Watt": None,
                "/Reachable": None, "/Producing": None, "/Alarms/HighTemperature": None, "/Connected": 0}
    return {
        "/Dc/0/Voltage": _round(inv.get("dc_voltage_v"), 2),
        "/Dc/0/Current": _round(inv.get("dc_current_a"), 3),
        "/Dc/0/Power": _round(inv.get("dc_power_w"), 1),
        "/Dc/0/Temperature": _round(inv.get("temperature_c"), 1),
        "/History/EnergyIn": _round(inv.get("yield_total_kwh"), 3),
        "/Ac/Power": _round(inv.get("ac_power_w"), 1),
        "/Limit/Percent": _round(inv.get("limit_pct"), 1),
        "/Limit/Watt": _round(inv.get("limit_w"), 1),
        "/Reachable": int(bool(inv.get("reachable"))),
        "/Producing": int(bool(inv.get("producing"))),
        "/Alarms/HighTemperature": temperature_level(inv.get("temperature_c"), params),
        "/Connected": 1,
    }


def dcsystem_values(inputs: Inputs, battery: BatteryView, now: float, params: Params) -> dict[str, Any]:
    """Σ DC draw of the inverters (what systemcalc adds to /Dc/System/Power and DVCC compensates).

    Valid 0 when the relay is known open or the DTU (fresh) reports no inverters; None when nothing is known.
    Stale inverters are left out of the sums (a lower bound never over-raises the charge current)."""
    fresh = [b for b in (inputs.fresh_inverter(s, now, params) for s in inputs.inventory().values()) if b]
    voltage = num(battery.voltage_v)
    if voltage is None:
        volts = [num(b.get("dc_voltage_v")) for b in fresh]
        volts = [v for v in volts if v is not None and v > 0]
        voltage = sum(volts) / len(volts) if volts else None
    dtu_fresh = inputs.fresh(inputs.dtu_status, now, params.status_stale_s)
    current: Optional[float]
    power: Optional[float]
    if inputs.relay_off(now, params) or (dtu_fresh is not None and not dtu_fresh["serials"]):
        current, power = 0.0, 0.0
    else:
        currents = [num(b.get("dc_current_a")) for b in fresh]
        powers = [num(b.get("dc_power_w")) for b in fresh]
        currents = [c for c in currents if c is not None]
        powers = [p for p in powers if p is not None]
        current = float(sum(currents)) if currents else None
        power = float(sum(powers)) if powers else None
        if power is None and current is not None and voltage is not None:
            power = current * voltage
    return {
        "/Dc/0/Voltage": _round(voltage, 2),
        "/Dc/0/Current": _round(current, 3),
        "/Dc/0/Power": _round(power, 1),
        "/Dc/0/Temperature": _round(battery.temperature_c, 1),
    }


def acload_values(inputs: Inputs, now: float, params: Params) -> dict[str, Any]:
    """Grid meter values and the controller's state (settings and alarms are done separately)."""
    out: dict[str, Any] = {}
    grid = inputs.fresh(inputs.grid, now, params.grid_stale_s, "sample_t_mono")
    phases = grid["phases"] if grid else []
    out["/Ac/Power"] = _round(grid["power_w"], 1) if grid else None
    for i in range(3):
        phase = phases[i] if i < len(phases) else {}
        prefix = f"/Ac/L{i + 1}"
        out[f"{prefix}/Power"] = _round(phase.get("power_w"), 1)
        out[f"{prefix}/Voltage"] = _round(phase.get("voltage_v"), 1)
        current = num(phase.get("current_a"))
        if current is None and num(phase.get("power_w")) is not None and num(phase.get("voltage_v")):
            current = phase["power_w"] / phase["voltage_v"]
        out[f"{prefix}/Current"] = _round(current, 2)
        out[f"{prefix}/Energy/Forward"] = _round(phase.get("energy_import_kwh"), 3)
        out[f"{prefix}/Energy/Reverse"] = _round(phase.get("energy_export_kwh"), 3)
    out["/Ac/Energy/Forward"] = _round(grid.get("energy_import_kwh"), 3) if grid else None
    out["/Ac/Energy/Reverse"] = _round(grid.get("energy_export_kwh"), 3) if grid else None
    out["/Connected"] = 1 if grid else 0

    status = inputs.fresh(inputs.ctrl_status, now, params.status_stale_s) or {}
    out["/Control/Law"] = status.get("law")
    out["/Control/GridFiltered"] = _round(status.get("grid_filtered_w"), 1)
    out["/Control/Target"] = _round(status.get("target_w"), 1)
    out["/Control/Budget"] = _round(status.get("budget_w"), 1)
    out["/Control/TotalLimit"] = _round(status.get("total_limit_w"), 1)
    out["/Control/Reason"] = "; ".join(status["reasons"])[:200] if status.get("reasons") else None
    settings = inputs.ctrl_settings.body if inputs.ctrl_settings else {}
    out["/Control/CapBy"] = (cap_by(status.get("budget_w"), settings.get("max_feed_in"), status.get("balcony_w"))
                             if status else None)
    fresh = [inputs.fresh_inverter(s, now, params) for s in inputs.inventory().values()]
    powers = [num(b.get("ac_power_w")) for b in fresh if b]
    powers = [p for p in powers if p is not None]
    out["/Control/InverterPower"] = _round(sum(powers), 1) if powers else None
    out["/FeedInMinSoc"] = _round(status.get("feed_in_min_soc_pct"), 1)
    out["/Soc"] = _round(status.get("soc_pct"), 1)
    out["/AuxFeedInPower"] = _round(status.get("balcony_w"), 1)
    out["/NegativeGridCounter"] = status.get("negative_grid_counter")
    wanted = status.get("relay_wanted")
    out["/Control/RelayWanted"] = None if wanted is None else int(wanted)
    relay = inputs.fresh(inputs.relay, now, params.relay_stale_s) if params.relay_stale_s else None
    on = relay.get("on") if relay else None
    out["/FeedInRelay"] = None if on is None else int(on)
    return out


# /Control/CapBy: which limit sets the controller's cap (the GX page shows it in words)
CAP_BY_TEXT = {0: "battery state unknown: minimum limits", 1: "MaxFeedIn", 2: "MaxFeedIn - balcony",
               3: "battery discharge limit (V x DCL)"}


def cap_by(budget_w: Any, max_feed_in_w: Any, balcony_w: Any) -> Optional[int]:
    """The controller's budget is min(MaxFeedIn - balcony, V x DCL), None while the battery state is unusable
    (then only minimum limits): which term it is, as a CAP_BY_TEXT key; None without ctrl.settings."""
    budget, max_feed_in, balcony = num(budget_w), num(max_feed_in_w), num(balcony_w) or 0.0
    if max_feed_in is None:
        return None
    if budget is None:
        return 0
    if budget < max_feed_in - balcony - 0.5:
        return 3
    return 2 if balcony else 1


def alarm_levels(inputs: Inputs, battery: BatteryView, now: float, params: Params) -> dict[str, Optional[int]]:
    """ALARM_NAMES -> 0 ok / 1 warning / 2 alarm / None (not known yet, during start-up only).

    Each is the worse of our own observation (staleness, status messages) and the controller's ctrl.status alarm
    (taken only while ctrl.status is fresh)."""
    grace = now - inputs.started_t < params.status_stale_s
    status = inputs.fresh(inputs.ctrl_status, now, params.status_stale_s)
    ctrl = status.get("alarms", {}) if status else {}

    def worst(own: Optional[int], name: str) -> Optional[int]:
        theirs = ctrl.get(name)
        theirs = theirs if isinstance(theirs, int) and theirs in (0, 1, 2) else None
        levels = [x for x in (own, theirs) if x is not None]
        return max(levels) if levels else None

    def unseen(seen) -> Optional[int]:
        return None if grace and seen is None else ALARM

    out: dict[str, Optional[int]] = {}
    # grid meter
    if inputs.fresh(inputs.grid, now, params.grid_stale_s, "sample_t_mono") is None:
        own = unseen(inputs.grid)
    else:
        st = inputs.fresh(inputs.meter_status.get("grid"), now, params.status_stale_s)
        own = WARNING if st is not None and not st["ok"] else OK
    out["grid_meter"] = worst(own, "grid_meter")
    # balcony meter (the controller falls back to a fixed power: a warning)
    if not params.balcony_configured:
        own = OK
    else:
        st = inputs.fresh(inputs.meter_status.get("balcony"), now, params.status_stale_s)
        sample = inputs.fresh(inputs.balcony, now, params.balcony_stale_s, "sample_t_mono")
        if st is None and sample is None:
            own = None if grace else WARNING
        else:
            own = OK if (sample is not None and (st is None or st["ok"])) else WARNING
    out["balcony_meter"] = worst(own, "balcony_meter")
    # DTU
    st = inputs.fresh(inputs.dtu_status, now, params.status_stale_s)
    if st is None:
        own = unseen(inputs.dtu_status)
    elif st["ok"]:
        own = OK
    else:
        own = ALARM if st["error_count"] >= 3 else WARNING
    out["dtu"] = worst(own, "dtu")
    # inverters
    serials = list(inputs.inventory().values())
    fresh = [inputs.fresh_inverter(s, now, params) for s in serials]
    if inputs.active_dtu_alarms():
        own = ALARM
    elif not serials:
        own = None if grace else OK
    elif any(b is None or not b.get("reachable") for b in fresh):
        own = None if grace and all(b is None for b in fresh) else WARNING
    else:
        own = OK
    out["inverter"] = worst(own, "inverter")
    # temperature
    levels = [temperature_level(b.get("temperature_c"), params) for b in fresh if b]
    levels = [x for x in levels if x is not None]
    out["temperature"] = worst(max(levels) if levels else None, "temperature")
    # battery
    if battery.present:
        own = OK
    else:
        own = None if grace else ALARM
    out["battery"] = worst(own, "battery")
    # controller
    out["controller"] = worst(OK if status is not None else unseen(inputs.ctrl_status), "controller")
    return out


# ---------------------------------------------------------------- user settings

def check_setting(path: str, value: Any) -> Optional[str]:
    """None when `value` (already coerced to int) is acceptable for `path`, else why not."""
    name, lo, hi = SETTINGS[path]
    if isinstance(value, bool) or not isinstance(value, int):
        return f"{type(value).__name__} is not an integer"
    if not lo <= value <= hi:
        return f"{value} outside {lo}..{hi}"
    return None


@dataclass
class Pending:
    request_id: str
    name: str
    value: int
    first_t: float
    last_sent_t: Optional[float] = None


class SettingRequests:
    """The user's accepted SetValues, repeated as venus.setting until ctrl.settings lists their request id."""

    def __init__(self):
        self.pending: dict[str, Pending] = {}     # setting name -> latest request (a newer one replaces it)
        self.confirmed: dict[str, Any] = {}       # setting name -> value in force per ctrl.settings

    def request(self, path: str, value: int, now: float) -> Pending:
        name = SETTINGS[path][0]
        req = Pending(f"{uuid.uuid4().hex[:12]}-{name}", name, value, now)
        self.pending[name] = req
        return req

    def due(self, now: float) -> list[dict]:
        """venus.setting bodies to send now; requests never confirmed are dropped after SETTING_GIVE_UP_S."""
        out = []
        for name, req in list(self.pending.items()):
            if now - req.first_t > SETTING_GIVE_UP_S:
                del self.pending[name]
                continue
            if req.last_sent_t is None or now - req.last_sent_t >= SETTING_REPEAT_S - 0.05:
                req.last_sent_t = now
                out.append({"request_id": req.request_id, "name": req.name, "value": req.value})
        return out

    def expired(self, now: float) -> list[Pending]:
        return [r for r in self.pending.values() if now - r.first_t > SETTING_GIVE_UP_S]

    def on_settings(self, body: dict) -> list[Pending]:
        """Take a ctrl.settings; returns the requests it confirmed (answered)."""
        for path, (name, _lo, _hi) in SETTINGS.items():
            self.confirmed[name] = body.get(name)
        answers = set(body.get("answers") or [])
        done = [r for r in self.pending.values() if r.request_id in answers]
        for req in done:
            del self.pending[req.name]
        return done

    def display(self, path: str) -> Any:
        """What the path shows: a pending request's value, else the controller's confirmed value."""
        name = SETTINGS[path][0]
        req = self.pending.get(name)
        if req is not None:
            return req.value
        return self.confirmed.get(name)
