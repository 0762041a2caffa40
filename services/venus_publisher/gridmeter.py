"""The GX's own grid meter (`[grid_meter] source = dbus`): find it, follow it by signals, publish `meter.grid`.

Which meter (`choose_meter`, pure): `[grid_meter] service` when set (only that one, even if others exist);
otherwise the `com.victronenergy.grid.*` service with the lowest /DeviceInstance, as systemcalc picks its grid
meter. Only the `grid` class is read: our own acload/dcload/dcsystem services and meters in another role
(acload, pvinverter, ...) live under other classes, and systemcalc's computed /Ac/Grid/* is never used (late,
and made up from the Multi when no meter exists).

Following (`GridMeterFollower`, the D-Bus shell): NameOwnerChanged under com.victronenergy tells arrivals and
departures (a role change in the GUI re-registers the meter under another class: it is simply gone); every grid
service is asked once for its /DeviceInstance; the chosen one is read once with GetItems and then followed by its
ItemsChanged on `/` (what Victron's drivers send) and PropertiesChanged (what many community drivers send).

The reading (`GridMeterTracker`, pure, fed with events and a time): /Ac/Power when valid, else the sum of the
valid /Ac/L1..3/Power; int or float; an empty array (invalid), a non-finite number or anything else is invalid.
Stale, no `meter.grid` published: no signal for max(5 s, 3 x /RefreshTime), /Connected 0, no valid power,
another /Role than grid, or the service gone. A valid reading goes out at once when the power changed, and again
at least every REPUBLISH_S while the meter signals (so the controller sees fresh samples of a steady load);
`meter.status` (role grid) goes out on every change of its verdict and at least every STATUS_EVERY_S.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from common import messages as m

log = logging.getLogger(__name__)

GRID_PREFIX = "com.victronenergy.grid."
MIN_STALE_S = 5.0            # stale after max(this, 3 x /RefreshTime) without any signal
REFRESH_FACTOR = 3.0
REPUBLISH_S = 1.0            # an unchanged valid reading is published again this often while signals come
STATUS_EVERY_S = 5.0         # meter.status at least this often (as the Shelly path)
CHECK_MS = 200               # the shell re-evaluates silence this often
GETITEMS_RETRY_S = 2.0
PHASES = (1, 2, 3)

Outputs = list[tuple[str, dict]]


def is_grid_meter(name: str) -> bool:
    return name.startswith(GRID_PREFIX) and len(name) > len(GRID_PREFIX)


def power_w(value: Any) -> Optional[float]:
    """A D-Bus power value -> W, or None when invalid (empty array, bool, text, NaN/inf)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _instance(value: Any) -> Optional[int]:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def choose_meter(instances: dict[str, Optional[int]], configured: str = "") -> tuple[Optional[str], Optional[str]]:
    """(service or None, detail or None). `instances`: grid meter services on D-Bus -> /DeviceInstance (None:
    not known yet). A configured service is taken only as itself; else the lowest instance (then the name)."""
    if configured:
        if configured in instances:
            return configured, None
        return None, f"[grid_meter] service = {configured} is not on D-Bus"
    known = sorted((i, n) for n, i in instances.items() if i is not None and is_grid_meter(n))
    if known:
        return known[0][1], None
    if instances:
        return None, f"/DeviceInstance of {', '.join(sorted(instances))} not known yet"
    return None, "no com.victronenergy.grid.* service on D-Bus"


def stale_after_s(refresh_time_ms: Any) -> float:
    refresh = power_w(refresh_time_ms)
    if refresh is None or refresh <= 0:
        return MIN_STALE_S
    return max(MIN_STALE_S, REFRESH_FACTOR * refresh / 1000.0)


