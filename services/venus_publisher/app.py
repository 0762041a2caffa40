"""The imperative shell of venus_publisher: GLib main loop, ZeroMQ watch, D-Bus services, battery monitor.

Only this module (and common.vedbus) imports dbus; GLib's main loop is reached through glib.py (ctypes), not gi. It is
imported only by `python -m services.venus_publisher`.
"""
from __future__ import annotations

import json
import logging
import math
import os
import signal
from typing import Any, Callable, Optional

from common import messages as m
from common import vedbus
from common.bus import Publisher, Subscriber
from common.clock import SYSTEM_CLOCK
from common.safefile import UnusableFile, read_regular, write_atomic
from common.service import StepGuard, TooManyFailures
from common.settings import BY_PATH as SETTING_BY_PATH
from common.settings import SETTINGS_PREFIX, USER_SETTINGS, UserSetting

try:
    from . import glib as GLib    # not gi.repository.GLib: see glib.py (about 5 MiB less memory)
except (ImportError, OSError):    # a Python without ctypes, or no libglib-2.0.so.0 under that name: PyGObject
    from gi.repository import GLib
from .battery import BatteryMonitor
from .model import (ALARM_PATHS, CAP_BY_TEXT, SETTINGS, BatteryView, Inputs, Params, SettingRequests, acload_values,
                    alarm_levels, check_setting, dcload_values, dcsystem_values, num)
from .notify import (ALARM_DEVICE_NAME, ALL_OK_NAME, STARTUP_QUIET_STALE, Notifier, cause_texts,
                     standing_alarm)
from .venus_os import (WAIT_FOR_SETTINGS_S, Injector, LocalSettings, instance_setting, parse_instance,
                       unique_id)

log = logging.getLogger("venus_publisher")

PROCESS_NAME = "dbus-opendtu venus_publisher"
PROCESS_VERSION = "1.0.0"
CONNECTION = "TCP/IP (HTTP)"
# Only the topics the GX shows: ZeroMQ filters at the publisher, so ctrl.setpoint, ctrl.relay and dtu.ack (about
# 1.2 messages a second that Inputs.on_message ignores) are neither sent here nor decoded and checked.
TOPICS = (m.DTU_INVERTER, m.DTU_STATUS, m.DTU_ALARM, m.METER_GRID, m.METER_BALCONY, m.METER_STATUS, m.RELAY_STATE,
          m.CTRL_STATUS, m.CTRL_SETTINGS)
# The redraw after a message runs once the queue is drained, in the same pass of the main loop (no timer wait of
# its own: a wait of 40 ms for the rest of a burst cost a second wake-up per message, and the controller's
# ctrl.status no longer follows every meter sample). Messages queued together still make one redraw.
REFRESH_COALESCE_MS = 0
# No periodic tick: a one-shot timer wakes for the next thing due without a message (a value turning stale, the
# venus.battery heartbeat, a retry), at the latest after MAX_TICK_S. On a GX every wake-up of a Python process
# costs far more than the redraw it does.
MAX_TICK_S = 5.0                   # bounds anything the deadlines do not list (e.g. a lost ZeroMQ FD edge)
RETRY_S = 1.0                      # registrations refused and settings not yet confirmed: retried this often
STALE_AFTER_S = 0.001              # a value is stale once older than its limit: redraw just after
BATTERY_MAX_INTERVAL_S = 1.5       # venus.battery at least this often (contract: every 2 s)
NAMES_FILE = "venus_publisher_names.json"
MIGRATED_PATH = f"{SETTINGS_PREFIX}/StateFileMigrated"   # 1 once the state file's settings were copied over
NAMES_PREFIX = f"{SETTINGS_PREFIX}/CustomName"
MAX_NAME_LEN = 64
# Which services a message can change (a refresh redraws only those; the tick redraws all, for staleness).
# The acload carries the alarms, so everything reaches it.
DCLOADS, DCSYSTEM, ACLOAD = "dcloads", "dcsystem", "acload"
ALL_PARTS = frozenset((DCLOADS, DCSYSTEM, ACLOAD))
_PARTS_BY_TOPIC_PREFIX = (("dtu.", ALL_PARTS), (m.RELAY_STATE, frozenset((DCSYSTEM, ACLOAD))))
BATTERY_PARTS = frozenset((DCSYSTEM, ACLOAD))
BATTERY_STATE_FIELDS = ("present", "service", "detail")     # venus.battery fields the acload's alarms depend on


