"""Every message on the bus: topic names and body schemas, declared once.

A message is two ZeroMQ frames: the topic (UTF-8) and a msgpack envelope
    {"v": VERSION, "src": <service>, "seq": <int>, "t_mono": <CLOCK_MONOTONIC s>, "t_wall": <unix s>, "body": {...}}
Bodies are checked against SCHEMAS on send (a mismatch is a programming error: SchemaError) and on receipt
(a mismatch is hostile input: the message is dropped and counted).

Conventions: units in names (`_w`, `_v`, `_a`, `_pct`, `_s`, `_kwh`, `_c`); an unknown or invalid value is None,
never 0; `*_t_mono` fields are CLOCK_MONOTONIC seconds, comparable across processes on one machine.
Unknown extra fields in a received body are dropped (forward compatible within one version).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

VERSION = 1

NUM = (int, float)
OPT_NUM = (int, float, type(None))
OPT_STR = (str, type(None))
OPT_BOOL = (bool, type(None))


class SchemaError(ValueError):
    """A body does not match its topic's schema."""


@dataclass(frozen=True)
class F:
    """One field: allowed Python types, whether it must be present, and the schema of list items or a dict."""
    types: tuple
    required: bool = True
    items: Any = None          # dict schema for list items / nested dict, or a tuple of types for scalar lists
    values: Any = None         # for dicts with free keys (str -> values): tuple of types


MAX_ABS_NUM = 1e15    # no quantity on the bus comes near (kWh counters, unix seconds ~2e9, sequence numbers);
                      # a few such numbers summed stay finite (two of 1.8e308 made inf, then NaN)


def _num_ok(value) -> bool:
    """Finite and |value| <= MAX_ABS_NUM (an int too: 10**400 would overflow a float conversion)."""
    if isinstance(value, float) and not math.isfinite(value):
        return False
    return not isinstance(value, (int, float)) or isinstance(value, bool) or -MAX_ABS_NUM <= value <= MAX_ABS_NUM


def validate(schema: dict, body: Any, where: str = "body") -> dict:
    """Return a copy of `body` holding only declared fields, or raise SchemaError."""
    if not isinstance(body, dict):
        raise SchemaError(f"{where}: expected a map, got {type(body).__name__}")
    out = {}
    for name, field in schema.items():
        if name not in body:
            if field.required:
                raise SchemaError(f"{where}.{name}: missing")
            continue
        value = body[name]
        # bool is an int subclass: only accept it where bool is declared
        if isinstance(value, bool) and bool not in field.types:
            raise SchemaError(f"{where}.{name}: bool not allowed")
        if not isinstance(value, field.types):
            raise SchemaError(f"{where}.{name}: {type(value).__name__} not allowed")
        if not _num_ok(value):
            raise SchemaError(f"{where}.{name}: not finite or beyond ±{MAX_ABS_NUM:g}")
        if isinstance(value, list) and field.items is not None:
            if isinstance(field.items, dict):
                value = [validate(field.items, item, f"{where}.{name}[{i}]") for i, item in enumerate(value)]
            else:
                for i, item in enumerate(value):
                    if isinstance(item, bool) and bool not in field.items or not isinstance(item, field.items) \
                            or not _num_ok(item):
                        raise SchemaError(f"{where}.{name}[{i}]: bad item")
        elif isinstance(value, dict) and field.items is not None:
            value = validate(field.items, value, f"{where}.{name}")
        elif isinstance(value, dict) and field.values is not None:
            for key, item in value.items():
                if not isinstance(key, str) or (isinstance(item, bool) and bool not in field.values) \
                        or not isinstance(item, field.values) or not _num_ok(item):
                    raise SchemaError(f"{where}.{name}[{key!r}]: bad entry")
        out[name] = value
    return out


# ---------------------------------------------------------------- topics
# dtu_poller
DTU_INVERTER = "dtu.inverter"        # one per inverter per fresh sample
DTU_STATUS = "dtu.status"            # DTU health, inverter inventory; on change and at least every 5 s
DTU_ACK = "dtu.ack"                  # outcome of every command the writer sent (or refused)
DTU_ALARM = "dtu.alarm"              # writer alarms (setpoint watchdog)
# shelly_poller (meter.grid and meter.status also venus_publisher, with [grid_meter] source = dbus)
METER_GRID = "meter.grid"            # each fresh grid sample
METER_BALCONY = "meter.balcony"      # each fresh balcony sample
METER_STATUS = "meter.status"        # per meter: ok or error kind; on change and at least every 5 s
RELAY_STATE = "relay.state"          # result of each relay command
# controller
CTRL_SETPOINT = "ctrl.setpoint"      # desired state of every inverter, full, each cycle (>= 1 per 2 s)
CTRL_RELAY = "ctrl.relay"            # life-signal decision: keep alive or switch off
CTRL_STATUS = "ctrl.status"          # what the controller does and why, on a decision/change, at least every 5 s
CTRL_SETTINGS = "ctrl.settings"      # user settings in force (answers venus.setting; also every 5 s)
# venus_publisher
VENUS_BATTERY = "venus.battery"      # battery state from D-Bus, on change and at least every 2 s
VENUS_SETTING = "venus.setting"      # a user's SetValue on the acload, validated; repeated until confirmed
# Fields of dtu.status and meter.status that move with every poll without news (a status in which only these
# changed is not sent again before its heartbeat, and venus_publisher redraws nothing for it)
STATUS_VOLATILE = ("data_age_s", "last_ok_t_mono")

