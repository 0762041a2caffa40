"""config.ini: one declared schema, checked at start.

Every section and key the project knows is listed in SCHEMA below; nowhere else. An unknown section or key,
a missing required key or a bad value raises ConfigError, whose text names file, section, key and value.
Services turn that into exit code 2 (see common.service).
"""
from __future__ import annotations

import configparser
import math
import os
import re
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Callable, Optional

from common.settings import BY_NAME as USER_SETTINGS_BY_NAME

CONFIG_EXIT_CODE = 2


class ConfigError(Exception):
    """A config problem the user must fix. The text names file, section, key and value."""

    def __init__(self, path: str, section: str | None, key: str | None, value: Any, reason: str):
        self.path, self.section, self.key, self.value, self.reason = path, section, key, value, reason
        where = path
        if section is not None:
            where += f": [{section}]"
        if key is not None:
            where += f" {key} = {value!r}" if value is not None else f" {key}"
        super().__init__(f"config error: {where}: {reason}")


# --- value parsers: each takes the raw string and returns the value or raises ValueError(reason) ---

def _int(raw: str) -> int:
    try:
        return int(raw.strip(), 10)
    except ValueError:
        raise ValueError("not a whole number") from None


def _float(raw: str) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise ValueError("not a number") from None
    if not math.isfinite(value):
        raise ValueError("not a finite number")
    return value


def _bool(raw: str) -> bool:
    low = raw.strip().lower()
    if low in ("1", "yes", "true", "on"):
        return True
    if low in ("0", "no", "false", "off"):
        return False
    raise ValueError("not a boolean (yes/no, true/false, on/off, 1/0)")


def _str(raw: str) -> str:
    return raw.strip()


_HOST_RE = re.compile(r"^(https?://)?[A-Za-z0-9._\-\[\]:]+(:\d{1,5})?/?$")


def _host(raw: str) -> str:
    value = raw.strip()
    if value and not _HOST_RE.match(value):
        raise ValueError("not a host, host:port or http://host:port")
    return value


_URL = re.compile(r"^https?://([^\s/?#]*@)?(\[[0-9A-Fa-f:.]+\]|[^\s/?#@:\[\]]+)(:\d{1,5})?([/?#]|$)")


def _url(raw: str) -> str:
    value = raw.strip()
    if value and not _URL.match(value):
        raise ValueError("not an http://[user:password@]host[:port]/... URL (a / @ : in a password: %2F %40 %3A)")
    return value


def _level(raw: str) -> str:
    value = raw.strip().upper()
    if value not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ValueError("not a log level (DEBUG, INFO, WARNING, ERROR, CRITICAL)")
    return value


@dataclass(frozen=True)
class Key:
    parse: Callable[[str], Any]
    default: Any = None          # None together with required=True: must be given
    required: bool = False
    min: float | None = None
    max: float | None = None
    choices: tuple = ()
    doc: str = ""
    example: str = ""            # shown in config.example.ini for required keys


@dataclass(frozen=True)
class Section:
    keys: dict
    optional: bool = False       # the whole section may be absent
    doc: str = ""
    pattern: str = ""            # a family of sections "<name>.<id>" (id matching this regex), each optional


def _grid_service(raw: str) -> str:
    value = raw.strip()
    if value and not re.match(r"^com\.victronenergy\.grid\.[A-Za-z0-9_.\-]+$", value):
        raise ValueError("not a grid meter's D-Bus name (com.victronenergy.grid.<id>)")
    return value


def _meter_keys(poll_interval: float, doc: str, example: str, host_required: bool = True) -> dict:
    return {
        "host": Key(_host, None if host_required else "", required=host_required, doc=f"{doc}: host or host:port",
                    example=example),
        "username": Key(_str, "admin", doc="user name (Gen1 Basic auth; Gen2 digest always uses 'admin')"),
        "password": Key(_str, "", doc="password; empty: no authentication"),
        "type": Key(_str, "auto", choices=("auto", "gen1", "gen2"), doc="auto: detect with GET /shelly"),
        "timeout": Key(_float, 2.0, min=0.1, max=30, doc="s, the whole of one HTTP request (connect to last byte)"),
        "poll_interval": Key(_float, poll_interval, min=0.2, max=3600, doc="s"),
        "channel": Key(_int, 0, min=0, max=2,
                       doc="channel with this CT on EM, Pro EM, EM Gen3 (monophase Pro 3EM: 0..2); 3EM/Pro 3EM: "
                           "ignored, the phases are summed"),
    }


