"""Upgrade from the original dbus-opendtu: its config.ini ([DEFAULT], [INVERTER0..5], [SHELLY]) into this
project's format (`python -m common.config --migrate OLD.ini --output NEW.ini`, `--is-original PATH`).

Every original key is either mapped (with its unit converted: SignOfLifeLog is in minutes) or listed as having no
equivalent. A value outside this project's range is not carried over (the default stays, and the report says so).
Both layouts are known: the 2025 one ([INVERTER0..2] the inverters' dcloads, [INVERTER3] the dcsystem,
[INVERTER4] the temperature service) and the newest ([INVERTER5] the alarm digital input, `enableSwitchOff` in
every section, used for the inverters; relay URLs may carry `user:pass@`), and the older keys of the template
era (DTU, NumberOfTemplates, ...).
"""
from __future__ import annotations

import configparser
import os
import re
from typing import Optional

from common import config as c

# [DEFAULT] key (lower case, as configparser gives it) -> (section, key, factor to our unit, what it is)
DEFAULT_KEYS = {
    "zeropoint": ("control", "zero_point", None, "W"),
    "maxfeedin": ("control", "max_feed_in", None, "W"),
    "minpercent": ("control", "min_percent", None, "%"),
    "maxpercent": ("control", "max_percent", None, "%"),
    "stepspercent": ("control", "steps_percent", None, "%"),
    "consumefilterfactor": ("control", "consume_filter_factor", None, ""),
    "feedinfilterfactor": ("control", "feed_in_filter_factor", None, ""),
    "feedinatnegativewattdifference": ("control", "feed_in_at_negative_watt_difference", None, "W"),
    "dtu_looptime": ("control", "seed_loop_interval", None, "s"),
    "dtu_statustime": ("opendtu", "poll_interval", None, "s"),
    "accuracy": ("control", "accuracy", None, "W"),
    "maxtemperature": ("control", "max_temperature", None, "°C"),
    "logging": ("bus", "log_level", None, ""),
    "host": ("opendtu", "host", None, ""),
    "httptimeout": ("opendtu", "timeout", None, "s"),
    "username": ("opendtu", "username", None, ""),
    "password": ("opendtu", "password", None, ""),
    "signoflifelog": ("relay", "interval", 60.0, "min -> s"),
}
SHELLY_KEYS = {
    "deviceinstance": ("venus", "acload_instance", None, ""),
    "customname": ("venus", "acload_custom_name", None, ""),
    "host": ("grid_meter", "host", None, ""),
    "username": ("grid_meter", "username", None, ""),
    "password": ("grid_meter", "password", None, ""),
    "keepaliveurl": ("relay", "keepalive_url", None, ""),
    "switchoffurl": ("relay", "switchoff_url", None, ""),
    "balcony": ("balcony_meter", "host", None, ""),
}
NO_EQUIVALENT = {
    "accesstype": "only OnPremise existed; the meter is always read on the LAN",
    "phase": "unused by the original; [grid_meter] channel selects the CT",
    "numberoftemplates": "template inverters are not supported",
    "dtu": "only OpenDTU is supported",
    "useyieldday": "/History/EnergyIn is always the yield total",
    "maxagetslastsuccess": "[control] dtu_stale_s judges the inverter data's age",
    "magagetslastsuccess": "[control] dtu_stale_s judges the inverter data's age",
    "dryrun": "no dry-run mode",
    "acposition": "inverters are published as DC loads, not PV inverters",
}
SECRET_KEYS = {"password"}
ORIGINAL_SECTION = re.compile(r"^(DEFAULT|SHELLY|INVERTER\d+|TEMPLATE\d+)$", re.IGNORECASE)
ORIGINAL_KEYS = set(DEFAULT_KEYS) | set(SHELLY_KEYS) | set(NO_EQUIVALENT) | {"deviceinstance", "enableswitchoff"}
LOG_LEVELS = {"NOTSET": "DEBUG"}


def _read(path: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, default_section="\x00none", strict=False,
                                       inline_comment_prefixes=(";", "#"))
    with open(path, encoding="utf-8", errors="replace") as handle:
        parser.read_file(handle, source=path)
    return parser