SETTING_NAMES = ("max_feed_in", "power_feed_in_soc", "soc_floating_max", "zero_point")
ALARM_NAMES = ("grid_meter", "balcony_meter", "dtu", "inverter", "temperature", "battery", "controller")

_DC_INPUT = {"voltage_v": F(OPT_NUM), "current_a": F(OPT_NUM), "power_w": F(OPT_NUM)}

_PHASE = {"power_w": F(OPT_NUM), "voltage_v": F(OPT_NUM, False), "current_a": F(OPT_NUM, False),
          "energy_import_kwh": F(OPT_NUM, False), "energy_export_kwh": F(OPT_NUM, False)}

_SETPOINT = {
    "serial": F((str,)),
    "limit_pct": F(NUM),                 # relative limit, % of max_power_w, already clamped by the controller
    "limit_w": F(OPT_NUM, False),        # the same in W, for display
    "reason": F(OPT_STR, False),
    "on": F((bool,), False),             # False: stop the inverter (the cap is below its minimum output); True or
                                         # absent: it may run
}

SCHEMAS: dict[str, dict] = {
    DTU_INVERTER: {
        "serial": F((str,)),
        "name": F((str,)),
        "index": F((int,)),              # position in the DTU's order (dcload instance = first + index)
        "model": F(OPT_STR, False),
        "reachable": F((bool,)),
        "producing": F((bool,)),
        "data_age_s": F(NUM),
        "sample_t_mono": F(NUM),         # when the HTTP answer carrying this sample arrived, minus data_age_s
        "ac_power_w": F(OPT_NUM),
        "ac_voltage_v": F(OPT_NUM),
        "dc_voltage_v": F(OPT_NUM),      # of input 0 (the battery)
        "dc_current_a": F(OPT_NUM),      # sum of all inputs
        "dc_power_w": F(OPT_NUM),        # sum of all inputs
        "dc_inputs": F((list,), False, items=_DC_INPUT),
        "temperature_c": F(OPT_NUM),
        "yield_total_kwh": F(OPT_NUM),
        "limit_pct": F(OPT_NUM),
        "limit_w": F(OPT_NUM),
        "max_power_w": F(OPT_NUM),       # the rating used for the cap: the largest plausible one (see rating_*)
        "dtu_max_power_w": F(OPT_NUM, False),   # the rating the DTU reports (checked: services/dtu_poller/rating.py)
        "rating_plausible": F(OPT_BOOL, False),  # False: the DTU's rating disagrees with the model, config or AC
                                                 # power; max_power_w is then the conservative bound (alarm)
        "power_state": F(OPT_STR, False),   # the writer's view: unknown | on | stopping | stop_failed | off ("off"
                                            # only once a sample after the power-off ack showed ~0 W)
    },
    DTU_STATUS: {
        "ok": F((bool,)),
        "error_kind": F(OPT_STR),        # None when ok; else e.g. connection, timeout, auth, http, html, invalid
        "error_count": F((int,)),        # consecutive errors
        "detail": F(OPT_STR, False),
        "serials": F((list,), items=(str,)),   # inverters in the DTU's order
        "firmware": F(OPT_STR, False),
        "can_control": F((bool,)),       # False: no password, read-only
        "last_ok_t_mono": F(OPT_NUM, False),
        "unreachable": F((list,), False, items=(str,)),   # serials the DTU reports as not reachable
        "data_age_s": F((dict,), False, values=NUM),      # serial -> data_age at the last good poll
    },
    DTU_ACK: {
        "serial": F(OPT_STR),            # None for a DTU reboot
        "command": F((str,)),            # limit | power_on | power_off | restart | dtu_reboot
        "outcome": F((str,)),            # ok | failure | timeout | rejected | error | rate_limited | read_only
        "limit_pct": F(OPT_NUM, False),  # the limit sent (after clamping)
        "setpoint_seq": F((int, type(None)), False),   # envelope seq of the ctrl.setpoint it carried out
        "latency_s": F(OPT_NUM, False),  # POST leaving -> status Ok/Failure seen
        "sent_t_mono": F(OPT_NUM, False),
        "detail": F(OPT_STR, False),
    },
    DTU_ALARM: {
        "kind": F((str,)),               # setpoint_watchdog | stop_unconfirmed (detail names the inverter)
        "serial": F(OPT_STR, False),     # stop_unconfirmed: the inverter (one alarm per kind and inverter)
        "active": F((bool,)),
        "detail": F(OPT_STR, False),
    },
    METER_GRID: {
        "device": F((str,)),             # model, e.g. SHEM, SHEM-3, SPEM-002CEBEU50, S3EM-002CXCEU
        "power_w": F(NUM),               # signed sum of the phases
        "sign": F((str,)),               # always "positive_is_import"
        "phases": F((list,), items=_PHASE),
        "energy_import_kwh": F(OPT_NUM, False),
        "energy_export_kwh": F(OPT_NUM, False),
        "sample_t_mono": F(NUM),         # when the HTTP response (D-Bus: the meter's signal) arrived
        "device_time": F(OPT_NUM, False),   # the device's unixtime (Gen1); absent when the device gives none
    },
    METER_STATUS: {
        "role": F((str,)),               # grid | balcony
        "ok": F((bool,)),
        "device": F(OPT_STR, False),
        "error_kind": F(OPT_STR),        # connection | timeout | auth | rate_limited | http | html | invalid | stale
                                         # | invalid_reading (is_valid false / errors) | unsupported | starting
        "error_count": F((int,)),
        "detail": F(OPT_STR, False),
        "last_ok_t_mono": F(OPT_NUM, False),   # sample_t_mono of the last published (fresh) sample
    },
    RELAY_STATE: {
        "command_on": F((bool,)),        # what was asked
        "command_seq": F((int, type(None))),   # envelope seq of the ctrl.relay it carried out
        "ok": F((bool,)),                # the device confirmed the asked state
        "on": F(OPT_BOOL),               # state the device reported; None if unknown
        "timer_remaining_s": F(OPT_NUM, False),
        "error_kind": F(OPT_STR, False),    # connection | timeout | auth | http | html | invalid | unconfirmed
                                            # | no_timer (on without flip-back timer) | superseded | expired
        "detail": F(OPT_STR, False),
    },
    CTRL_SETPOINT: {
        "limits": F((list,), items=_SETPOINT),
        "restart": F((list,), False, items=(str,)),   # serials to restart (writer rate-limits)
        "dtu_reboot": F((bool,), False),
        "reason": F(OPT_STR, False),
        "grid_sample_t_mono": F(OPT_NUM, False),   # sample_t_mono of the grid sample this decision used
        "cap_w": F(OPT_NUM, False),      # W the limits keep to in total: the writer may send a raise at once when
                                         # the limits in force leave room under it
    },
    CTRL_RELAY: {
        "on": F((bool,)),
        "reason": F((str,)),
    },
    CTRL_STATUS: {
        "law": F((str,)),
        "grid_w": F(OPT_NUM),            # last raw grid sample
        "grid_filtered_w": F(OPT_NUM),
        "target_w": F(OPT_NUM),          # grid power aimed at (+ = import)
        "budget_w": F(OPT_NUM),          # min(MaxFeedIn - balcony, V x DCL)
        "balcony_w": F(OPT_NUM),
        "total_limit_w": F(OPT_NUM),     # sum of commanded limits
        "soc_pct": F(OPT_NUM),
        "feed_in_min_soc_pct": F(OPT_NUM),
        "soc_floating_max_pct": F(OPT_NUM),
        "relay_wanted": F(OPT_BOOL),
        "negative_grid_counter": F((int,)),
        "stale": F((list,), items=(str,)),     # inputs that are stale: grid, battery, dtu, balcony
        "setpoints": F((list,), items=_SETPOINT),
        "reasons": F((list,), items=(str,)),   # one line per decision this cycle
        "alarms": F((dict,), values=(int,)),   # ALARM_NAMES -> 0 ok, 1 warning, 2 alarm
    },
    CTRL_SETTINGS: {
        "max_feed_in": F((int,)),
        "power_feed_in_soc": F((int,)),
        "soc_floating_max": F((int,)),
        "zero_point": F((int,)),
        "feed_in_min_soc": F(NUM),
        "answers": F((list,), False, items=(str,)),   # request ids handled (last few), accepted or not
    },
    VENUS_BATTERY: {
        "present": F((bool,)),
        "service": F(OPT_STR),
        "soc_pct": F(OPT_NUM),
        "voltage_v": F(OPT_NUM),
        "current_a": F(OPT_NUM),          # + = charging
        "ccl_a": F(OPT_NUM),
        "dcl_a": F(OPT_NUM),
        "temperature_c": F(OPT_NUM),
        "age_s": F(OPT_NUM),              # since the last value change seen on D-Bus
        "detail": F(OPT_STR, False),      # e.g. "2 batteries, no system service: set [venus] battery_service"
    },
    VENUS_SETTING: {
        "request_id": F((str,)),
        "name": F((str,)),                # one of SETTING_NAMES
        "value": F(NUM),
    },
}
SCHEMAS[METER_BALCONY] = SCHEMAS[METER_GRID]


def check_body(topic: str, body: Any) -> dict:
    try:
        schema = SCHEMAS[topic]
    except KeyError:
        raise SchemaError(f"unknown topic {topic!r}") from None
    return validate(schema, body, topic)