def _user_setting(name: str) -> Key:
    """A [control] key that is also a user setting on D-Bus: range and default from common/settings.py."""
    spec = USER_SETTINGS_BY_NAME[name]
    return Key(_int, spec.default, min=spec.min, max=spec.max, doc=spec.doc)


SCHEMA: dict[str, Section] = {
    "opendtu": Section({
        "type": Key(_str, "auto", choices=("auto", "opendtu", "ahoy"),
                    doc="auto: ask the gateway which it is (at start and after it was unreachable)"),
        "host": Key(_host, required=True, doc="OpenDTU or AhoyDTU: host, host:port or http://host:port",
                    example="192.168.1.50"),
        "username": Key(_str, "admin", doc="OpenDTU user name (always admin on OpenDTU; AhoyDTU has none)"),
        "password": Key(_str, "", doc="OpenDTU: empty = read-only access, no control possible; AhoyDTU: its admin "
                                      "password, empty if none is set"),
        "timeout": Key(_float, 2.5, min=0.1, max=30, doc="s, the whole of one HTTP request (connect to last byte)"),
        "poll_interval": Key(_float, 2.0, min=0.2, max=3600,
                             doc="s between live-data polls (AhoyDTU: at least a third of its refresh)"),
        "setpoint_timeout_s": Key(_float, 10.0, min=1, max=600,
                                  doc="s without a fresh setpoint before every inverter goes to its safe minimum"),
        "limit_ack_timeout_s": Key(_float, 15.0, min=1, max=120,
                                   doc="s to wait for limit_set_status Ok before a limit counts as failed (AhoyDTU: at "
                                       "least its resends take)"),
        "inverter_restart_min_interval_s": Key(_float, 600.0, min=0, max=86400,
                                               doc="s, at most one restart per inverter in this time"),
        "dtu_reboot_min_interval_s": Key(_float, 3600.0, min=0, max=86400,
                                         doc="s, at most one DTU reboot in this time"),
        "limit_refresh_s": Key(_float, 60.0, min=5, max=3600,
                               doc="s, an unchanged limit is sent again after this (inverters revert to 100 %)"),
    }, doc="the Hoymiles gateway: OpenDTU or AhoyDTU"),
    "grid_meter": Section({
        "source": Key(_str, "shelly", choices=("shelly", "dbus"),
                      doc="shelly: poll the Shelly at host; dbus: the GX's own grid meter (com.victronenergy.grid.*)"),
        "service": Key(_grid_service, "", doc="source = dbus: this D-Bus service; empty: the lowest /DeviceInstance"),
        **_meter_keys(1.0, "grid Shelly, required with source = shelly", "192.168.1.51", host_required=False),
    }, doc="the meter that measures the grid (+ = import)"),
    "balcony_meter": Section(_meter_keys(5.0, "balcony Shelly", "192.168.1.52"), optional=True,
                             doc="a plug-in solar system whose output is subtracted from MaxFeedIn"),
    "relay": Section({
        "keepalive_url": Key(_url, required=True, doc="relay on with a flip-back timer well above interval",
                             example="http://192.168.1.53/relay/0?turn=on&timer=900"),
        "switchoff_url": Key(_url, required=True, doc="relay off (never with a timer)",
                             example="http://192.168.1.53/relay/0?turn=off"),
        "interval": Key(_float, 300.0, min=5, max=3600, doc="s between life-signal decisions"),
        "timeout": Key(_float, 5.0, min=0.1, max=60, doc="s, the whole of one HTTP request (connect to last byte)"),
    }, optional=True, doc="the life signal: a relay that opens by itself unless re-armed"),
    "control": Section({
        "law": Key(_str, "project", choices=("project", "seed"), doc="control law"),
        "zero_point": _user_setting("zero_point"),
        "max_feed_in": _user_setting("max_feed_in"),
        "power_feed_in_soc": _user_setting("power_feed_in_soc"),
        "soc_floating_max": _user_setting("soc_floating_max"),
        "state_dir": Key(_str, "", doc="folder for the persisted state; default: the folder of this config file"),
        "min_percent": Key(_int, 1, min=0, max=100, doc="%, lowest inverter limit"),
        "max_percent": Key(_int, 100, min=1, max=100,
                           doc="%, highest inverter limit (the caps in W apply anyway; README: when to lower it)"),
        "steps_percent": Key(_int, 2, min=1, max=50, doc="%, limits are quantised to these steps (seed law)"),
        "consume_filter_factor": Key(_int, 3, min=0, max=100, doc="SMA factor for rising consumption"),
        "feed_in_filter_factor": Key(_int, 0, min=0, max=100, doc="SMA factor on export readings"),
        "feed_in_at_negative_watt_difference": Key(_int, 150, min=0, max=5000,
                                                    doc="W, a drop larger than this is taken at once"),
        "accuracy": Key(_int, 10, min=0, max=500, doc="W, deadband of the seed law"),
        "max_temperature": Key(_float, 50.0, min=20, max=100, doc="°C, inverter over-temperature"),
        "temperature_hysteresis": Key(_float, 5.0, min=0, max=30, doc="K, alarm clears below max - this"),
        "seed_loop_interval": Key(_float, 3.0, min=0.5, max=60, doc="s, cycle of the seed law"),
        "grid_stale_s": Key(_float, 5.0, min=1, max=120, doc="s, older grid samples count as stale"),
        "battery_stale_s": Key(_float, 60.0, min=1, max=3600, doc="s, older battery state counts as stale"),
        "battery_max_age_s": Key(_float, 300.0, min=10, max=3600,
                                 doc="s, a battery whose own values have not changed for longer counts as stale"),
        "battery_fallback_dcl_a": Key(_float, 0.0, min=0, max=1000,
                                      doc="A, discharge limit used when the battery reports none "
                                          "(0: none, the inverters stay at their minimum)"),
        "dtu_stale_s": Key(_float, 30.0, min=2, max=3600, doc="s, older inverter data counts as stale"),
        "balcony_fallback_w": Key(_int, 500, min=0, max=800, doc="W assumed when the balcony meter is unreadable"),
        "negative_grid_w": Key(_int, 150, min=0, max=5000, doc="W of export counted as uncorrectable"),
        "negative_grid_loops": Key(_int, 50, min=1, max=254, doc="loops of such export before the relay opens"),
        "producing_grace_s": Key(_float, 270.0, min=0, max=3600,
                                 doc="s an inverter may be on grid but not producing before a restart"),
        "balcony_stale_s": Key(_float, 30.0, min=1, max=3600,
                               doc="s, older balcony samples count as unreadable (then balcony_fallback_w)"),
        "relay_first_decision_s": Key(_float, 30.0, min=0, max=3600,
                                      doc="s after start of the first life-signal decision (then every interval)"),
        "ack_timeout_s": Key(_float, 20.0, min=1, max=300,
                             doc="s without dtu.ack before a limit command no longer counts as in flight"),
        "quantum_pct": Key(_float, 1.0, min=0.1, max=10, doc="%, limit resolution of the project law"),
        "raise_deadband_w": Key(_int, 2, min=0, max=500,
                                doc="W, project law: a raise of the total limit smaller than this is not sent"),
        "reduce_deadband_w": Key(_int, 15, min=0, max=500,
                                 doc="W, project law: a reduction of the total limit smaller than this is not sent"),
        "active_min_pct": Key(_float, 10.0, min=0, max=100,
                              doc="%, project law: spread over only as many inverters as get this much each"),
        "tau_up_s": Key(_float, 1.5, min=0.1, max=60,
                        doc="s, project law output model: lag of an inverter towards a higher limit"),
        "tau_down_s": Key(_float, 3.0, min=0.1, max=60,
                          doc="s, project law output model: lag of an inverter towards a lower limit"),
        "dead_time_initial_s": Key(_float, 2.0, min=0.5, max=18,
                                   doc="s after an ack before the output moves, until learned from the data"),
        "min_command_interval_s": Key(_float, 2.0, min=0, max=60,
                                      doc="s, project law: least time between two limit changes of one inverter"),
        "load_filter_band_w": Key(_float, 20.0, min=0, max=200,
                                  doc="W, project law: load estimate moves within this are smoothed (0 = off)"),
        "load_filter_alpha": Key(_float, 0.5, min=0.05, max=1,
                                 doc="project law: weight of a new load sample inside that band (1 = no smoothing)"),
        "pulse_min_w": Key(_float, 200.0, min=0, max=5000,
                           doc="W, project law: periodic load pulses this big are predicted (0 = no prediction)"),
        "pulse_lead_s": Key(_float, 3.0, min=0, max=30,
                            doc="s, project law: pulses are predicted this much beyond the learned dead time"),
        "stop_hold_s": Key(_float, 60.0, min=0, max=3600,
                           doc="s, an inverter stopped because the cap is below its minimum output stays stopped "
                               "at least this long"),
    }, doc="the control loop"),
    "venus": Section({
        "acload_instance": Key(_int, 59, min=0, max=999),
        "dcsystem_instance": Key(_int, 137, min=0, max=999),
        "dcload_first_instance": Key(_int, 134, min=0, max=999, doc="inverter n (in the DTU's order) gets this + n"),
        "acload_custom_name": Key(_str, "Grid by Shelly"),
        "alarm_instance": Key(_int, 139, min=0, max=999,
                              doc="digitalinput service whose /Alarm and /CustomName show the standing alarm"),
        "battery_service": Key(_str, "", doc="D-Bus name of the battery to use when several exist"),
        "status_stale_s": Key(_float, 15.0, min=2, max=600,
                              doc="s without dtu.status / meter.status / ctrl.status before D-Bus shows the source stale "
                                  "(unchanged ones are repeated every 5-7 s: keep it >= 10)"),
    }, doc="Venus OS D-Bus services"),
    "inverter": Section({
        "max_power_w": Key(_int, 0, min=0, max=3000,
                           doc="W, this inverter's nominal power: a plausibility bound for the rating the DTU "
                               "reports (the larger counts); 0 = not set"),
        "enable_switch_off": Key(_bool, True,
                                 doc="false: never switched off, only held at its minimum limit (the cap then "
                                     "counts its minimum output)"),
    }, optional=True, pattern=r"[0-9a-fA-F]{5,16}|[0-9]|1[0-5]",
        doc="one per inverter, [inverter.<serial>] or [inverter.<position 0..15 in the DTU's order>] (a serial "
            "match wins)"),
    "bus": Section({
        "rundir": Key(_str, "/run/dbus-opendtu",
                      doc="ipc:// sockets live here; a folder of our own, mode 0700 (a GX: under /run, in memory)"),
        "log_level": Key(_level, "INFO", doc="log level of every service"),
    }, doc="the ZeroMQ bus and process-wide settings"),
}


