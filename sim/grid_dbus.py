"""A grid meter on D-Bus as Victron's drivers publish one (`com.victronenergy.grid.<id>`, docs/venus-dbus.md §10),
fed by the plant's grid power. A development tool for the demo (`python -m sim --grid dbus`) and the tests.

    meter = GridMeterDbus.from_plant(plant).start()     # own GLib main loop thread
    meter.set_fault("role")                             # the user gave it the acload role in the GUI
    meter.stop()

Behaviour taken from the drivers: changes go out only as ItemsChanged on `/` (no PropertiesChanged; option
`items_only=False` sends both, like a community driver), batched once per `interval_s`; a value that did not
change sends nothing; power may be sent as int (`int_values`); /RefreshTime in ms; /Ac/Power = sum of the
phases, + = import; the phase voltages jitter a little, so a live meter signals every interval.

Faults (`set_fault(kind)`, None = back to normal):
  silent        the service stays, /Connected stays 1, no signal any more (a stalled driver)
  disconnected  /Connected 0 and the power paths invalid (the driver lost its meter)
  invalid       the power paths invalid, /Connected 1
  role          the service leaves and comes back as com.victronenergy.acload.<id> (a role change in the GUI)
  absent        the service leaves the bus
"""
from __future__ import annotations

import logging
import random
from typing import Callable, Optional

from sim.dbus_thread import DbusSimThread

log = logging.getLogger("sim.grid_dbus")

FAULT_KINDS = ("silent", "disconnected", "invalid", "role", "absent")
POWER_PATHS = ("/Ac/Power", "/Ac/L1/Power", "/Ac/L2/Power", "/Ac/L3/Power")


class GridMeterDbus(DbusSimThread):
    """`source()` -> {"phases_w": [L1, L2, L3], "import_kwh": x, "export_kwh": y} (read in the loop thread)."""
    thread_name = "grid-dbus"

    def __init__(self, source: Callable[[], dict], ident: str = "sim_gridmeter", device_instance: int = 30,
                 refresh_time_ms: int = 600, interval_s: float = 1.0, int_values: bool = False,
                 items_only: bool = True, product_name: str = "Simulated grid meter", seed: int = 1):
        super().__init__(interval_s)
        self.source = source
        self.ident = ident
        self.device_instance = device_instance
        self.refresh_time_ms = refresh_time_ms
        self.int_values = int_values
        self.items_only = items_only
        self.product_name = product_name
        self.fault: Optional[str] = None
        self.rng = random.Random(seed)
        self._svc = None

    @classmethod
    def from_plant(cls, plant, **kwargs) -> "GridMeterDbus":
        def source():
            with plant.lock:
                return {"phases_w": list(plant.phase_w), "import_kwh": plant.grid_import_wh / 1000.0,
                        "export_kwh": plant.grid_export_wh / 1000.0}
        return cls(source, **kwargs)

    @property
    def name(self) -> str:
        role = "acload" if self.fault == "role" else "grid"
        return f"com.victronenergy.{role}.{self.ident}"

    @property
    def url(self) -> str:          # shown by `python -m sim` in its ports line
        return f"dbus:{self.name}"

    @property
    def port(self) -> None:
        return None

    def set_fault(self, kind: Optional[str], serial: Optional[str] = None) -> None:
        if kind is not None and kind not in FAULT_KINDS:
            raise ValueError(f"unknown grid meter fault {kind!r} (known: {', '.join(FAULT_KINDS)})")
        self.call(lambda: self._apply_fault(kind))

    # ----- inside the GLib thread -----
    def _apply_fault(self, kind: Optional[str]) -> None:
        was_name = self.name
        self.fault = kind
        wanted = kind != "absent"
        if self._svc is not None and (not wanted or self.name != was_name):
            self._close()
        if wanted and self._svc is None:
            self._open()
        self._update()

    def _values(self) -> dict:
        src = self.source()
        phases = [float(p) for p in src["phases_w"]]
        total = sum(phases)
        rnd = (lambda x: int(round(x))) if self.int_values else (lambda x: round(x, 1))
        volts = [round(230.0 + self.rng.uniform(-1.5, 1.5), 1) for _ in phases]
        values = {"/Ac/Power": rnd(total), "/Ac/Energy/Forward": round(src.get("import_kwh", 0.0), 3),
                  "/Ac/Energy/Reverse": round(src.get("export_kwh", 0.0), 3), "/Connected": 1}
        for n, (p, v) in enumerate(zip(phases, volts), start=1):
            values.update({f"/Ac/L{n}/Power": rnd(p), f"/Ac/L{n}/Voltage": v,
                           f"/Ac/L{n}/Current": round(p / v, 2)})
        if self.fault in ("disconnected", "invalid"):
            values.update({path: None for path in POWER_PATHS})
            values["/Connected"] = 0 if self.fault == "disconnected" else 1
        return values

    def _open(self) -> None:
        if self.fault == "absent":
            return
        from common.vedbus import VeDbusService
        svc = VeDbusService(self.name, properties_changed=not self.items_only)
        svc.add_mandatory_paths("sim.grid_dbus", "1.0", "Simulated RS485", self.device_instance, 0xA1B1,
                                self.product_name, "1.0", "sim")
        svc.add_path("/RefreshTime", self.refresh_time_ms)
        svc.add_path("/Role", "acload" if self.fault == "role" else "grid", writeable=True)
        svc.add_path("/AllowedRoles", ["grid", "pvinverter", "genset", "acload"])
        svc.add_path("/NrOfPhases", 3)
        svc.add_path("/Serial", self.ident)
        for path, value in self._values().items():
            if path in svc:
                svc[path] = value
            else:
                svc.add_path(path, value)
        svc.register()
        self._svc = svc
        log.info("grid meter %s registered (DeviceInstance %d)", self.name, self.device_instance)

    def _close(self) -> None:
        if self._svc is not None:
            name = self._svc.name
            self._svc.close()
            self._svc = None
            log.info("grid meter %s left the bus", name)

    def _update(self) -> None:
        if self._svc is None or self.fault == "silent":
            return
        with self._svc:              # one ItemsChanged per interval, unchanged values send nothing
            for path, value in self._values().items():
                self._svc[path] = value

    def _tick(self) -> bool:
        try:
            self._update()
        except Exception:
            log.exception("grid meter update failed")
        return True