def parts_for(topic: str) -> frozenset:
    for prefix, parts in _PARTS_BY_TOPIC_PREFIX:
        if topic.startswith(prefix):
            return parts
    return frozenset((ACLOAD,))       # meter.*, ctrl.*


_UNITS = (("Voltage", "{:.2f}V"), ("Current", "{:.2f}A"), ("Power", "{:.0f}W"), ("Watt", "{:.0f}W"),
          ("Temperature", "{:.1f}°C"), ("Forward", "{:.2f}kWh"), ("Reverse", "{:.2f}kWh"), ("EnergyIn", "{:.2f}kWh"),
          ("Percent", "{:.1f}%"), ("Soc", "{:.0f}%"), ("MaxFeedIn", "{:.0f}W"), ("ZeroPoint", "{:.0f}W"),
          ("GridFiltered", "{:.0f}W"), ("Target", "{:.0f}W"), ("Budget", "{:.0f}W"), ("TotalLimit", "{:.0f}W"))


def gettext_for(path: str) -> Optional[Callable[[str, Any], str]]:
    last = path.rsplit("/", 1)[-1]
    if path == "/Control/CapBy":
        return lambda _p, v: CAP_BY_TEXT.get(v, str(v))
    if path.startswith("/Alarms/"):
        return None
    for suffix, fmt in _UNITS:
        if last.endswith(suffix):
            return lambda _p, v, fmt=fmt: fmt.format(v) if num(v) is not None else str(v)
    return None


def gui_info_values(cfg) -> dict[str, Any]:
    """Read-only acload paths for the GX page (gui/): where the gateway and the grid meter are, and the inverters'
    dcload instances ("134,135", filled at each refresh) so that the page can address them on D-Bus and MQTT."""
    grid = cfg.grid_meter
    return {"/Gateway/Host": cfg.opendtu.host,
            "/GridMeter/Host": grid.host if grid.source == "shelly" else f"GX grid meter {grid.service}".strip(),
            "/Inverters/DeviceInstances": ""}


class NameStore:
    """User-written /CustomName values, persisted as JSON in the state folder (key -> name)."""

    def __init__(self, folder: str):
        self.path = os.path.join(folder, NAMES_FILE)
        self.names: dict[str, str] = {}
        try:
            data = json.loads(read_regular(self.path, 100_000).decode("utf-8"))
            if isinstance(data, dict):
                self.names = {str(k): v for k, v in data.items() if isinstance(v, str)}
        except FileNotFoundError:
            pass
        except (OSError, ValueError, RecursionError, UnusableFile) as exc:
            log.warning("custom names: cannot read %s (%s); starting without", self.path, exc)

        self.local: Optional[LocalSettings] = None      # with localsettings the names live there
        self._local_names: dict[str, Optional[str]] = {}

    @staticmethod
    def local_path(key: str) -> str:
        """"dcload:1141" -> /Settings/DbusOpenDtu/CustomName/Dcload_1141."""
        clean = "".join(ch if ch.isalnum() else "_" for ch in key)
        return f"{NAMES_PREFIX}/{clean[:1].upper()}{clean[1:]}"

    def get(self, key: str) -> Optional[str]:
        if self.local is None:
            return self.names.get(key)
        if key not in self._local_names:
            path = self.local_path(key)
            try:
                value = self.local.add(path, "")
            except Exception as exc:      # noqa: BLE001 - a D-Bus failure: the file's name stays in use
                log.warning("custom names: localsettings %s: %s", path, exc)
                return self.names.get(key)
            if not value and self.names.get(key):            # once: the name from the old file moves over
                value = self.names[key]
                self.local.set(path, value)
            self._local_names[key] = value or None
        return self._local_names[key]

    def put(self, key: str, name: str) -> None:
        if self.local is not None:
            self._local_names[key] = name
            self.local.set(self.local_path(key), name)
            return
        self.names[key] = name
        try:
            write_atomic(self.path, json.dumps(self.names))
        except OSError as exc:
            log.warning("custom names: cannot write %s (%s)", self.path, exc)


def stepped(func, guard: StepGuard, give_up):
    """A main-loop step (bus messages, the tick) as a GLib callback: a failure is logged and the step skipped
    (`guard`); MAX_FAILED_STEPS in a row call `give_up(exc)` and remove the source (the process then exits 1 and
    supervisord starts it afresh)."""
    def wrapper(*args):
        try:
            with guard:
                result = func(*args)
                return True if result is None else result
            return True
        except TooManyFailures as exc:
            give_up(exc)
            return False
    wrapper.__name__ = func.__name__
    return wrapper