def reading(values: dict[str, Any]) -> tuple[Optional[float], list[dict], Optional[tuple[str, str]]]:
    """(total W, phases, None) for a valid reading, else (None, [], (error_kind, detail))."""
    connected = values.get("/Connected")
    if connected is not None and not isinstance(connected, bool) and connected == 0:
        return None, [], ("connection", "/Connected = 0")
    role = values.get("/Role")
    if isinstance(role, str) and role != "grid":
        return None, [], ("unsupported", f"/Role = {role}")
    phases = []
    for n in PHASES:
        p = power_w(values.get(f"/Ac/L{n}/Power"))
        if p is None:
            continue
        phases.append({"power_w": p, "voltage_v": power_w(values.get(f"/Ac/L{n}/Voltage")),
                       "current_a": power_w(values.get(f"/Ac/L{n}/Current")),
                       "energy_import_kwh": power_w(values.get(f"/Ac/L{n}/Energy/Forward")),
                       "energy_export_kwh": power_w(values.get(f"/Ac/L{n}/Energy/Reverse"))})
    total = power_w(values.get("/Ac/Power"))
    if total is None and phases:
        total = sum(ph["power_w"] for ph in phases)
    if total is None:
        return None, [], ("invalid_reading", "no valid /Ac/Power or /Ac/L1..3/Power")
    return total, phases, None


@dataclass
class _Meter:
    name: str
    instance: Optional[int] = None
    values: dict = field(default_factory=dict)
    ready: bool = False                    # GetItems answered (chosen meter only)
    ready_t: Optional[float] = None
    last_signal_t: Optional[float] = None  # GetItems is no signal: it returns the driver's cache, fresh or not


