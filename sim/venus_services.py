"""Stand-ins for two Venus OS services that run on every GX but not here, on the system bus
(DBUS_SYSTEM_BUS_ADDRESS): a development and test tool, never installed on a GX.

`LocalSettings` is `com.victronenergy.settings` (Victron's localsettings): `/` answers AddSetting(group, name,
default, type, min, max) -> 0 / negative error, AddSilentSetting, AddSettings(aa{sv}) -> aa{sv}, GetValue (dict) and
GetItems; every setting is a BusItem with GetValue / SetValue / GetText / GetMin / GetMax / GetDefault and a
PropertiesChanged signal. AddSetting is idempotent (an existing setting keeps its value); a
`.../ClassAndVrmInstance` whose default "<class>:<n>" is taken by another device gets the next free n, as
localsettings does. A setting without limits reads min 0, max 2147483647 (as gui-v2 sees it).

`Platform` is `com.victronenergy.platform` with `/Notifications/Inject`: SetValue of "<type>\\t<device>\\t<text>"
(type 0 warning, 1 alarm, 2 notification) returns 0 and records the notification in `injected`; anything
malformed returns -1.

    with LocalSettings() as settings, Platform() as platform:    # each in its own GLib thread
        ...
"""
from __future__ import annotations

import os
import threading
from typing import Any, Optional

import dbus
import dbus.bus
import dbus.service

from common import vedbus

IFACE = vedbus.IFACE
INT_MAX = 2147483647
SETTINGS_NAME = "com.victronenergy.settings"
PLATFORM_NAME = "com.victronenergy.platform"
INJECT_PATH = "/Notifications/Inject"


class _GlibService:
    """Runs `_open()` (building the service) in a GLib main loop of its own thread; `stop()` closes it."""

    def __init__(self):
        self._loop = None
        self._thread: Optional[threading.Thread] = None
        self.bus = None
        self.lock = threading.Lock()

    def start(self, timeout_s: float = 10.0):
        from gi.repository import GLib
        vedbus.ensure_mainloop()
        ready, error = threading.Event(), []

        def first():
            try:
                # by address: libdbus caches the system bus address per process, and tests start a new daemon each
                address = os.environ.get("DBUS_SYSTEM_BUS_ADDRESS")
                self.bus = dbus.bus.BusConnection(address) if address else vedbus.new_system_bus()
                self.bus.set_exit_on_disconnect(False)   # a test's daemon may go first: never _exit the test
                self._open()
            except BaseException as exc:  # reported to start()
                error.append(exc)
            ready.set()
            return False
        self._loop = GLib.MainLoop()
        GLib.idle_add(first)
        self._thread = threading.Thread(target=self._loop.run, name=type(self).__name__, daemon=True)
        self._thread.start()
        if not ready.wait(timeout_s):
            raise TimeoutError(f"{type(self).__name__} did not come up")
        if error:
            raise error[0]
        return self

    def call(self, func, *args):
        """Run func(*args) in the service's GLib thread and return its result."""
        from gi.repository import GLib
        done, out = threading.Event(), []

        def run():
            out.append(func(*args))
            done.set()
            return False
        GLib.idle_add(run)
        if not done.wait(5):
            raise TimeoutError("GLib thread busy")
        return out[0]

    def stop(self) -> None:
        if self._loop is None:
            return

        def close():
            if self.bus is not None:
                self.bus.close()
            self._loop.quit()
        self.call(close) if self._thread.is_alive() else None
        self._thread.join(5)
        self._loop = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _open(self) -> None:
        raise NotImplementedError


# ---------------------------------------------------------------- localsettings

class _Setting(dbus.service.Object):
    def __init__(self, owner: "LocalSettings", path: str, value, default, vtype: str, lo, hi):
        self.owner, self.path = owner, path
        self.value, self.default, self.vtype, self.lo, self.hi = value, default, vtype, lo, hi
        super().__init__(owner.bus, path)

    def _ok(self, value) -> bool:
        if self.vtype == "s":
            return isinstance(value, str)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.vtype == "i" and value != int(value):
            return False
        return (self.lo == 0 and self.hi == 0) or self.lo <= value <= self.hi

    @dbus.service.method(IFACE, out_signature="v")
    def GetValue(self):
        return vedbus.wrap(self.value)

    @dbus.service.method(IFACE, out_signature="s")
    def GetText(self):
        return str(self.value)

    @dbus.service.method(IFACE, in_signature="v", out_signature="i")
    def SetValue(self, raw):
        value = vedbus.unwrap(raw)
        if isinstance(value, str) and self.vtype in "if":
            try:
                value = float(value)
            except ValueError:
                return -1
        if not self._ok(value):
            return -1
        self.set(int(value) if self.vtype == "i" else float(value) if self.vtype == "f" else value)
        return 0

    def set(self, value) -> None:
        with self.owner.lock:
            changed = value != self.value
            self.value = value
            self.owner.writes.append((self.path, value))
        if changed:
            self.PropertiesChanged({"Value": vedbus.wrap(value, 1), "Text": str(value)})

    @dbus.service.method(IFACE, out_signature="v")
    def GetDefault(self):
        return vedbus.wrap(self.default)

    @dbus.service.method(IFACE, out_signature="v")
    def GetMin(self):
        return vedbus.wrap(self.lo if (self.lo, self.hi) != (0, 0) or self.vtype == "s" else 0)

    @dbus.service.method(IFACE, out_signature="v")
    def GetMax(self):
        return vedbus.wrap(self.hi if (self.lo, self.hi) != (0, 0) or self.vtype == "s" else INT_MAX)

    @dbus.service.signal(IFACE, signature="a{sv}")
    def PropertiesChanged(self, changes):
        pass