def _guarded(func):
    """GLib swallows exceptions of callbacks with a traceback on stderr: log one line and keep the source alive."""
    def wrapper(*args):
        try:
            result = func(*args)
        except Exception:
            log.exception("error in %s", func.__name__)
            return True
        return True if result is None else result
    wrapper.__name__ = func.__name__
    return wrapper


class VenusPublisher:
    def __init__(self, cfg, clock=SYSTEM_CLOCK):
        self.cfg = cfg
        self.clock = clock
        self.params = Params.from_config(cfg)
        self.inputs = Inputs(started_t=clock.monotonic())
        self.settings = SettingRequests()
        self.names = NameStore(cfg.control.state_dir)
        self.dcloads: dict[int, tuple[str, vedbus.VeDbusService]] = {}
        self.dcsystem: Optional[vedbus.VeDbusService] = None
        self.acload: Optional[vedbus.VeDbusService] = None
        self._unregistered: list[vedbus.VeDbusService] = []
        self.loop = GLib.MainLoop()
        self._guard = StepGuard(log, "venus_publisher step")
        self._gave_up: Optional[TooManyFailures] = None
        self.sub: Optional[Subscriber] = None
        self.pub: Optional[Publisher] = None
        self.battery: Optional[BatteryMonitor] = None
        self._client_bus = None
        self._last_battery_body: Optional[dict] = None
        self._last_battery_t = -1e9
        self._battery_idle = False
        self._sources: list[int] = []
        self._refresh_source: Optional[int] = None
        self._zmq_watch: Optional[int] = None           # None while paused until the pending refresh
        self._zmq_step = stepped(self._on_zmq, self._guard, self._give_up)
        self._resume_step = stepped(self._resume_zmq, self._guard, self._give_up)
        self._dirty: set = set()
        self._tick_step = stepped(self._on_tick, self._guard, self._give_up)
        self._tick_source: Optional[int] = None
        self._tick_t: Optional[float] = None
        self.local: Optional[LocalSettings] = None       # localsettings, when on the bus
        self.local_values: dict[str, Any] = {}            # setting name -> value in localsettings
        self._settings_synced = False
        self._migrated = 1
        self.injector: Optional[Injector] = None
        self.notifier = Notifier(quiet_until=clock.monotonic() + STARTUP_QUIET_STALE * self.params.status_stale_s)
        self.alarm_svc: Optional[vedbus.VeDbusService] = None

    # ------------------------------------------------------------ start / stop
    def start(self) -> None:
        vedbus.ensure_mainloop()
        self.pub = Publisher("venus_publisher", self.cfg.bus.rundir, clock=self.clock)
        self.sub = Subscriber(self.cfg.bus.rundir, topics=TOPICS)
        venus = self.cfg.venus
        self._client_bus = vedbus.new_system_bus()
        self.injector = Injector(self._client_bus)
        self.local = LocalSettings.connect(self._client_bus, WAIT_FOR_SETTINGS_S)
        if self.local is None:
            log.info("no localsettings on the bus: instances from config.ini, settings in the state files")
        else:
            self._open_local_settings()
        self.acload = self._make_acload(self._instance("acload", "acload", venus.acload_instance))
        self.dcsystem = self._make_dcsystem(self._instance("dcsystem", "dcsystem", venus.dcsystem_instance))
        self.alarm_svc = self._make_alarm(self._instance("alarm", "digitalinput", venus.alarm_instance))
        self.battery = BatteryMonitor(self._client_bus, venus.battery_service, self._battery_changed,
                                      self.clock.monotonic)
        self.battery.start()
        if self.cfg.grid_meter.source == "dbus":      # the GX's own grid meter on meter.grid, not shelly_poller
            from .gridmeter import GridMeterFollower

            def publish(topic, body):
                self.pub.publish(topic, body)
                self._drain()      # sending can consume the FD's edge
            self.grid_meter = GridMeterFollower(self._client_bus, self.cfg.grid_meter.service, publish,
                                                self.clock.monotonic)
            self._sources.append(self.grid_meter.start())   # its silence check, removed in close()
        self._watch_zmq()
        self._drain()      # messages queued before the watch existed produce no new edge
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._sources.append(GLib.unix_signal_add(GLib.PRIORITY_HIGH, signum, self._on_signal, signum))
        self.refresh()

    def _give_up(self, exc: TooManyFailures) -> None:
        self._gave_up = exc
        self.loop.quit()

    def run(self) -> int:
        self.start()
        try:
            self.loop.run()
        finally:
            self.close()
        if self._gave_up is not None:
            raise self._gave_up           # run_service: exit 1, supervisord restarts us
        return 0

    def _on_signal(self, signum) -> bool:
        log.info("stopping on %s", signal.Signals(signum).name)
        self.loop.quit()
        return True       # the source stays until close() removes it

    def close(self) -> None:
        for source in (self._refresh_source, self._zmq_watch, self._tick_source):
            if source is not None:
                GLib.source_remove(source)
        self._refresh_source = self._zmq_watch = self._tick_source = None
        for source in self._sources:
            GLib.source_remove(source)
        self._sources = []
        if self.battery is not None:
            self.battery.close()
        for _serial, svc in self.dcloads.values():
            svc.close()
        self.dcloads.clear()
        for svc in (self.dcsystem, self.acload, self.alarm_svc):
            if svc is not None:
                svc.close()
        if self.local is not None:
            self.local.close()
        if self._client_bus is not None:
            self._client_bus.set_exit_on_disconnect(False)
            self._client_bus.close()
        if self.sub is not None:
            self.sub.close()
        if self.pub is not None:
            self.pub.close()

    # ------------------------------------------------------------ D-Bus services
    def _register(self, svc: vedbus.VeDbusService) -> None:
        try:
            svc.register()
            log.info("D-Bus: registered %s", svc.name)
        except vedbus.NameTakenError as exc:
            log.error("D-Bus: %s; retrying every %g s", exc, RETRY_S)
            self._unregistered.append(svc)

    def _retry_registrations(self) -> None:
        waiting, self._unregistered = self._unregistered, []
        for svc in waiting:
            if not svc._closed:
                self._register(svc)

    def _add_paths(self, svc: vedbus.VeDbusService, values: dict[str, Any]) -> None:
        for path, value in values.items():
            svc.add_path(path, value, gettext=gettext_for(path))

    def _custom_name(self, svc: vedbus.VeDbusService, key: str, default: str) -> None:
        def on_change(path, value):
            if not value.strip() or len(value) > MAX_NAME_LEN:
                log.warning("%s %s: SetValue %r rejected (1..%d characters)", svc.name, path, value, MAX_NAME_LEN)
                return False
            self.names.put(key, value)
            log.info("%s %s = %r", svc.name, path, value)
            return True
        svc.add_path("/CustomName", self.names.get(key) or default, writeable=True, valuetype=str,
                     on_change=on_change)
        if self.names.local is not None:       # a name changed in localsettings (GUI, restore) shows at once
            self.names.local.watch(NameStore.local_path(key),
                                   lambda v: GLib.idle_add(_guarded(self._name_changed), key, default, v))

    def _name_changed(self, key: str, default: str, value: Any) -> bool:
        name = value if isinstance(value, str) and value.strip() else None
        if self.names.get(key) == name:
            return False                        # our own write coming back
        self.names._local_names[key] = name
        if key.startswith("dcload:"):
            serial = key.split(":", 1)[1]
            services = [svc for known, svc in self.dcloads.values() if known == serial]
            default = self._inverter_name(serial)
        else:
            services = [{"acload": self.acload, "dcsystem": self.dcsystem}[key]]
        for svc in services:
            if svc is not None:
                svc["/CustomName"] = name or default
        return False

    def _make_dcload(self, index: int, serial: str) -> vedbus.VeDbusService:
        instance = self._instance("dcload", "dcload", self.cfg.venus.dcload_first_instance + index, serial)
        svc = vedbus.VeDbusService(f"com.victronenergy.dcload.http_{instance}")
        svc.add_mandatory_paths(PROCESS_NAME, PROCESS_VERSION, CONNECTION, instance, 0, "OpenDTU", connected=0)
        self._custom_name(svc, f"dcload:{serial}", self._inverter_name(serial))
        svc.add_path("/Serial", serial)
        self._add_paths(svc, {k: v for k, v in dcload_values(None, self.params).items() if k != "/Connected"})
        self._register(svc)
        return svc

    def _make_dcsystem(self, instance: int) -> vedbus.VeDbusService:
        svc = vedbus.VeDbusService(f"com.victronenergy.dcsystem.http_{instance}")
        svc.add_mandatory_paths(PROCESS_NAME, PROCESS_VERSION, CONNECTION, instance, 0, "OpenDTU")
        self._custom_name(svc, "dcsystem", "DC Consumer (CCL)")
        self._add_paths(svc, {"/Dc/0/Voltage": None, "/Dc/0/Current": None, "/Dc/0/Power": None,
                              "/Dc/0/Temperature": None})
        self._register(svc)
        return svc

    def _make_acload(self, instance: int) -> vedbus.VeDbusService:
        svc = vedbus.VeDbusService(f"com.victronenergy.acload.http_{instance}")
        svc.add_mandatory_paths(PROCESS_NAME, PROCESS_VERSION, CONNECTION, instance, 0, "GRID by Shelly",
                                connected=0)
        self._custom_name(svc, "acload", self.cfg.venus.acload_custom_name)
        svc.add_path("/Role", "acload")
        for path, value in gui_info_values(self.cfg).items():
            svc.add_path(path, value)
        self._add_paths(svc, {k: v for k, v in acload_values(self.inputs, self.clock.monotonic(), self.params).items()
                              if k != "/Connected"})
        for path in SETTINGS:
            svc.add_path(path, None, writeable=True, valuetype=int, on_change=self._on_setting,
                         gettext=gettext_for(path))
        for path in ALARM_PATHS:
            svc.add_path(path, None)
        self._register(svc)
        return svc

    def _make_alarm(self, instance: int) -> vedbus.VeDbusService:
        """The standing alarm venus-platform shows: a digitalinput whose /CustomName names the condition."""
        svc = vedbus.VeDbusService(f"com.victronenergy.digitalinput.http_{instance}")
        svc.add_mandatory_paths(PROCESS_NAME, PROCESS_VERSION, CONNECTION, instance, 0, ALARM_DEVICE_NAME)
        svc.add_path("/CustomName", ALL_OK_NAME)
        svc.add_path("/Alarm", 0)            # 0 ok, 2 alarm: watched by venus-platform
        svc.add_path("/State", 8)            # 8 ok, 9 alarm (as the original project)
        svc.add_path("/Count", 0)
        self._register(svc)
        return svc

    # ------------------------------------------------------------ VRM instances (localsettings)
    def _instance(self, role: str, device_class: str, default: int, serial: Optional[str] = None) -> int:
        """The VRM instance: localsettings' answer to our default (a free one if it is taken), else config's."""
        if self.local is None:
            return default
        path = instance_setting(unique_id(role, serial))
        try:
            value = self.local.add(path, f"{device_class}:{default}")
        except Exception as exc:      # noqa: BLE001 - D-Bus or localsettings error: config's number
            log.warning("localsettings %s: %s; using instance %d from config.ini", path, exc, default)
            return default
        number = parse_instance(value, device_class)
        if number is None:
            log.warning("localsettings %s = %r is not %s:<n>; using %d", path, value, device_class, default)
            return default
        self.local.watch(path, lambda v: GLib.idle_add(_guarded(self._instance_changed), role, device_class,
                                                       serial, v))
        return number

    def _instance_changed(self, role: str, device_class: str, serial: Optional[str], value: Any) -> bool:
        number = parse_instance(value, device_class)
        if number is None:
            return False
        if role == "dcload":
            for index, (known, svc) in list(self.dcloads.items()):
                if known == serial and svc["/DeviceInstance"] != number:
                    log.info("inverter %s: VRM instance now %d: re-registering", serial, number)
                    svc.close()
                    del self.dcloads[index]
            self.refresh()
            return False
        current = {"acload": self.acload, "dcsystem": self.dcsystem, "alarm": self.alarm_svc}[role]
        if current is None or current["/DeviceInstance"] == number:
            return False
        log.info("%s: VRM instance now %d: re-registering", current.name, number)
        current.close()
        if role == "acload":
            self.acload = self._make_acload(number)
        elif role == "dcsystem":
            self.dcsystem = self._make_dcsystem(number)
        else:
            self.alarm_svc = self._make_alarm(number)
        self.refresh()
        return False

    # ------------------------------------------------------------ settings in localsettings
    def _open_local_settings(self) -> None:
        """Create our settings (default from config.ini, min/max for the GUI) and follow the user's changes."""
        try:
            for spec in USER_SETTINGS:
                value = self.local.add(spec.local_path, int(getattr(self.cfg.control, spec.name)), spec.min,
                                       spec.max)
                self.local_values[spec.name] = value
                self.local.watch(spec.local_path, lambda v, spec=spec: GLib.idle_add(
                    _guarded(self._local_setting_changed), spec, v))
            self._migrated = self.local.add(MIGRATED_PATH, 0, 0, 1)
        except Exception as exc:      # noqa: BLE001 - localsettings unusable: behave as without it
            log.error("localsettings unusable (%s): instances from config.ini, settings in the state files", exc)
            self.local = None
            return
        self.names.local = self.local
        log.info("settings in localsettings under %s: %s", SETTINGS_PREFIX,
                 ", ".join(f"{s.dbus_path[1:]} {self.local_values[s.name]}" for s in USER_SETTINGS))

    def _local_setting_changed(self, spec: UserSetting, value: Any) -> bool:
        if value == self.local_values.get(spec.name):
            return False                  # our own write coming back
        self.local_values[spec.name] = value
        why = check_setting(spec.dbus_path, value)
        if why is not None:
            log.warning("localsettings %s = %r ignored: %s", spec.local_path, value, why)
        elif self.settings.display(spec.dbus_path) != value:
            req = self.settings.request(spec.dbus_path, value, self.clock.monotonic())
            log.info("localsettings %s = %r: request %s sent to the controller", spec.local_path, value,
                     req.request_id)
            self._send_settings(self.clock.monotonic())
        return False

    def _sync_local_settings(self, body: dict) -> None:
        """After each ctrl.settings: localsettings and the controller agree. The first time with a fresh
        localsettings, the controller's values (from its state file) move over once; after a reinstall the
        localsettings values go to the controller. Later, a setting the controller moves itself (learned, e.g.
        SocFloatingMax) is copied to localsettings; the others follow localsettings."""
        if self.local is None:
            return
        first, self._settings_synced = not self._settings_synced, True
        if first and not self._migrated:
            for spec in USER_SETTINGS:
                self._write_local(spec, body.get(spec.name))
            self.local.set(MIGRATED_PATH, 1)
            self._migrated = 1
            log.info("settings copied once from the controller's state file to localsettings")
            return
        for spec in USER_SETTINGS:
            theirs, ours = body.get(spec.name), self.local_values.get(spec.name)
            if theirs == ours or spec.name in self.settings.pending:
                continue
            if spec.learned and not first:
                self._write_local(spec, theirs)
            elif check_setting(spec.dbus_path, ours) is None:
                req = self.settings.request(spec.dbus_path, ours, self.clock.monotonic())
                log.info("%s %r from localsettings: request %s sent to the controller", spec.dbus_path, ours,
                         req.request_id)

    def _write_local(self, spec: UserSetting, value: Any) -> None:
        if self.local is not None and isinstance(value, int) and check_setting(spec.dbus_path, value) is None:
            self.local_values[spec.name] = value
            self.local.set(spec.local_path, value)

    # ------------------------------------------------------------ notifications
    def _notify(self, alarms: dict, battery: BatteryView, now: float) -> None:
        causes = cause_texts(self.inputs, battery, alarms, now, self.params, self.cfg.control.balcony_fallback_w)
        for event in self.notifier.update(alarms, causes, now):
            log.warning("notification: %s", event.text)
            if self.injector is not None:
                self.injector.inject(event.wire())
        if self.alarm_svc is not None:
            level, name = standing_alarm(alarms, causes)
            self.alarm_svc["/CustomName"] = name          # first: venus-platform names the alarm by it
            with self.alarm_svc:
                self.alarm_svc["/Alarm"] = level
                self.alarm_svc["/State"] = 9 if level else 8

    def _inverter_name(self, serial: str) -> str:
        seen = self.inputs.inverters.get(serial)
        name = seen.body.get("name") if seen else None
        return name if isinstance(name, str) and name.strip() else serial

    # ------------------------------------------------------------ user settings
    def _on_setting(self, path: str, value: Any) -> bool:
        why = check_setting(path, value)
        if why is not None:
            log.warning("acload %s: SetValue %r rejected: %s", path, value, why)
            return False
        req = self.settings.request(path, value, self.clock.monotonic())
        self._write_local(SETTING_BY_PATH[path], value)
        log.info("acload %s: SetValue %r accepted, request %s sent to the controller", path, value, req.request_id)
        GLib.idle_add(_guarded(self._send_settings_once))
        return True

    def _send_settings_once(self) -> bool:
        self._send_settings(self.clock.monotonic())
        return False

    def _send_settings(self, now: float) -> None:
        for req in self.settings.expired(now):
            log.warning("setting %s = %r (request %s) not confirmed by the controller in time; giving up",
                        req.name, req.value, req.request_id)
        for body in self.settings.due(now):
            self.pub.publish(m.VENUS_SETTING, body)
        self._drain()     # sending can consume the FD's edge
        self._refresh_settings()

    def _refresh_settings(self) -> None:
        if self.acload is None:
            return
        with self.acload:
            for path in SETTINGS:
                self.acload[path] = self.settings.display(path)

    # ------------------------------------------------------------ ZeroMQ
    def _watch_zmq(self) -> None:
        self._zmq_watch = GLib.io_add_watch(self.sub.fileno(), GLib.PRIORITY_DEFAULT, GLib.IO_IN, self._zmq_step)

    def _on_zmq(self, _fd, _condition) -> bool:
        self._drain()
        if self._refresh_source is None:
            return True
        # A refresh is due (after REFRESH_COALESCE_MS): what comes meanwhile waits in the queue and is drained just
        # before it. Removing the watch (False) pauses it; _on_refresh_timer watches again.
        self._zmq_watch = None
        return False

    def _resume_zmq(self) -> None:
        self._watch_zmq()
        self._drain()      # what waited produced no new edge

    def _drain(self) -> None:
        msgs = self.sub.drain()
        if not msgs:
            return
        now = self.clock.monotonic()
        shown = False
        for msg in msgs:
            if self.inputs.on_message(msg.topic, msg.body, now):
                shown = True
                self._dirty |= parts_for(msg.topic)
            if msg.topic == m.CTRL_SETTINGS:
                for req in self.settings.on_settings(msg.body):
                    log.info("controller confirmed %s (request %s): in force %r", req.name, req.request_id,
                             msg.body.get(req.name))
                self._sync_local_settings(msg.body)
        if shown and self._refresh_source is None:
            self._refresh_source = GLib.timeout_add(REFRESH_COALESCE_MS, self._on_refresh_timer)

    def _on_refresh_timer(self) -> bool:
        self._refresh_source = None
        if self._zmq_watch is None:
            self._resume_step()
            if self._refresh_source is not None:      # scheduled by that drain: this refresh covers it
                GLib.source_remove(self._refresh_source)
                self._refresh_source = None
        parts, self._dirty = frozenset(self._dirty), set()
        try:
            self.refresh(parts=parts)
        except Exception:
            log.exception("error in refresh")
        return False

    # ------------------------------------------------------------ time-driven
    def _arm_tick(self, now: Optional[float] = None) -> None:
        """(Re)set the one-shot timer to the next thing due without a message."""
        if self._closing():
            return
        now = self.clock.monotonic() if now is None else now
        due = min(self.inputs.next_stale_t(now, self.params) + STALE_AFTER_S, now + MAX_TICK_S)
        if self.battery is not None and self.pub is not None:
            due = min(due, self._last_battery_t + BATTERY_MAX_INTERVAL_S)
        if self._unregistered or self.settings.pending:
            due = min(due, now + RETRY_S)
        if now < self.notifier.quiet_until:            # its first events are told then
            due = min(due, self.notifier.quiet_until)
        if self._tick_source is not None:
            if self._tick_t is not None and abs(due - self._tick_t) < 0.002:
                return
            GLib.source_remove(self._tick_source)
        self._tick_t = due
        self._tick_source = GLib.timeout_add(max(0, math.ceil((due - now) * 1000)), self._tick_cb)

    def _closing(self) -> bool:
        return self._gave_up is not None or self.sub is None

    def _tick_cb(self) -> bool:
        self._tick_source = None
        self._tick_step()
        if self._tick_source is None:       # the step failed before it armed the next one
            self._arm_tick()
        return False                        # one-shot: _arm_tick adds the next

    def _on_tick(self) -> None:
        now = self.clock.monotonic()
        self._retry_registrations()
        self._send_settings(now)     # drains too: a lost FD edge delays messages by at most one tick
        if now - self._last_battery_t >= BATTERY_MAX_INTERVAL_S:
            self._publish_battery(now)
        self.refresh(now)            # arms the next tick

    def _battery_changed(self) -> None:
        if not self._battery_idle:
            self._battery_idle = True
            GLib.idle_add(_guarded(self._battery_idle_cb))

    def _battery_idle_cb(self) -> bool:
        self._battery_idle = False
        now = self.clock.monotonic()
        body = self.battery.body(now)
        last = self._last_battery_body
        if last is None or {k: v for k, v in body.items() if k != "age_s"} != \
                {k: v for k, v in last.items() if k != "age_s"}:
            self._publish_battery(now, body)
            # the acload (alarms, notifications) depends only on whether the battery is there and why not; its
            # measured values (every second) show on the dcsystem alone
            state_changed = last is None or any(body.get(k) != last.get(k) for k in BATTERY_STATE_FIELDS)
            self.refresh(now, BATTERY_PARTS if state_changed else frozenset((DCSYSTEM,)))
        return False

    def _publish_battery(self, now: float, body: Optional[dict] = None) -> None:
        if self.battery is None or self.pub is None:
            return
        body = body or self.battery.body(now)
        self.pub.publish(m.VENUS_BATTERY, body)
        self._drain()
        self._last_battery_body = body
        self._last_battery_t = now

    # ------------------------------------------------------------ values
    def _battery_view(self) -> BatteryView:
        if self.battery is None or not self.battery.present or not self.battery.connected:
            # a battery whose driver says /Connected 0 shows no voltage of its own on the dcsystem either
            return BatteryView(detail=self.battery.detail if self.battery else None)
        values = self.battery.values
        return BatteryView(True, num(values.get("/Dc/0/Voltage")), num(values.get("/Dc/0/Temperature")),
                           self.battery.detail)

    def _sync_dcloads(self) -> None:
        wanted = self.inputs.inventory()
        for index in list(self.dcloads):
            serial, svc = self.dcloads[index]
            if wanted.get(index) != serial:
                log.info("inverter %s (index %d) gone: removing %s", serial, index, svc.name)
                svc.close()
                del self.dcloads[index]
        for index, serial in sorted(wanted.items()):
            if index not in self.dcloads:
                svc = self._make_dcload(index, serial)
                log.info("inverter %s (index %d): added %s", serial, index, svc.name)
                self.dcloads[index] = (serial, svc)

    def refresh(self, now: Optional[float] = None, parts: frozenset = ALL_PARTS) -> None:
        """Redraw the given services from the inputs (unchanged values emit nothing)."""
        now = self.clock.monotonic() if now is None else now
        if DCLOADS in parts:
            self._refresh_dcloads(now)
        battery = self._battery_view()
        if self.dcsystem is not None and DCSYSTEM in parts:
            with self.dcsystem:
                for path, value in dcsystem_values(self.inputs, battery, now, self.params).items():
                    self.dcsystem[path] = value
        if self.acload is not None and ACLOAD in parts:
            alarms = alarm_levels(self.inputs, battery, now, self.params)
            with self.acload:
                for path, value in acload_values(self.inputs, now, self.params).items():
                    self.acload[path] = value
                for path, name in ALARM_PATHS.items():
                    self.acload[path] = alarms[name]
                for path in SETTINGS:
                    self.acload[path] = self.settings.display(path)
                self.acload["/Inverters/DeviceInstances"] = ",".join(
                    str(svc["/DeviceInstance"]) for _i, (_s, svc) in sorted(self.dcloads.items()))
            self._notify(alarms, battery, now)
        self._arm_tick(now)

    def _refresh_dcloads(self, now: float) -> None:
        self._sync_dcloads()
        dtu = self.inputs.dtu_status.body if self.inputs.dtu_status else {}
        firmware = dtu.get("firmware") or 0
        for _index, (serial, svc) in self.dcloads.items():
            values = dcload_values(self.inputs.fresh_inverter(serial, now, self.params), self.params)
            with svc:
                for path, value in values.items():
                    svc[path] = value
                svc["/FirmwareVersion"] = firmware
                if self.names.get(f"dcload:{serial}") is None:
                    svc["/CustomName"] = self._inverter_name(serial)


def main(cfg, log_: logging.Logger) -> int:
    import dbus
    from common.cadence import STATUS_HEARTBEAT_S
    if cfg.venus.status_stale_s < 2 * STATUS_HEARTBEAT_S:
        log.warning("[venus] status_stale_s = %g s: the statuses come only every %g s when nothing changes, so the "
                    "sources will show stale now and then; use %g s or more", cfg.venus.status_stale_s,
                    STATUS_HEARTBEAT_S, 2 * STATUS_HEARTBEAT_S)
    app = VenusPublisher(cfg)
    try:
        return app.run()
    except dbus.exceptions.DBusException as exc:
        log.error("D-Bus: %s (system bus %s)", exc.get_dbus_message() or exc,
                  os.environ.get("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/var/run/dbus/system_bus_socket"))
        return 1
