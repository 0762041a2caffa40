"""Helpers for the venus_publisher tests (no tests here): gdbus as the D-Bus client, test publishers on the bus."""
from __future__ import annotations

import subprocess
import time
from typing import Any, Optional

from gi.repository import GLib

from common.bus import Publisher, Subscriber
from tests.support import base_sections, wait_for, write_config

IFACE = "com.victronenergy.BusItem"
ACLOAD = "com.victronenergy.acload.http_59"
DCSYSTEM = "com.victronenergy.dcsystem.http_137"
ALARM = "com.victronenergy.digitalinput.http_139"


def dcload(n: int) -> str:
    return f"com.victronenergy.dcload.http_{134 + n}"


def gdbus(dest: str, path: str, method: str, *args: str) -> Optional[GLib.Variant]:
    out = subprocess.run(["gdbus", "call", "--system", "--dest", dest, "--object-path", path,
                          "--method", f"{IFACE}.{method}", *args], capture_output=True, text=True, timeout=20)
    if out.returncode != 0:
        return None
    return GLib.Variant.parse(None, out.stdout.strip(), None, None).get_child_value(0)


def value(dest: str, path: str) -> tuple[Optional[str], Any]:
    """(D-Bus type string, value) of one path; (None, None) when the call fails; invalid = ("ai", None)."""
    var = gdbus(dest, path, "GetValue")
    if var is None:
        return None, None
    inner = var.get_variant()
    sig = inner.get_type_string()
    val = inner.unpack()
    return sig, (None if sig == "ai" and val == [] else val)


def items(dest: str) -> dict[str, tuple[str, Any, str]]:
    """GetItems: path -> (type string, value (None if invalid), text); {} when the service is not there."""
    var = gdbus(dest, "/", "GetItems")
    if var is None:
        return {}
    out = {}
    for i in range(var.n_children()):
        entry = var.get_child_value(i)
        path = entry.get_child_value(0).get_string()
        props = entry.get_child_value(1)
        val = props.lookup_value("Value", None)
        sig = val.get_type_string()
        unpacked = val.unpack()
        out[path] = (sig, None if sig == "ai" and unpacked == [] else unpacked,
                     props.lookup_value("Text", None).unpack())
    return out


def set_value(dest: str, path: str, typed: str) -> str:
    """dbus-send SetValue exactly as the README (off a GX); returns e.g. 'int32 0'."""
    out = subprocess.run(["dbus-send", "--system", "--print-reply", f"--dest={dest}", path, f"{IFACE}.SetValue",
                          f"variant:{typed}"], capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    return out.stdout.split("\n", 1)[1].strip()


def bus_names() -> list[str]:
    out = subprocess.run(["dbus-send", "--system", "--print-reply", "--dest=org.freedesktop.DBus",
                          "/org/freedesktop/DBus", "org.freedesktop.DBus.ListNames"],
                         capture_output=True, text=True, timeout=20).stdout
    return [line.strip().split('"')[1] for line in out.splitlines() if 'string "' in line]


def victron_names() -> list[str]:
    return sorted(n for n in bus_names() if n.startswith("com.victronenergy."))


def start_publisher(procs, rundir: str, label: str = "venus_publisher", **overrides):
    defaults = {"control": {"grid_stale_s": 2, "dtu_stale_s": 3, "state_dir": rundir},
                "venus": {"status_stale_s": 3}}
    for section, keys in overrides.items():
        defaults[section] = None if keys is None else {**defaults.get(section, {}), **keys}
    sections = base_sections(rundir, **defaults)
    config = write_config(rundir, sections)
    return procs.python(label, "services.venus_publisher", "--config", config)


def inverter(serial: str, index: int, name: str, dc_power_w: float = 218.8, dc_current_a: float = 4.2,
             temperature_c: float = 30.0, reachable: bool = True) -> dict:
    return {"serial": serial, "name": name, "index": index, "model": "HMS-800W-2T", "reachable": reachable,
            "producing": True, "data_age_s": 1, "sample_t_mono": time.monotonic() - 1, "ac_power_w": 200.0,
            "ac_voltage_v": 230.1, "dc_voltage_v": 52.1, "dc_current_a": dc_current_a, "dc_power_w": dc_power_w,
            "temperature_c": temperature_c, "yield_total_kwh": 12.5, "limit_pct": 25.0, "limit_w": 200.0,
            "max_power_w": 800.0}


def dtu_status(serials: list[str], ok: bool = True) -> dict:
    return {"ok": ok, "error_kind": None if ok else "timeout", "error_count": 0 if ok else 1, "serials": serials,
            "can_control": True, "firmware": "v25.9.11"}


def grid(power_w: float = 123.0) -> dict:
    phases = [{"power_w": power_w / 3, "voltage_v": 230.0 + i, "current_a": 0.2 + i / 10,
               "energy_import_kwh": 10.0 + i, "energy_export_kwh": 1.0 + i} for i in range(3)]
    return {"device": "SPEM-003CEBEU", "power_w": power_w, "sign": "positive_is_import", "phases": phases,
            "energy_import_kwh": 33.0, "energy_export_kwh": 6.0, "sample_t_mono": time.monotonic()}


def meter_status(role: str = "grid", ok: bool = True) -> dict:
    return {"role": role, "ok": ok, "error_kind": None if ok else "timeout", "error_count": 0 if ok else 2}


def ctrl_status(alarms: Optional[dict] = None) -> dict:
    return {"law": "project", "grid_w": 20.0, "grid_filtered_w": 22.5, "target_w": 25.0, "budget_w": 650.0,
            "balcony_w": 0.0, "total_limit_w": 400.0, "soc_pct": 80.0, "feed_in_min_soc_pct": 30.0,
            "soc_floating_max_pct": 90.0, "relay_wanted": True, "negative_grid_counter": 0, "stale": [],
            "setpoints": [], "reasons": ["tracking"], "alarms": alarms or {}}


def ctrl_settings(answers: Optional[list] = None, **values) -> dict:
    body = {"max_feed_in": 700, "power_feed_in_soc": 96, "soc_floating_max": 74, "zero_point": 25,
            "feed_in_min_soc": 30.0, "answers": answers or []}
    body.update(values)
    return body


class Feeds:
    """Test publishers under the real service names."""

    def __init__(self, rundir: str):
        self.dtu = Publisher("dtu_poller", rundir)
        self.shelly = Publisher("shelly_poller", rundir)
        self.ctrl = Publisher("controller", rundir)

    def close(self) -> None:
        for pub in (self.dtu, self.shelly, self.ctrl):
            pub.close()


def until(feed, predicate, timeout_s: float = 20.0, what: str = "condition"):
    """Call feed() and test predicate() every 0.25 s until it holds (the publisher may still be connecting)."""
    def step():
        feed()
        return predicate()
    return wait_for(step, timeout_s, interval_s=0.25, what=what)


def venus_subscriber(rundir: str) -> Subscriber:
    return Subscriber(rundir, topics=["venus."])