class _SettingsRoot(dbus.service.Object):
    def __init__(self, owner: "LocalSettings"):
        self.owner = owner
        super().__init__(owner.bus, "/")

    @dbus.service.method(IFACE, in_signature="ssvsvv", out_signature="i")
    def AddSetting(self, group, name, default, vtype, lo, hi):
        return self.owner.add(f"{group}/{name}" if group else str(name), vedbus.unwrap(default), str(vtype),
                              vedbus.unwrap(lo), vedbus.unwrap(hi))[0]

    @dbus.service.method(IFACE, in_signature="ssvsvv", out_signature="i")
    def AddSilentSetting(self, group, name, default, vtype, lo, hi):
        return self.AddSetting(group, name, default, vtype, lo, hi)

    @dbus.service.method(IFACE, in_signature="aa{sv}", out_signature="aa{sv}")
    def AddSettings(self, items):
        out = []
        for item in items:
            item = vedbus.unwrap(item)
            default = item.get("default")
            vtype = "s" if isinstance(default, str) else "f" if isinstance(default, float) else "i"
            error, value = self.owner.add(item.get("path", ""), default, vtype, item.get("min", 0),
                                          item.get("max", 0))
            out.append(vedbus.wrap({"path": item.get("path", ""), "error": error, "value": value}))
        return dbus.Array(out, signature="a{sv}")

    @dbus.service.method(IFACE, out_signature="v")
    def GetValue(self):
        return vedbus.wrap({p[1:]: s.value for p, s in self.owner.settings.items()})

    @dbus.service.method(IFACE, out_signature="a{sa{sv}}")
    def GetItems(self):
        return dbus.Dictionary({p: {"Value": vedbus.wrap(s.value, 1), "Text": str(s.value)}
                                for p, s in self.owner.settings.items()}, signature="sa{sv}")


class LocalSettings(_GlibService):
    def __init__(self, initial: Optional[dict] = None):
        super().__init__()
        self.settings: dict[str, _Setting] = {}
        self.initial = dict(initial or {})      # path -> value already stored (as after a restore)
        self.writes: list[tuple[str, Any]] = []

    def _open(self) -> None:
        self._root = _SettingsRoot(self)
        self.bus.request_name(SETTINGS_NAME, dbus.bus.NAME_FLAG_DO_NOT_QUEUE)

    def add(self, path: str, default, vtype: str, lo, hi) -> tuple[int, Any]:
        if not path.startswith("/Settings/"):
            return -9, None
        if vtype not in ("i", "f", "s"):
            return -3, None
        if any(part.startswith("_") or not part for part in path[1:].split("/")):
            return -2, None
        lo, hi = (lo or 0), (hi or 0)
        existing = self.settings.get(path)
        if existing is not None:
            return (0 if existing.vtype == vtype else -5), existing.value
        if vtype != "s" and (lo, hi) != (0, 0) and not lo <= default <= hi:
            return -7, None
        value = self.initial.get(path, default)
        if path.endswith("/ClassAndVrmInstance") and isinstance(value, str) and ":" in value:
            value = self._free_instance(value)
        self.settings[path] = _Setting(self, path, value, default, vtype, lo, hi)
        return 0, value

    def _free_instance(self, wanted: str) -> str:
        cls, _, n = wanted.partition(":")
        taken = {s.value for p, s in self.settings.items() if p.endswith("/ClassAndVrmInstance")}
        number = int(n) if n.isdigit() else 0
        while f"{cls}:{number}" in taken:
            number += 1
        return f"{cls}:{number}"

    def value(self, path: str) -> Any:
        with self.lock:
            setting = self.settings.get(path)
            return None if setting is None else setting.value

    def user_sets(self, path: str, value) -> None:
        """What the GUI does: SetValue on the setting (from the GLib thread, so the signal goes out)."""
        self.call(self.settings[path].set, value)


# ---------------------------------------------------------------- venus-platform

class _Inject(dbus.service.Object):
    def __init__(self, owner: "Platform"):
        self.owner = owner
        super().__init__(owner.bus, INJECT_PATH)

    @dbus.service.method(IFACE, out_signature="v")
    def GetValue(self):
        return vedbus.wrap("")

    @dbus.service.method(IFACE, in_signature="v", out_signature="i")
    def SetValue(self, raw):
        value = vedbus.unwrap(raw)
        parts = value.split("\t") if isinstance(value, str) else []
        if len(parts) != 3 or parts[0] not in ("0", "1", "2") or not parts[2]:
            return -1
        with self.owner.lock:
            self.owner.injected.append((int(parts[0]), parts[1], parts[2]))
        return 0


class Platform(_GlibService):
    def __init__(self, with_inject: bool = True):
        super().__init__()
        self.with_inject = with_inject       # False: a venus-platform older than v3.60
        self.injected: list[tuple[int, str, str]] = []

    def _open(self) -> None:
        if self.with_inject:
            self._inject = _Inject(self)
        self.bus.request_name(PLATFORM_NAME, dbus.bus.NAME_FLAG_DO_NOT_QUEUE)

    def notifications(self) -> list[tuple[int, str, str]]:
        with self.lock:
            return list(self.injected)