class GridMeterTracker:
    """The pure core: fed with D-Bus events and their time, it answers which meter to follow and what to publish.

    Every event method returns the bus messages due now as [(topic, body)]."""

    def __init__(self, configured: str = ""):
        self.configured = configured
        self.meters: dict[str, _Meter] = {}
        self.chosen: Optional[str] = None
        self.detail: Optional[str] = choose_meter({}, configured)[1]
        self._last_key: Optional[tuple] = None       # (power, phase powers) last published
        self._last_pub_t: Optional[float] = None
        self._last_ok_t: Optional[float] = None      # sample_t_mono of the last published sample
        self._status_key: Optional[tuple] = None
        self._status_t: Optional[float] = None
        self.error_count = 0

    # ------------------------------------------------------------ events
    def appeared(self, name: str, now: float) -> Outputs:
        if is_grid_meter(name):
            self.meters[name] = _Meter(name)
        return self._rechoose(now)

    def gone(self, name: str, now: float) -> Outputs:
        meter = self.meters.pop(name, None)
        if meter is None:
            return []
        if name == self.chosen:
            log.warning("grid meter: %s left D-Bus", name)
        return self._rechoose(now)

    def instance(self, name: str, value: Any, now: float) -> Outputs:
        meter = self.meters.get(name)
        if meter is None:
            return []
        meter.instance = _instance(value)
        return self._rechoose(now)

    def items(self, name: str, changes: dict[str, Any], now: float, initial: bool = False) -> Outputs:
        """Values from GetItems (`initial`), ItemsChanged or PropertiesChanged of `name`."""
        meter = self.meters.get(name)
        if meter is None or name != self.chosen:
            return []
        if initial:          # signals that came before the answer are newer than it
            for path, value in changes.items():
                meter.values.setdefault(path, value)
            meter.ready, meter.ready_t = True, now
        else:
            meter.values.update(changes)
            meter.last_signal_t = now
        if not meter.ready:
            return []
        out = []
        if "/DeviceInstance" in changes and not self.configured:
            meter.instance = _instance(changes["/DeviceInstance"])
            out += self._rechoose(now)
            if name != self.chosen:
                return out
        if meter.last_signal_t is not None:
            out += self._sample(meter, now)
        return out + self._status(now)

    def items_failed(self, name: str, detail: str, now: float) -> Outputs:
        if name == self.chosen:
            self.detail = f"GetItems on {name} failed: {detail}"
        return self._status(now)

    def tick(self, now: float) -> Outputs:
        return self._status(now)

    # ------------------------------------------------------------ state
    def _rechoose(self, now: float) -> Outputs:
        chosen, detail = choose_meter({n: mt.instance for n, mt in self.meters.items()}, self.configured)
        self.detail = detail
        if chosen != self.chosen:
            log.info("grid meter: following %s (was %s)", chosen, self.chosen)
            self.chosen = chosen
            if chosen is not None:
                meter = self.meters[chosen]
                meter.values, meter.ready, meter.ready_t, meter.last_signal_t = {}, False, None, None
            self._last_key = self._last_pub_t = None
        return self._status(now)

    def stale_after_s(self) -> float:
        meter = self.meters.get(self.chosen) if self.chosen else None
        return stale_after_s(meter.values.get("/RefreshTime")) if meter else MIN_STALE_S

    def verdict(self, now: float) -> tuple[Optional[str], Optional[str]]:
        """(None, None) when the chosen meter reads fresh and valid, else (error_kind, detail)."""
        meter = self.meters.get(self.chosen) if self.chosen else None
        if meter is None:
            waiting = bool(self.meters) and not self.configured      # instances not known yet
            return ("starting" if waiting else "connection"), self.detail or "no grid meter"
        if not meter.ready:
            return "starting", self.detail or f"{meter.name}: waiting for GetItems"
        _total, _phases, error = reading(meter.values)
        if error is not None:
            return error[0], f"{meter.name}: {error[1]}"
        limit = self.stale_after_s()
        age = now - (meter.last_signal_t if meter.last_signal_t is not None else meter.ready_t)
        if age > limit:
            return "stale", f"{meter.name}: no signal for {age:.1f} s (limit {limit:g} s)"
        if meter.last_signal_t is None:
            return "starting", f"{meter.name}: waiting for the first signal"
        return None, None

    def device(self) -> Optional[str]:
        meter = self.meters.get(self.chosen) if self.chosen else None
        if meter is None:
            return None
        product = meter.values.get("/ProductName")
        return product if isinstance(product, str) and product else meter.name

    def _sample(self, meter: _Meter, now: float) -> Outputs:
        total, phases, error = reading(meter.values)
        if error is not None:
            return []
        key = (total, tuple(ph["power_w"] for ph in phases))
        if key == self._last_key and self._last_pub_t is not None and now - self._last_pub_t < REPUBLISH_S:
            return []
        self._last_key, self._last_pub_t, self._last_ok_t = key, now, now
        body = {"device": self.device(), "power_w": total, "sign": "positive_is_import", "phases": phases,
                "energy_import_kwh": power_w(meter.values.get("/Ac/Energy/Forward")),
                "energy_export_kwh": power_w(meter.values.get("/Ac/Energy/Reverse")),
                "sample_t_mono": now}
        return [(m.METER_GRID, body)]

    def status_body(self, now: float) -> dict:
        kind, detail = self.verdict(now)
        body = {"role": "grid", "ok": kind is None, "error_kind": kind, "error_count": self.error_count,
                "detail": detail}
        device = self.device()
        if device is not None:
            body["device"] = device
        if self._last_ok_t is not None:
            body["last_ok_t_mono"] = self._last_ok_t
        return body

    def _status(self, now: float) -> Outputs:
        kind, _detail = self.verdict(now)
        key = (self.chosen, kind)
        if key == self._status_key and self._status_t is not None and now - self._status_t < STATUS_EVERY_S:
            return []
        if kind != (self._status_key or (None, None))[1]:
            log.log(logging.INFO if kind is None else logging.WARNING, "grid meter: %s",
                    "reading ok" if kind is None else f"{kind}: {_detail}")
        self.error_count = 0 if kind is None else self.error_count + 1
        self._status_key, self._status_t = key, now
        return [(m.METER_STATUS, self.status_body(now))]