class Config(SimpleNamespace):
    """Attribute access per section (`cfg.opendtu.host`); an absent optional section is None."""

    path: str

    def secrets(self) -> list[str]:
        out = []
        for name in SCHEMA:
            section = getattr(self, name, None)
            if section is not None and getattr(section, "password", ""):
                out.append(section.password)
        return out


def _check_range(path, section, key, spec: Key, raw, value):
    if spec.choices and value not in spec.choices:
        raise ConfigError(path, section, key, raw, f"must be one of {', '.join(spec.choices)}")
    if spec.min is not None and value < spec.min:
        raise ConfigError(path, section, key, raw, f"must be >= {spec.min:g}")
    if spec.max is not None and value > spec.max:
        raise ConfigError(path, section, key, raw, f"must be <= {spec.max:g}")


def _section_values(path: str, section: str, spec: Section, given) -> SimpleNamespace:
    out = {}
    for key, kspec in spec.keys.items():
        raw = given.get(key) if given else None
        if raw is None or (kspec.required and raw.strip() == ""):
            if kspec.required:
                raise ConfigError(path, section, key, raw, "required key is missing or empty")
            out[key] = kspec.default
            continue
        try:
            value = kspec.parse(raw)
        except ValueError as exc:
            raise ConfigError(path, section, key, raw, str(exc)) from None
        _check_range(path, section, key, kspec, raw, value)
        out[key] = value
    return SimpleNamespace(**out)