def is_original(path: str) -> bool:
    """True when PATH is a config.ini of the original project (its sections, none of ours)."""
    try:
        parser = _read(path)
    except (OSError, configparser.Error):
        return False
    sections = parser.sections()
    if not sections or any(s in c.SCHEMA for s in sections):
        return False
    return all(ORIGINAL_SECTION.match(s) for s in sections) and any(
        k in ORIGINAL_KEYS for s in sections for k in parser[s])


def redact(key: str, value: str) -> str:
    if key in SECRET_KEYS or key.endswith("password"):
        return "***" if value else "(empty)"
    return re.sub(r"//([^/@\s:]+):[^/@\s]*@", r"//\1:***@", value)


class Migration:
    def __init__(self):
        self.values: dict[str, dict[str, str]] = {}
        self.inverters: dict[int, bool] = {}
        self.mapped: list[str] = []
        self.dropped: list[str] = []

    def put(self, where: str, section: str, key: str, raw: str, factor: Optional[float], unit: str) -> None:
        value = raw.strip()
        if section == "bus" and key == "log_level":
            value = LOG_LEVELS.get(value.upper(), value.upper())
        if factor is not None:
            try:
                value = f"{float(value) * factor:g}"
            except ValueError:
                self.dropped.append(f"{where} = {value!r}: not a number, not carried over")
                return
        spec = c.SCHEMA[section].keys[key]
        if value == "" and spec.required:
            self.dropped.append(f"{where} is empty")
            return
        if value != "":
            try:
                parsed = spec.parse(value)
                c._check_range("", section, key, spec, value, parsed)
            except (ValueError, c.ConfigError) as exc:
                why = exc.reason if isinstance(exc, c.ConfigError) else str(exc)
                self.dropped.append(f"{where} = {redact(key, raw.strip())!r}: {why} here; "
                                    f"[{section}] {key} keeps its default {spec.default!r}")
                return
        self.values.setdefault(section, {})[key] = value
        note = f" ({unit})" if unit and "->" in unit else ""
        self.mapped.append(f"{where} = {redact(key, raw.strip())} -> [{section}] {key} = "
                           f"{redact(key, value)}{note}")


def migrate(parser: configparser.ConfigParser) -> Migration:
    mig = Migration()
    for section in parser.sections():
        name = section.upper()
        items = parser[section]
        if name == "DEFAULT":
            table = DEFAULT_KEYS
        elif name == "SHELLY":
            table = SHELLY_KEYS
        elif re.fullmatch(r"INVERTER\d+", name):
            _inverter(mig, int(name[8:]), items)
            continue
        else:
            mig.dropped.append(f"[{section}]: template inverters are not supported, ignored"
                               if name.startswith("TEMPLATE") else f"[{section}]: unknown section, ignored")
            continue
        for key, raw in items.items():
            where = f"[{section}] {key}"
            if key in table:
                section_to, key_to, factor, unit = table[key]
                mig.put(where, section_to, key_to, raw, factor, unit)
            else:
                mig.dropped.append(f"{where}: {NO_EQUIVALENT.get(key, 'unknown key')}, no equivalent")
    if not mig.values.get("opendtu", {}).get("password"):
        mig.dropped.append("[opendtu] password is empty: this project then only reads the inverters and controls "
                           "nothing; set the OpenDTU admin password")
    relay = mig.values.get("relay", {})
    if relay and not (relay.get("keepalive_url") and relay.get("switchoff_url")):
        mig.dropped.append("[relay]: KeepAliveURL and SwitchOffURL are both needed for a life signal; "
                           "no [relay] section written (SignOfLifeLog unused)")
        del mig.values["relay"]
    return mig


# The original's [INVERTERn] sections: 0..2 the inverters (dcloads), 3 the dcsystem, 4 the battery temperature
# helper, 5 the alarm digitalinput (its newest layout gives every section an enableSwitchOff, used for 0..2 only).
ROLE_SECTIONS = {3: ("dcsystem_instance", "the DC system"), 5: ("alarm_instance", "the alarm digital input")}
INVERTER_SECTIONS = range(3)