class GridMeterFollower:
    """The D-Bus shell around GridMeterTracker on one (client) bus connection, in the GLib main loop.

    `publish(topic, body)` sends each message the tracker produces. `start()` returns the GLib source id of the
    periodic silence check (the caller removes it with its other sources)."""

    def __init__(self, bus, configured: str, publish: Callable[[str, dict], None],
                 monotonic: Callable[[], float], check_ms: int = CHECK_MS):
        self.bus = bus
        self.tracker = GridMeterTracker(configured)
        self._publish = publish
        self._mono = monotonic
        self._check_ms = check_ms
        self._watch = None
        self._matches: list = []
        self._followed: Optional[str] = None
        self._failed_t: Optional[float] = None     # when GetItems of the followed meter failed
        self._token: Optional[object] = None

    def start(self) -> int:
        from .app import GLib          # glib.py, or PyGObject where ctypes is missing
        from common.vedbus import list_names, watch_name_owners
        self._watch = watch_name_owners(self.bus, self._on_owner, namespace="com.victronenergy")
        for name in list_names(self.bus):
            if is_grid_meter(name):
                self._appeared(name)
        self._emit(self.tracker.tick(self._mono()))
        return GLib.timeout_add(self._check_ms, self._on_check)

    def close(self) -> None:
        self._unfollow()
        if self._watch is not None:
            self._watch.remove()
            self._watch = None

    # ------------------------------------------------------------ plumbing
    def _emit(self, outputs: Outputs) -> None:
        for topic, body in outputs:
            try:
                self._publish(topic, body)
            except Exception:
                log.exception("grid meter: publishing %s failed", topic)
        if self.tracker.chosen != self._followed:
            self._follow(self.tracker.chosen)

    def _on_check(self) -> bool:
        try:
            now = self._mono()
            if self._failed_t is not None and now - self._failed_t >= GETITEMS_RETRY_S:
                self._follow(self._followed)          # GetItems failed: ask again
            self._emit(self.tracker.tick(now))
        except Exception:
            log.exception("grid meter: check failed")
        return True

    def _on_owner(self, name: str, old: str, new: str) -> None:
        if not is_grid_meter(name):
            return
        now = self._mono()
        if old:
            if name == self._followed:
                self._unfollow()      # a replaced owner: start over with a fresh GetItems
            self._emit(self.tracker.gone(name, now))
        if new:
            self._appeared(name)

    def _appeared(self, name: str) -> None:
        from common.vedbus import IFACE, unwrap
        self._emit(self.tracker.appeared(name, self._mono()))

        def got(raw, name=name):
            self._emit(self.tracker.instance(name, unwrap(raw), self._mono()))

        def failed(exc, name=name):
            log.info("grid meter: %s has no readable /DeviceInstance (%s)", name, exc)

        if not self.tracker.configured:
            self.bus.call_async(name, "/DeviceInstance", IFACE, "GetValue", "", (), got, failed, timeout=10.0)

    def _unfollow(self) -> None:
        for match in self._matches:
            match.remove()
        self._matches = []
        self._followed = self._failed_t = self._token = None

    def _follow(self, name: Optional[str]) -> None:
        from common.vedbus import IFACE, unwrap
        self._unfollow()
        if name is None:
            return
        self._followed = name
        token = self._token = object()      # callbacks of an earlier follow (same name too) are ignored

        def current() -> bool:
            return self._token is token

        def values(items) -> dict:
            return {str(p): unwrap(v["Value"]) for p, v in items.items() if "Value" in v}

        def on_items(items):
            if current():
                self._emit(self.tracker.items(name, values(items), self._mono()))

        def on_properties(changes, path=None):
            if current() and path is not None and "Value" in changes:
                self._emit(self.tracker.items(name, {str(path): unwrap(changes["Value"])}, self._mono()))

        def got_items(items):
            if current():
                self._emit(self.tracker.items(name, values(items), self._mono(), initial=True))

        def failed(exc):
            if current():
                detail = exc.get_dbus_name() if hasattr(exc, "get_dbus_name") else str(exc)
                log.warning("grid meter: GetItems on %s failed: %s (asking again in %g s)", name, detail,
                            GETITEMS_RETRY_S)
                self._failed_t = self._mono()
                self._emit(self.tracker.items_failed(name, str(detail), self._mono()))

        self._matches = [
            self.bus.add_signal_receiver(on_items, signal_name="ItemsChanged", dbus_interface=IFACE,
                                         bus_name=name, path="/"),
            self.bus.add_signal_receiver(on_properties, signal_name="PropertiesChanged", dbus_interface=IFACE,
                                         bus_name=name, path_keyword="path"),
        ]
        self.bus.call_async(name, "/", IFACE, "GetItems", "", (), got_items, failed, timeout=10.0)
