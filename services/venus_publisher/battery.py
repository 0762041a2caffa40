"""Battery monitoring on D-Bus: find the battery, follow it by signals, publish `venus.battery`.

Choice (`choose_battery`, pure):
1. the battery `com.victronenergy.system` has selected, when the system service exists: its
   `/Dc/Battery/BatteryService` (a D-Bus name, e.g. com.victronenergy.battery.ttyO1), else its
   `/ActiveBatteryService` ("<class>/<DeviceInstance>", e.g. com.victronenergy.battery/512, resolved through the
   /DeviceInstance of the battery services; a plain D-Bus name is taken as it is);
2. otherwise the single `com.victronenergy.battery.*`;
3. several batteries: `[venus] battery_service` when it is one of them, else none, with the ambiguity in `detail`.

Following: NameOwnerChanged under `com.victronenergy` tells appear / disappear / replace; the chosen service is
read once with GetItems and then followed by its PropertiesChanged and ItemsChanged signals (no polling);
`/ActiveBatteryService` likewise. `age_s` in venus.battery is the time since the last value update seen on D-Bus
(signal or GetItems) of the chosen battery's values: venus_publisher repeats the message, so a driver that stopped
updating shows as a growing `age_s`, and the controller treats old values as stale. A battery whose `/Connected` is
0 (the driver lost its BMS and keeps its last values) is published as not present, with the reason in `detail`;
an invalid or missing `/Connected` counts as connected (some drivers do not publish it).
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Optional

from common.messages import MAX_ABS_NUM
from common.vedbus import RemoteItem, RemoteService, list_names, watch_name_owners

from .model import num

log = logging.getLogger(__name__)

SYSTEM = "com.victronenergy.system"
BATTERY_PREFIX = "com.victronenergy.battery."
FIELDS = {            # D-Bus path -> venus.battery field
    "/Soc": "soc_pct",
    "/Dc/0/Voltage": "voltage_v",
    "/Dc/0/Current": "current_a",
    "/Info/MaxChargeCurrent": "ccl_a",
    "/Info/MaxDischargeCurrent": "dcl_a",
    "/Dc/0/Temperature": "temperature_c",
}
CONNECTED = "/Connected"      # mandatory path of every Venus service; 0: the driver lost its device


def _value(raw: Any) -> Optional[float]:
    """A battery value as the bus carries it: finite and within ±MAX_ABS_NUM, else None (a body with 1e300 would
    not be sendable at all); what is plausible is the controller's judgement."""
    value = num(raw)
    return value if value is not None and -MAX_ABS_NUM <= value <= MAX_ABS_NUM else None


def _bus_name(value: Any) -> Optional[str]:
    if isinstance(value, str) and value.startswith("com.victronenergy.") and "/" not in value:
        return value
    return None


def resolve_active(active: Any, instances: dict[str, Optional[int]]) -> Optional[str]:
    """systemcalc's /ActiveBatteryService ("com.victronenergy.battery/512") -> a service name we know, or None."""
    name = _bus_name(active)
    if name is not None:
        return name
    if not isinstance(active, str) or active.count("/") != 1:
        return None
    prefix, _, instance = active.partition("/")
    try:
        wanted = int(instance)
    except ValueError:
        return None
    found = [n for n, i in instances.items() if i == wanted and n.startswith(prefix + ".")]
    return found[0] if len(found) == 1 else None


def choose_battery(system_present: bool, active: Any, batteries: dict[str, Optional[int]] | list[str],
                   configured: str = "", system_service: Any = None) -> tuple[Optional[str], Optional[str]]:
    """(service name or None, detail or None). `batteries`: battery service names (-> /DeviceInstance if known)."""
    instances = dict(batteries) if isinstance(batteries, dict) else {b: None for b in batteries}
    if system_present:
        chosen = _bus_name(system_service) or resolve_active(active, instances)
        if chosen is not None:
            return chosen, None
    names = sorted(instances)
    if len(names) == 1:
        return names[0], None
    if not names:
        return None, "no battery service on D-Bus"
    if configured and configured in names:
        return configured, None
    listed = ", ".join(names)
    if configured:
        return None, f"[venus] battery_service = {configured} is not on D-Bus; batteries: {listed}"
    return None, f"{len(names)} batteries ({listed}) and no system service: set [venus] battery_service"