@dataclass(frozen=True)
class InverterOptions:
    max_power_w: int = 0              # 0: not set
    enable_switch_off: bool = True


def per_inverter(by_id, serial: Optional[str], index: Optional[int], default=None):
    """The entry of `by_id` (a dict or (id, value) pairs) for this inverter: its serial's (a serial match wins),
    else its position's, else `default`."""
    by_id = dict(by_id)
    for ident in ((serial or "").lower(), None if index is None else str(index)):
        if ident and ident in by_id:
            return by_id[ident]
    return default


def inverter_options(cfg, serial: Optional[str], index: Optional[int]) -> InverterOptions:
    """The [inverter.<id>] section for this inverter: its serial's, else its position's, else the defaults."""
    ns = per_inverter(getattr(cfg, "inverter", None) or {}, serial, index)
    return InverterOptions() if ns is None else InverterOptions(ns.max_power_w, ns.enable_switch_off)


def switch_off_pairs(cfg) -> tuple:
    """((id, enable_switch_off), ...) of the [inverter.<id>] sections, for `per_inverter`."""
    return tuple((ident, ns.enable_switch_off) for ident, ns in (getattr(cfg, "inverter", None) or {}).items())


def parse_config(text: str, path: str = "<string>") -> Config:
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";", "#"),
                                       default_section="\x00none")
    try:
        parser.read_string(text, source=path)
    except configparser.DuplicateSectionError as exc:
        raise ConfigError(path, exc.section, None, None, "section given twice") from None
    except configparser.DuplicateOptionError as exc:
        raise ConfigError(path, exc.section, exc.option, None, "key given twice") from None
    except configparser.Error as exc:
        raise ConfigError(path, None, None, None, f"not an ini file: {exc.message.splitlines()[0]}") from None

    families: dict[str, dict] = {name: {} for name, spec in SCHEMA.items() if spec.pattern}
    for section in parser.sections():
        family, _, ident = section.partition(".")
        spec = SCHEMA.get(family)
        if spec is not None and spec.pattern and ident:
            if not re.fullmatch(spec.pattern, ident):
                raise ConfigError(path, section, None, None,
                                  f"'{ident}' is neither an inverter serial (hex) nor a position 0..15")
            if ident.lower() in families[family]:
                raise ConfigError(path, section, None, None, "section given twice")
        elif section not in SCHEMA or spec.pattern:
            known = [f"{n}.<id>" if s.pattern else n for n, s in SCHEMA.items()]
            raise ConfigError(path, section, None, None, f"unknown section (known: {', '.join(known)})")
        for key in parser[section]:
            if key not in spec.keys:
                raise ConfigError(path, section, key, parser[section][key], "unknown key")
        if spec.pattern:
            families[family][ident.lower()] = _section_values(path, section, spec, parser[section])

    values: dict[str, Optional[SimpleNamespace]] = {}
    for section, spec in SCHEMA.items():
        if spec.pattern:
            values[section] = families[section]      # id -> namespace
            continue
        if section not in parser:
            if spec.optional:
                values[section] = None
                continue
            if any(k.required for k in spec.keys.values()):
                missing = next(name for name, k in spec.keys.items() if k.required)
                raise ConfigError(path, section, missing, None, "missing required section")
        values[section] = _section_values(path, section, spec, parser[section] if section in parser else {})

    grid = values["grid_meter"]
    if grid.source == "shelly" and not grid.host:
        raise ConfigError(path, "grid_meter", "host", None, "required with source = shelly"
                          if "grid_meter" in parser else "missing required section")
    control = values["control"]
    if control.min_percent > control.max_percent:
        raise ConfigError(path, "control", "min_percent", control.min_percent,
                          f"must not exceed max_percent ({control.max_percent})")
    if not control.state_dir:
        control.state_dir = os.path.dirname(os.path.abspath(path)) if path != "<string>" else "."
    cfg = Config(**values)
    cfg.path = path
    return cfg


