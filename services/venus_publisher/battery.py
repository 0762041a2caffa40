"""Battery monitoring on D-Bus: find the battery, follow it by signals, publish `venus.battery`.

Choice (`choose_battery`, pure):
1. `com.victronenergy.system` `/ActiveBatteryService` when the system service exists and names a service;
2. otherwise the single `com.victronenergy.battery.*`;
3. several batteries: `[venus] battery_service` when it is one of them, else none, with the ambiguity in `detail`.

Following: NameOwnerChanged under `com.victronenergy` tells appear / disappear / replace; the chosen service is
read once with GetItems and then followed by its PropertiesChanged and ItemsChanged signals (no polling);
`/ActiveBatteryService` likewise. `age_s` in venus.battery is the time since the last value update seen on D-Bus
(signal or GetItems) of the chosen battery.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Optional

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


def choose_battery(system_present: bool, active: Any, batteries: list[str],
                   configured: str = "") -> tuple[Optional[str], Optional[str]]:
    """(service name or None, detail or None)."""
    if system_present and isinstance(active, str) and active.startswith("com.victronenergy.") and "/" not in active:
        return active, None
    batteries = sorted(batteries)
    if len(batteries) == 1:
        return batteries[0], None
    if not batteries:
        return None, "no battery service on D-Bus"
    if configured and configured in batteries:
        return configured, None
    listed = ", ".join(batteries)
    if configured:
        return None, f"[venus] battery_service = {configured} is not on D-Bus; batteries: {listed}"
    return None, f"{len(batteries)} batteries ({listed}) and no system service: set [venus] battery_service"


class BatteryMonitor:
    """Imperative shell around choose_battery on one (client) bus connection. Call `start()` in the GLib loop.

    on_update() is called whenever the published state may have changed."""

    def __init__(self, bus, configured: str, on_update: Callable[[], None], monotonic: Callable[[], float]):
        self.bus = bus
        self.configured = configured
        self._on_update = on_update
        self._mono = monotonic
        self.system_present = False
        self.active: Any = None
        self.batteries: set[str] = set()
        self.chosen: Optional[str] = None
        self.detail: Optional[str] = None
        self.values: dict[str, Any] = {}
        self.ready = False
        self.last_update_t: Optional[float] = None
        self._remote: Optional[RemoteService] = None
        self._active_item: Optional[RemoteItem] = None
        self._watch = None

    def start(self) -> None:
        self._watch = watch_name_owners(self.bus, self._on_owner, namespace="com.victronenergy")
        for name in list_names(self.bus):
            if name == SYSTEM:
                self._system_appeared()
            elif name.startswith(BATTERY_PREFIX):
                self.batteries.add(name)
        self._rechoose(force=False)

    def close(self) -> None:
        if self._watch is not None:
            self._watch.remove()
            self._watch = None
        if self._remote is not None:
            self._remote.close()
            self._remote = None
        if self._active_item is not None:
            self._active_item.close()
            self._active_item = None

    # ------------------------------------------------------------ events
    def _on_owner(self, name: str, old: str, new: str) -> None:
        replaced = bool(old) and bool(new)
        if name == SYSTEM:
            if new and not old:
                self._system_appeared()
            elif old and not new:
                self.system_present = False
                self.active = None
                if self._active_item is not None:
                    self._active_item.close()
                    self._active_item = None
                log.info("battery: %s disappeared", SYSTEM)
            elif replaced:
                self._system_appeared()
        elif name.startswith(BATTERY_PREFIX):
            if new:
                self.batteries.add(name)
            else:
                self.batteries.discard(name)
            log.info("battery: %s %s", name, "replaced" if replaced else ("appeared" if new else "disappeared"))
        if name == self.chosen:        # appeared again, replaced or gone: start over with a fresh GetItems
            self._follow(name if new else None, reason="owner changed")
        self._rechoose(force=False)

    def _system_appeared(self) -> None:
        self.system_present = True
        if self._active_item is not None:
            self._active_item.close()
        self._active_item = RemoteItem(self.bus, SYSTEM, "/ActiveBatteryService", self._on_active)

    def _on_active(self, value: Any) -> None:
        if value != self.active:
            log.info("battery: %s /ActiveBatteryService = %r", SYSTEM, value)
        self.active = value
        self._rechoose(force=False)

    def _rechoose(self, force: bool) -> None:
        chosen, detail = choose_battery(self.system_present, self.active, list(self.batteries), self.configured)
        if detail != self.detail and detail:
            log.warning("battery: %s", detail)
        self.detail = detail
        if chosen != self.chosen or force:
            log.info("battery: following %s (was %s)", chosen, self.chosen)
            self.chosen = chosen
            self._follow(chosen, reason="chosen")
        self._on_update()

    def _follow(self, name: Optional[str], reason: str) -> None:
        if self._remote is not None:
            self._remote.close()
            self._remote = None
        self.values = {}
        self.ready = False
        self.last_update_t = None
        if name is not None:
            self._remote = RemoteService(self.bus, name, on_change=self._on_value, on_ready=self._on_ready,
                                         paths=set(FIELDS))
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
        self.last_update_t = self._mono()
        if changed:
            self._on_update()

    # ------------------------------------------------------------ state
    @property
    def present(self) -> bool:
        return self.chosen is not None and self.ready

    def body(self, now: float) -> dict:
        present = self.present
        body = {"present": present, "service": self.chosen}
        for path, key in FIELDS.items():
            body[key] = num(self.values.get(path)) if present else None
        body["age_s"] = (round(max(0.0, now - self.last_update_t), 3)
                         if present and self.last_update_t is not None else None)
        detail = self.detail
        if self.chosen is not None and not present:
            detail = f"{self.chosen} not readable yet"
        if detail:
            body["detail"] = detail
        return body
