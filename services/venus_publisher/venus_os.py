"""Clients of two Venus OS services (D-Bus shell; the decisions are in notify.py and model.py):

- `LocalSettings`: com.victronenergy.settings (Victron's localsettings). `add()` creates a setting with its
  default, min and max (AddSetting, idempotent: an existing setting keeps its value) and returns the value in
  force; `set()` writes one; `watch()` follows the user's changes (PropertiesChanged). `connect()` returns None
  when localsettings is not on the bus (a development machine): the caller falls back to config.ini and files.
  On a GX it waits up to WAIT_FOR_SETTINGS_S for it first.
- `inject()`: one notification through com.victronenergy.platform /Notifications/Inject (venus-platform v3.60
  and later). The path is looked for at each call: an older GX (or none) answers with an error, which is logged
  once; the standing alarm works without it.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable, Optional

import dbus

from common import vedbus

log = logging.getLogger("venus_publisher")

SETTINGS_NAME = "com.victronenergy.settings"
PLATFORM_NAME = "com.victronenergy.platform"
INJECT_PATH = "/Notifications/Inject"
CALL_TIMEOUT_S = 5.0
DEVICES_PREFIX = "/Settings/Devices"
# On a GX (Venus OS has /opt/victronenergy) localsettings always exists: wait for it at start rather than run a
# whole life without it; elsewhere (development) do not wait.
WAIT_FOR_SETTINGS_S = 60.0 if os.path.isdir("/opt/victronenergy") else 0.0


class LocalSettings:
    def __init__(self, bus):
        self.bus = bus
        self._matches: dict[str, Any] = {}

    @classmethod
    def connect(cls, bus, wait_s: float = 0.0, sleep=time.sleep) -> Optional["LocalSettings"]:
        """A client when localsettings is on the bus (waiting up to wait_s for it: at a GX's boot it may come
        after us), else None."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                if bus.name_has_owner(SETTINGS_NAME):
                    return cls(bus)
            except dbus.exceptions.DBusException:
                pass
            if time.monotonic() >= deadline:
                return None
            sleep(0.5)

    def add(self, path: str, default: Any, lo: Any = 0, hi: Any = 0) -> Any:
        """Create (if new) and return the value in force; raises DBusException / ValueError on failure."""
        vtype = "s" if isinstance(default, str) else "f" if isinstance(default, float) else "i"
        group, _, name = path.rpartition("/")
        code = self.bus.call_blocking(SETTINGS_NAME, "/", vedbus.IFACE, "AddSetting", "ssvsvv",
                                      (group, name, vedbus.wrap(default), vtype, vedbus.wrap(lo), vedbus.wrap(hi)),
                                      timeout=CALL_TIMEOUT_S)
        if int(code) != 0:
            raise ValueError(f"localsettings AddSetting {path}: error {int(code)}")
        return self.get(path)

    def get(self, path: str) -> Any:
        return vedbus.unwrap(self.bus.call_blocking(SETTINGS_NAME, path, vedbus.IFACE, "GetValue", "", (),
                                                    timeout=CALL_TIMEOUT_S))

    def set(self, path: str, value: Any) -> None:
        """Asynchronous SetValue; a refusal is logged."""
        def done(code):
            if int(code) != 0:
                log.warning("localsettings refused %s = %r (%d)", path, value, int(code))
        self.bus.call_async(SETTINGS_NAME, path, vedbus.IFACE, "SetValue", "v", (vedbus.wrap(value),), done,
                            lambda exc: log.warning("localsettings SetValue %s failed: %s", path, exc),
                            timeout=CALL_TIMEOUT_S)

    def watch(self, path: str, on_change: Callable[[Any], None]) -> None:
        """on_change(value) whenever the setting changes (by the user, the GUI, or us). One watch per path."""
        if path in self._matches:
            return

        def handler(changes):
            if "Value" in changes:
                on_change(vedbus.unwrap(changes["Value"]))
        self._matches[path] = self.bus.add_signal_receiver(handler, signal_name="PropertiesChanged",
                                                           dbus_interface=vedbus.IFACE, bus_name=SETTINGS_NAME,
                                                           path=path)

    def close(self) -> None:
        for match in self._matches.values():
            match.remove()
        self._matches = {}


def instance_setting(unique_id: str) -> str:
    """The localsettings path of a device's VRM instance ("<class>:<n>")."""
    return f"{DEVICES_PREFIX}/{unique_id}/ClassAndVrmInstance"


def unique_id(role: str, serial: Optional[str] = None) -> str:
    """Stable per role and per inverter serial; only characters a D-Bus object path allows."""
    ident = f"dbusopendtu_{role}" + (f"_{serial}" if serial else "")
    return "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in ident)


def parse_instance(value: Any, device_class: str) -> Optional[int]:
    """"dcload:135" -> 135; None when it is not "<device_class>:<n>"."""
    if not isinstance(value, str):
        return None
    cls, _, number = value.partition(":")
    return int(number) if cls == device_class and number.isdigit() and int(number) < 1000 else None


class Injector:
    """Sends notifications to venus-platform; logs once when the GX has no Inject path."""

    def __init__(self, bus):
        self.bus = bus
        self.missing_logged = False

    def inject(self, wire: str) -> None:
        def done(code):
            if int(code) != 0:
                log.warning("venus-platform refused the notification %r (%d)", wire, int(code))
            self.missing_logged = False

        def failed(exc):
            if not self.missing_logged:
                log.warning("no %s %s on this GX (%s): alarms show through the standing alarm only",
                            PLATFORM_NAME, INJECT_PATH, exc.get_dbus_name() if hasattr(exc, "get_dbus_name")
                            else exc)
                self.missing_logged = True
        self.bus.call_async(PLATFORM_NAME, INJECT_PATH, vedbus.IFACE, "SetValue", "v", (vedbus.wrap(wire),), done,
                            failed, timeout=CALL_TIMEOUT_S)