def load_config(path: str) -> Config:
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise ConfigError(path, None, None, None, f"cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(path, None, None, None, "not UTF-8 text") from None
    return parse_config(text, path)


def example_ini() -> str:
    """The commented example config, generated from SCHEMA (config.example.ini is checked against it)."""
    lines = ["; dbus-opendtu configuration (generated from common/config.py SCHEMA: every key with its default).",
             "; Unknown sections or keys are errors. Optional sections are commented out: remove the '; ' to use",
             "; them. Check a file with: python -m common.config PATH", ""]
    for name, spec in SCHEMA.items():
        pre = "; " if spec.optional else ""
        head = f"{pre}[{name}.0]" if spec.pattern else f"{pre}[{name}]"
        if spec.doc or spec.optional:
            head += f"    ; {'optional: ' if spec.optional else ''}{spec.doc}"
        lines.append(head)
        for key, k in spec.keys.items():
            default = k.example if k.required or k.example else ("" if k.default is None else k.default)
            notes = []
            if k.required:
                notes.append("required")
            if k.doc:
                notes.append(k.doc)
            if k.choices:
                notes.append(" | ".join(k.choices))
            elif k.min is not None or k.max is not None:
                notes.append(f"range {k.min:g}..{k.max:g}")
            lines.append(f"{pre}{key} = {default}" + (f"    ; {'; '.join(notes)}" if notes else ""))
        lines.append("")
    return "\n".join(lines)


def markdown_reference() -> str:
    """The README's config table, generated from SCHEMA (a test checks README against it)."""
    rows = ["| Section | Key | Default | Range / choices | Meaning |", "|---|---|---|---|---|"]
    for name, spec in SCHEMA.items():
        for key, k in spec.keys.items():
            default = "*required*" if k.required else (f"`{k.default}`" if k.default not in ("", None) else "(empty)")
            if k.choices:
                rng = " \\| ".join(k.choices)
            elif k.min is not None or k.max is not None:
                rng = f"{k.min:g}..{k.max:g}"
            else:
                rng = ""
            section = (f"`[{name}.<id>]`" if spec.pattern else f"`[{name}]`") + (" (optional)" if spec.optional else "")
            rows.append(f"| {section} | `{key}` | {default} | {rng} | {k.doc} |")
    return "\n".join(rows)


def main(argv=None) -> int:
    """`python -m common.config PATH`: check a config file (exit 2 with one message on error);
    `python -m common.config --example`: print the example config; `--markdown`: the README table;
    `--migrate OLD.ini [--output NEW.ini]`, `--is-original PATH`: upgrade from the original (common/migrate.py)."""
    import sys
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--migrate"] and len(args) in (2, 4) and (len(args) == 2 or args[2] == "--output"):
        from common import migrate
        return migrate.main(args[1], args[3] if len(args) == 4 else None)
    if args[:1] == ["--is-original"] and len(args) == 2:
        from common import migrate
        return 0 if migrate.is_original(args[1]) else 1
    if args == ["--example"]:
        print(example_ini())
        return 0
    if args == ["--markdown"]:
        print(markdown_reference())
        return 0
    if len(args) != 1:
        print("usage: python -m common.config PATH | --example | --markdown | --migrate OLD.ini [--output NEW.ini]"
              " | --is-original PATH", file=sys.stderr)
        return CONFIG_EXIT_CODE
    try:
        cfg = load_config(args[0])
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        from common import migrate
        if migrate.is_original(args[0]):
            print(f"{args[0]} is the original dbus-opendtu's config: convert it with python3 -m common.config "
                  f"--migrate {args[0]} --output NEW.ini (install.sh does this)", file=sys.stderr)
        return CONFIG_EXIT_CODE
    present = [name for name in SCHEMA if getattr(cfg, name) not in (None, {})]
    print(f"{args[0]}: ok (sections: {', '.join(present)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