def _inverter(mig: Migration, n: int, items) -> None:
    for key, raw in items.items():
        where = f"[INVERTER{n}] {key}"
        if key == "enableswitchoff" and n in INVERTER_SECTIONS:
            try:
                mig.inverters[n] = c._bool(raw)
            except ValueError as exc:
                mig.dropped.append(f"{where} = {raw!r}: {exc}; the default (true) stays")
                continue
            mig.mapped.append(f"{where} = {raw.strip()} -> [inverter.{n}] enable_switch_off = "
                              f"{'true' if mig.inverters[n] else 'false'}")
        elif key == "enableswitchoff":
            mig.dropped.append(f"{where}: not an inverter in the original, ignored")
        elif key == "deviceinstance" and n == 0:
            mig.put(where, "venus", "dcload_first_instance", raw, None, "")
        elif key == "deviceinstance" and n in INVERTER_SECTIONS:
            first = int(mig.values.get("venus", {}).get("dcload_first_instance", "134"))
            if raw.strip() == str(first + n):
                mig.mapped.append(f"{where} = {raw.strip()}: = [venus] dcload_first_instance + {n}")
            else:
                mig.dropped.append(f"{where} = {raw.strip()}: inverter n gets dcload_first_instance + n "
                                   f"({first + n}); on a GX change it in the device's VRM instance setting")
        elif key == "deviceinstance" and n in ROLE_SECTIONS:
            mig.put(where, "venus", ROLE_SECTIONS[n][0], raw, None, "")
        elif key == "deviceinstance":
            mig.dropped.append(f"{where} = {raw.strip()}: a service this project does not publish "
                               "(the original's battery temperature / heater helper), no equivalent")
        else:
            mig.dropped.append(f"{where}: {NO_EQUIVALENT.get(key, 'unknown key')}, no equivalent")


def render(mig: Migration, source: str) -> str:
    lines = [f"; converted from the original dbus-opendtu config {source} by python -m common.config --migrate",
             "; every key not given here has its default (see config.example.ini)", ""]
    for section in c.SCHEMA:
        if section in mig.values:
            lines.append(f"[{section}]")
            lines.extend(f"{k} = {v}" for k, v in mig.values[section].items())
            lines.append("")
    for n, enabled in sorted(mig.inverters.items()):
        lines += [f"[inverter.{n}]", f"enable_switch_off = {'true' if enabled else 'false'}", ""]
    return "\n".join(lines)


def write_private(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode("utf-8"))
    finally:
        os.close(fd)


def main(old: str, output: Optional[str]) -> int:
    import sys
    try:
        parser = _read(old)
    except OSError as exc:
        print(f"{old}: cannot read: {exc.strerror}", file=sys.stderr)
        return c.CONFIG_EXIT_CODE
    except configparser.Error as exc:
        print(f"{old}: not an ini file: {str(exc).splitlines()[0]}", file=sys.stderr)
        return c.CONFIG_EXIT_CODE
    if not is_original(old):
        print(f"{old}: not a config.ini of the original dbus-opendtu (no [DEFAULT]/[INVERTERn]/[SHELLY] with "
              "its keys)", file=sys.stderr)
        return c.CONFIG_EXIT_CODE
    mig = migrate(parser)
    text = render(mig, old)
    missing = [f"[{s}] {k}" for s, k in (("opendtu", "host"), ("grid_meter", "host"))
               if not mig.values.get(s, {}).get(k)]
    print(f"mapped from {old}:")
    for line in mig.mapped:
        print(f"  {line}")
    print("no equivalent / not carried over:")
    for line in mig.dropped or ["(nothing)"]:
        print(f"  {line}")
    if missing:
        print(f"{old}: {' and '.join(missing)} missing (the original's [DEFAULT] Host / [SHELLY] Host): "
              "nothing written", file=sys.stderr)
        return c.CONFIG_EXIT_CODE
    if output is None:
        print("---")
        print(text)
        return 0
    try:
        write_private(output, text)
    except OSError as exc:
        print(f"{output}: cannot write: {exc.strerror}", file=sys.stderr)
        return c.CONFIG_EXIT_CODE
    print(f"written: {output} (mode 0600)")
    return 0
