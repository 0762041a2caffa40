"""The plant's battery as a Venus OS `com.victronenergy.battery` service (docs/venus-dbus.md §3), on the system bus
(DBUS_SYSTEM_BUS_ADDRESS), built on `common.vedbus`. A development tool for the demo and the tests.

    battery = BatteryDbus(plant).start()      # own GLib main loop thread; updates once per second
    ...
    battery.stop()

Paths: /Soc, /Dc/0/Voltage, /Dc/0/Current (+ = charging), /Dc/0/Power, /Dc/0/Temperature, /Info/MaxChargeCurrent
(CCL), /Info/MaxDischargeCurrent (DCL), /Info/MaxChargeVoltage, /Info/BatteryLowVoltage, /Capacity, /TimeToGo,
/CustomName, plus the mandatory paths (/DeviceInstance 512 by default). When the plant's battery is not `present`
the service leaves the bus; it comes back when present again.
"""
from __future__ import annotations

import logging
from typing import Optional

from sim.dbus_thread import DbusSimThread
from sim.plant import Plant

log = logging.getLogger("sim.battery")


class BatteryDbus(DbusSimThread):
    thread_name = "battery-dbus"

    def __init__(self, plant: Plant, name: str = "com.victronenergy.battery.sim", device_instance: int = 512,
                 interval_s: float = 1.0):
        super().__init__(interval_s)
        self.plant = plant
        self.name = name
        self.device_instance = device_instance
        self.fault: Optional[str] = None
        self._svc = None

    def set_fault(self, kind: Optional[str], serial: Optional[str] = None) -> None:
        """`absent`: the service leaves the bus (like plant.set_battery(present=False)); None: back."""
        if kind not in (None, "absent"):
            raise ValueError(f"unknown battery fault {kind!r} (known: absent)")
        self.plant.set_battery(present=kind is None)

    # ----- inside the GLib thread -----
    def _open(self) -> None:
        if self.plant.battery.present:
            self._register()

    def _register(self) -> None:
        from common.vedbus import VeDbusService
        svc = VeDbusService(self.name)
        svc.add_mandatory_paths("sim.battery_dbus", "1.0", "Simulated BMS", self.device_instance, 0xB00A,
                                "Simulated LFP battery", "1.0", "sim")
        units = {"/Soc": "%", "/Dc/0/Voltage": "V", "/Dc/0/Current": "A", "/Dc/0/Power": "W",
                 "/Dc/0/Temperature": "°C", "/Info/MaxChargeCurrent": "A", "/Info/MaxDischargeCurrent": "A",
                 "/Info/MaxChargeVoltage": "V", "/Info/BatteryLowVoltage": "V", "/Capacity": "Ah", "/TimeToGo": "s"}
        for path, unit in units.items():
            svc.add_path(path, None, gettext=lambda p, v, u=unit: "---" if v is None else f"{v:.1f} {u}")
        svc.add_path("/CustomName", "Simulated battery", writeable=True)
        for path, value in self._values().items():
            svc[path] = value
        svc.register()
        self._svc = svc
        log.info("battery service %s registered (DeviceInstance %d)", self.name, self.device_instance)

    def _close(self) -> None:
        if self._svc is not None:
            self._svc.close()
            self._svc = None
            log.info("battery service %s left the bus", self.name)

    def _values(self) -> dict:
        with self.plant.lock:
            b = self.plant.battery
            current = b.current_a
            time_to_go = (b.soc_pct / 100.0 * b.capacity_ah / -current * 3600.0) if current < -0.1 else None
            return {"/Soc": round(b.soc_pct, 1), "/Dc/0/Voltage": round(b.voltage_v, 2),
                    "/Dc/0/Current": round(current, 2), "/Dc/0/Power": round(b.power_w, 1),
                    "/Dc/0/Temperature": round(b.temperature_c, 1), "/Info/MaxChargeCurrent": round(b.ccl_a, 1),
                    "/Info/MaxDischargeCurrent": round(b.dcl_a, 1),
                    "/Info/MaxChargeVoltage": b.max_charge_voltage_v, "/Info/BatteryLowVoltage": 46.4,
                    "/Capacity": b.capacity_ah, "/TimeToGo": None if time_to_go is None else round(time_to_go)}

    def _tick(self) -> bool:
        try:
            present = self.plant.battery.present
            if present and self._svc is None:
                self._register()
            elif not present and self._svc is not None:
                self._close()
            if self._svc is not None:
                with self._svc:
                    for path, value in self._values().items():
                        if self._svc[path] != value:
                            self._svc[path] = value
        except Exception:
            log.exception("battery service update failed")
        return True