class BatteryMonitor:
    """Imperative shell around choose_battery on one (client) bus connection. Call `start()` in the GLib loop.

    on_update() is called whenever the published state may have changed."""

    def __init__(self, bus, configured: str, on_update: Callable[[], None], monotonic: Callable[[], float]):
        self.bus = bus
        self.configured = configured
        self._on_update = on_update
        self._mono = monotonic
        self.system_present = False
        self.active: Any = None             # system /ActiveBatteryService
        self.system_service: Any = None     # system /Dc/Battery/BatteryService
        self.batteries: dict[str, Optional[int]] = {}      # battery service -> its /DeviceInstance
        self.chosen: Optional[str] = None
        self.detail: Optional[str] = None
        self.values: dict[str, Any] = {}
        self.ready = False
        self.last_update_t: Optional[float] = None
        self._remote: Optional[RemoteService] = None
        self._system_items: list[RemoteItem] = []
        self._instance_items: dict[str, RemoteItem] = {}
        self._watch = None

    def start(self) -> None:
        self._watch = watch_name_owners(self.bus, self._on_owner, namespace="com.victronenergy")
        for name in list_names(self.bus):
            if name == SYSTEM:
                self._system_appeared()
            elif name.startswith(BATTERY_PREFIX):
                self._battery_appeared(name)
        self._rechoose()

    def close(self) -> None:
        if self._watch is not None:
            self._watch.remove()
            self._watch = None
        if self._remote is not None:
            self._remote.close()
            self._remote = None
        self._system_gone()
        for item in self._instance_items.values():
            item.close()
        self._instance_items.clear()

    # ------------------------------------------------------------ events
    def _on_owner(self, name: str, old: str, new: str) -> None:
        replaced = bool(old) and bool(new)
        if name == SYSTEM:
            self._system_gone()
            if new:
                self._system_appeared()
            log.info("battery: %s %s", name, "replaced" if replaced else ("appeared" if new else "disappeared"))
        elif name.startswith(BATTERY_PREFIX):
            item = self._instance_items.pop(name, None)
            if item is not None:
                item.close()
            self.batteries.pop(name, None)
            if new:
                self._battery_appeared(name)
            log.info("battery: %s %s", name, "replaced" if replaced else ("appeared" if new else "disappeared"))
        elif name != self.chosen:      # the system may have chosen e.g. a vebus service
            return
        if name == self.chosen:        # appeared again, replaced or gone: start over with a fresh GetItems
            self._follow(name if new else None)
        self._rechoose()

    def _battery_appeared(self, name: str) -> None:
        self.batteries[name] = None

        def on_instance(value, name=name):
            if name in self.batteries:
                self.batteries[name] = value if isinstance(value, int) and not isinstance(value, bool) else None
                self._rechoose()

        self._instance_items[name] = RemoteItem(self.bus, name, "/DeviceInstance", on_instance)

    def _system_appeared(self) -> None:
        self.system_present = True

        def setter(attr):
            def on_value(value):
                if value != getattr(self, attr):
                    log.info("battery: %s %s = %r", SYSTEM, attr, value)
                setattr(self, attr, value)
                self._rechoose()
            return on_value

        self._system_items = [RemoteItem(self.bus, SYSTEM, "/ActiveBatteryService", setter("active")),
                              RemoteItem(self.bus, SYSTEM, "/Dc/Battery/BatteryService", setter("system_service"))]

    def _system_gone(self) -> None:
        self.system_present = False
        self.active = self.system_service = None
        for item in self._system_items:
            item.close()
        self._system_items = []

    def _rechoose(self) -> None:
        chosen, detail = choose_battery(self.system_present, self.active, self.batteries, self.configured,
                                        self.system_service)
        if detail != self.detail and detail:
            log.warning("battery: %s", detail)
        self.detail = detail
        if chosen != self.chosen:
            log.info("battery: following %s (was %s)", chosen, self.chosen)
            self.chosen = chosen
            self._follow(chosen)
        self._on_update()

    def _follow(self, name: Optional[str]) -> None:
        if self._remote is not None:
            self._remote.close()
            self._remote = None
        self.values = {}
        self.ready = False
        self.last_update_t = None
        if name is not None:
            self._remote = RemoteService(self.bus, name, on_change=self._on_value, on_ready=self._on_ready,
                                         paths=set(FIELDS) | {CONNECTED})
        self._on_update()

    def _on_ready(self, ok: bool, detail: str) -> None:
        self.ready = ok
        if ok:
            self.last_update_t = self._mono()
        else:
            log.warning("battery: GetItems on %s failed: %s", self.chosen, detail)
        self._on_update()

    def _on_value(self, path: str, value: Any, changed: bool) -> None:
        self.values[path] = value
        if path in FIELDS:
            self.last_update_t = self._mono()
        if path == CONNECTED and changed:
            log.info("battery: %s %s = %r", self.chosen, CONNECTED, value)
        if changed:
            self._on_update()

    # ------------------------------------------------------------ state
    @property
    def present(self) -> bool:
        return self.chosen is not None and self.ready

    @property
    def connected(self) -> bool:
        value = self.values.get(CONNECTED)
        return value is None or value == 1

    def body(self, now: float) -> dict:
        present = self.present and self.connected
        body = {"present": present, "service": self.chosen}
        for path, key in FIELDS.items():
            body[key] = _value(self.values.get(path)) if present else None
        body["age_s"] = (round(max(0.0, now - self.last_update_t), 3)
                         if present and self.last_update_t is not None else None)
        detail = self.detail
        if self.present and not present:
            detail = f"{self.chosen}: {CONNECTED} = {self.values.get(CONNECTED)!r} (the battery is not connected)"
        elif self.chosen is not None and not present:
            detail = f"{self.chosen} not readable yet"
        if detail:
            body["detail"] = detail
        return body
