"""Our own small implementation of Victron's `com.victronenergy.BusItem` D-Bus protocol (dbus-python, GLib loop).

Export side (`VeDbusService`): every path is a D-Bus object with GetValue / GetText / SetValue / GetDescription
and a `PropertiesChanged` signal; `/` and every intermediate node (e.g. `/Dc`, `/Dc/0`) answer GetValue / GetText
with a dict of the paths below them (relative, no leading slash); `/` also has GetItems and the `ItemsChanged`
signal. An invalid value (None) travels as an empty `ai` array and its text is "---".

SetValue return codes (as Victron's services): 0 accepted (also when unchanged), 1 not writeable or not coercible
to the path's `valuetype`, 2 rejected by the path's `on_change(path, value)` validator (falsy result).

    DBusGMainLoop(set_as_default=True)          # or ensure_mainloop(); before any connection
    svc = VeDbusService("com.victronenergy.dcload.http_134")   # own private connection to the SYSTEM bus
    svc.add_mandatory_paths("dbus-opendtu", "1.0", "OpenDTU", 134, 0, "OpenDTU")
    svc.add_path("/Dc/0/Power", None, gettext=lambda p, v: f"{v:.0f} W")
    svc.add_path("/CustomName", "Inverter 1", writeable=True)
    svc.register()                              # claims the name (do_not_queue) after the paths exist
    svc["/Dc/0/Power"] = 123.0                  # PropertiesChanged on the item + ItemsChanged on /
    with svc:                                   # batch: one ItemsChanged for all changes at the end, and no
                                                # PropertiesChanged (as velib's `with service as s:`)
        ...
    svc.close()                                 # releases the name and the connection

The bus is always the system bus (DBUS_SYSTEM_BUS_ADDRESS is honoured; DBUS_SESSION_BUS_ADDRESS is ignored).
One private connection per exported service: dbus-python cannot register two '/' handlers on one connection.

Client side: `unwrap()`/`wrap()`, `RemoteService` (follows one service's items by its signals after one GetItems),
`RemoteItem` (one path of one service), `watch_name_owners()` (NameOwnerChanged by name or prefix), `list_names()`.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Callable, Optional

import dbus
import dbus.bus
import dbus.service

log = logging.getLogger(__name__)

IFACE = "com.victronenergy.BusItem"
INVALID_TEXT = "---"


class VeDbusError(Exception):
    """Base class of this module's errors."""


class NameTakenError(VeDbusError):
    """Another connection already owns the service name."""


class PathError(VeDbusError, KeyError):
    """A path is added twice, conflicts with a tree node, or does not exist."""


# ---------------------------------------------------------------- bus and main loop

def ensure_mainloop() -> None:
    """Make the GLib main loop dbus-python's default (idempotent)."""
    from dbus.mainloop.glib import DBusGMainLoop
    DBusGMainLoop(set_as_default=True)


def new_system_bus() -> dbus.bus.BusConnection:
    """A new private connection to the system bus (never the session bus). DBUS_SYSTEM_BUS_ADDRESS is read each
    time (libdbus reads it once per process), so in-process tests can use a new private bus per test."""
    ensure_mainloop()
    address = os.environ.get("DBUS_SYSTEM_BUS_ADDRESS")
    return dbus.bus.BusConnection(address or dbus.bus.BusConnection.TYPE_SYSTEM)


# ---------------------------------------------------------------- value wrapping

def wrap(value: Any, variant_level: int = 0):
    """Python value -> D-Bus value, like velib's ve_utils.wrap_dbus_value."""
    if value is None:
        return dbus.Array([], signature=dbus.Signature("i"), variant_level=variant_level)
    if isinstance(value, (dbus.Boolean, dbus.Byte, dbus.Int16, dbus.UInt16, dbus.Int32, dbus.UInt32,
                          dbus.Int64, dbus.UInt64, dbus.Double, dbus.String, dbus.ObjectPath,
                          dbus.Signature, dbus.Array, dbus.Dictionary, dbus.Struct)):
        return value
    if isinstance(value, bool):
        return dbus.Boolean(value, variant_level=variant_level)
    if isinstance(value, int):
        if -0x80000000 <= value <= 0x7FFFFFFF:
            return dbus.Int32(value, variant_level=variant_level)
        return dbus.Int64(value, variant_level=variant_level)
    if isinstance(value, float):
        return dbus.Double(value, variant_level=variant_level)
    if isinstance(value, str):
        return dbus.String(value, variant_level=variant_level)
    if isinstance(value, (list, tuple)):
        if len(value) == 0:   # not `ai`, which would read as invalid
            return dbus.Array([], signature=dbus.Signature("u"), variant_level=variant_level)
        return dbus.Array([wrap(v, 1) for v in value], signature=dbus.Signature("v"),
                          variant_level=variant_level)
    if isinstance(value, dict):
        return dbus.Dictionary({str(k): wrap(v, 1) for k, v in value.items()}, signature=dbus.Signature("sv"),
                               variant_level=variant_level)
    raise TypeError(f"cannot send {type(value).__name__} on D-Bus")


def unwrap(value: Any) -> Any:
    """D-Bus value -> plain Python value; an empty `ai` array (invalid) -> None."""
    if isinstance(value, dbus.Array):
        if len(value) == 0 and value.signature == "i":
            return None
        return [unwrap(v) for v in value]
    if isinstance(value, dbus.Dictionary):
        return {unwrap(k): unwrap(v) for k, v in value.items()}
    if isinstance(value, dbus.Struct):
        return tuple(unwrap(v) for v in value)
    if isinstance(value, dbus.Boolean):
        return bool(value)
    if isinstance(value, (dbus.Byte, dbus.Int16, dbus.UInt16, dbus.Int32, dbus.UInt32, dbus.Int64, dbus.UInt64)):
        return int(value)
    if isinstance(value, dbus.Double):
        return float(value)
    if isinstance(value, (dbus.String, dbus.ObjectPath, dbus.Signature)):
        return str(value)
    return value


def coerce(value: Any, valuetype: Optional[type]) -> Any:
    """Coerce an unwrapped SetValue argument to `valuetype`; raise ValueError when it cannot be.

    int: ints, integral floats and decimal strings ("700", as `dbus -y ... SetValue 700` sends without `%`);
    float: ints, floats, numeric strings; str: strings only. bool is never coerced to a number.
    """
    if valuetype is None:
        return value
    if isinstance(value, bool) and valuetype is not bool:
        raise ValueError("boolean")
    if valuetype is int:
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            return int(value.strip(), 10)
        raise ValueError(f"{type(value).__name__} is not an integer")
    if valuetype is float:
        if isinstance(value, (int, float)):
            result = float(value)
        elif isinstance(value, str):
            result = float(value.strip())
        else:
            raise ValueError(f"{type(value).__name__} is not a number")
        if result != result or result in (float("inf"), float("-inf")):
            raise ValueError("not finite")
        return result
    if valuetype is str:
        if isinstance(value, str):
            return value
        raise ValueError(f"{type(value).__name__} is not a string")
    if isinstance(value, valuetype):
        return value
    raise ValueError(f"{type(value).__name__} is not {valuetype.__name__}")


def _props(value: Any, text: str) -> dbus.Dictionary:
    return dbus.Dictionary({"Value": wrap(value, 1), "Text": dbus.String(text, variant_level=1)},
                           signature=dbus.Signature("sv"))


# ---------------------------------------------------------------- exported objects

class _ItemExport(dbus.service.Object):
    def __init__(self, service: "VeDbusService", path: str):
        self._service = service
        self._path = path
        super().__init__(service.bus, path)

    @dbus.service.method(IFACE, out_signature="v")
    def GetValue(self):
        return wrap(self._service._values[self._path])

    @dbus.service.method(IFACE, out_signature="s")
    def GetText(self):
        return self._service.get_text(self._path)

    @dbus.service.method(IFACE, in_signature="v", out_signature="i")
    def SetValue(self, value):
        return self._service._set_from_dbus(self._path, value)

    @dbus.service.method(IFACE, in_signature="si", out_signature="s")
    def GetDescription(self, language, length):
        return self._service._meta[self._path].description

    @dbus.service.signal(IFACE, signature="a{sv}")
    def PropertiesChanged(self, changes):
        pass


class _TreeExport(dbus.service.Object):
    def __init__(self, service: "VeDbusService", path: str):
        self._service = service
        self._path = path
        super().__init__(service.bus, path)

    def _below(self):
        prefix = "/" if self._path == "/" else self._path + "/"
        for path in sorted(self._service._values):
            if path.startswith(prefix):
                yield path[len(prefix):], path

    @dbus.service.method(IFACE, out_signature="v")
    def GetValue(self):
        return dbus.Dictionary({rel: wrap(self._service._values[p], 1) for rel, p in self._below()},
                               signature=dbus.Signature("sv"))

    @dbus.service.method(IFACE, out_signature="v")
    def GetText(self):
        return dbus.Dictionary({rel: self._service.get_text(p) for rel, p in self._below()},
                               signature=dbus.Signature("ss"))


class _RootExport(_TreeExport):
    @dbus.service.method(IFACE, out_signature="a{sa{sv}}")
    def GetItems(self):
        return dbus.Dictionary({p: _props(v, self._service.get_text(p)) for p, v in self._service._values.items()},
                               signature=dbus.Signature("sa{sv}"))

    @dbus.service.signal(IFACE, signature="a{sa{sv}}")
    def ItemsChanged(self, changes):
        pass


class _Meta:
    __slots__ = ("writeable", "on_change", "gettext", "valuetype", "description")

    def __init__(self, writeable, on_change, gettext, valuetype, description):
        self.writeable, self.on_change, self.gettext = writeable, on_change, gettext
        self.valuetype, self.description = valuetype, description


def _check_path(path: str) -> None:
    if not isinstance(path, str) or not path.startswith("/") or path == "/" or path.endswith("/") or "//" in path:
        raise PathError(f"invalid path {path!r}")


class VeDbusService:
    """One D-Bus service (one well-known name) with BusItem paths, on its own connection.

    `properties_changed=False`: changes go out only as ItemsChanged on `/`, as Victron's own drivers do."""

    def __init__(self, servicename: str, bus: Optional[dbus.bus.BusConnection] = None,
                 properties_changed: bool = True):
        self.name = servicename
        self._properties_changed = properties_changed
        self._own_bus = bus is None
        self.bus = new_system_bus() if bus is None else bus
        self._values: dict[str, Any] = {}
        self._meta: dict[str, _Meta] = {}
        self._items: dict[str, _ItemExport] = {}
        self._nodes: dict[str, _TreeExport] = {}
        self._root = _RootExport(self, "/")
        self._registered = False
        self._closed = False
        self._batch_depth = 0
        self._batch: dict[str, dbus.Dictionary] = {}

    # ------------------------------------------------------------ building
    def add_path(self, path: str, value: Any = None, writeable: bool = False,
                 on_change: Optional[Callable[[str, Any], Any]] = None,
                 gettext: Optional[Callable[[str, Any], str]] = None,
                 valuetype: Optional[type] = None, description: str = "") -> None:
        """Export `path`. on_change(path, new_value) -> truthy accepts a SetValue, falsy rejects it (code 2)."""
        _check_path(path)
        if path in self._values or path in self._nodes:
            raise PathError(f"{self.name}: path {path} exists already")
        parts = path.split("/")[1:-1]
        parents = ["/" + "/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        for parent in parents:
            if parent in self._values:
                raise PathError(f"{self.name}: {path} would be below the item {parent}")
        for parent in parents:
            if parent not in self._nodes:
                self._nodes[parent] = _TreeExport(self, parent)
        self._values[path] = value
        self._meta[path] = _Meta(writeable, on_change, gettext, valuetype, description)
        self._items[path] = _ItemExport(self, path)
        if self._registered:
            self._emit(path)

    def add_mandatory_paths(self, process_name: str, process_version: str, connection: str,
                            device_instance: int, product_id: int, product_name: str,
                            firmware_version: Any = 0, hardware_version: Any = 0, connected: int = 1) -> None:
        self.add_path("/Mgmt/ProcessName", process_name)
        self.add_path("/Mgmt/ProcessVersion", process_version)
        self.add_path("/Mgmt/Connection", connection)
        self.add_path("/DeviceInstance", device_instance)
        self.add_path("/ProductId", product_id)
        self.add_path("/ProductName", product_name)
        self.add_path("/FirmwareVersion", firmware_version)
        self.add_path("/HardwareVersion", hardware_version)
        self.add_path("/Connected", connected)

    def remove_path(self, path: str) -> None:
        if path not in self._values:
            raise PathError(f"{self.name}: no path {path}")
        self._items.pop(path).remove_from_connection()
        del self._values[path]
        del self._meta[path]
        self._batch.pop(path, None)
        for node in sorted(self._nodes, key=len, reverse=True):   # drop tree nodes left empty
            prefix = node + "/"
            if not any(p.startswith(prefix) for p in self._values):
                self._nodes.pop(node).remove_from_connection()

    def register(self) -> None:
        """Claim the name (do_not_queue) now that the paths exist; NameTakenError if someone owns it."""
        if self._registered:
            return
        result = self.bus.request_name(self.name, dbus.bus.NAME_FLAG_DO_NOT_QUEUE)
        if result not in (dbus.bus.REQUEST_NAME_REPLY_PRIMARY_OWNER, dbus.bus.REQUEST_NAME_REPLY_ALREADY_OWNER):
            raise NameTakenError(f"D-Bus name {self.name} is taken (reply {int(result)})")
        self._registered = True
        log.debug("registered %s with %d paths", self.name, len(self._values))

    def close(self) -> None:
        """Release the name, unexport every object and close our own connection."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._registered:
                self.bus.release_name(self.name)
        except dbus.DBusException as exc:
            log.debug("release of %s failed: %s", self.name, exc)
        self._registered = False
        for obj in [*self._items.values(), *self._nodes.values(), self._root]:
            try:
                obj.remove_from_connection()
            except (LookupError, KeyError):
                pass
        self._items.clear()
        self._nodes.clear()
        if self._own_bus:
            self.bus.set_exit_on_disconnect(False)   # libdbus would otherwise _exit(1) on our own close
            self.bus.close()

    # ------------------------------------------------------------ values
    def __contains__(self, path: str) -> bool:
        return path in self._values

    def __getitem__(self, path: str) -> Any:
        return self._values[path]

    def __setitem__(self, path: str, value: Any) -> None:
        if path not in self._values:
            raise PathError(f"{self.name}: no path {path}")
        self._store(path, value)

    def paths(self) -> list[str]:
        return list(self._values)

    def get_text(self, path: str) -> str:
        value = self._values[path]
        if value is None:
            return INVALID_TEXT
        gettext = self._meta[path].gettext
        if gettext is not None:
            try:
                return str(gettext(path, value))
            except Exception:  # a formatting bug must not break the D-Bus call
                log.exception("%s %s: gettext failed", self.name, path)
        return str(value)

    def _store(self, path: str, value: Any) -> bool:
        old = self._values[path]
        if type(old) is type(value) and old == value:
            return False
        wrap(value)  # raises TypeError for values D-Bus cannot carry
        self._values[path] = value
        self._emit(path)
        return True

    def _emit(self, path: str) -> None:
        if self._closed:
            return
        props = _props(self._values[path], self.get_text(path))
        if self._batch_depth:
            # as velib's `with service as s:` (ServiceContext): changes in a batch go out only in its one
            # ItemsChanged, no PropertiesChanged per item (one D-Bus signal per redraw, not one per value)
            self._batch[path] = props
            return
        if self._properties_changed:
            self._items[path].PropertiesChanged(props)
        self._root.ItemsChanged(dbus.Dictionary({path: props}, signature=dbus.Signature("sa{sv}")))

    def _set_from_dbus(self, path: str, raw: Any) -> int:
        meta = self._meta[path]
        if not meta.writeable:
            return 1
        try:
            value = coerce(unwrap(raw), meta.valuetype)
        except (ValueError, TypeError) as exc:
            log.warning("%s %s: SetValue %r refused, not coercible (%s)", self.name, path, unwrap(raw), exc)
            return 1
        old = self._values[path]
        if type(old) is type(value) and old == value:
            return 0
        if meta.on_change is not None:
            try:
                accepted = meta.on_change(path, value)
            except Exception:
                log.exception("%s %s: on_change failed", self.name, path)
                accepted = False
            if not accepted:
                return 2
        try:
            self._store(path, value)
        except TypeError:
            return 1
        return 0

    # ------------------------------------------------------------ batching
    def batch(self) -> "VeDbusService":
        return self

    def __enter__(self) -> "VeDbusService":
        self._batch_depth += 1
        return self

    def __exit__(self, *exc) -> None:
        self._batch_depth -= 1
        if self._batch_depth == 0 and self._batch:
            changes, self._batch = self._batch, {}
            if not self._closed:
                self._root.ItemsChanged(dbus.Dictionary(changes, signature=dbus.Signature("sa{sv}")))


# ---------------------------------------------------------------- client helpers

def list_names(bus) -> list[str]:
    """Every name on the bus (synchronous; quick on a local bus)."""
    return [str(n) for n in bus.list_names()]


def watch_name_owners(bus, callback: Callable[[str, str, str], None], name: Optional[str] = None,
                      namespace: Optional[str] = None):
    """NameOwnerChanged for one name, or for every name under `namespace` (e.g. "com.victronenergy.battery").

    callback(name, old_owner, new_owner): old "" = appeared, new "" = disappeared, both set = replaced.
    Returns the match (call .remove() to stop).
    """
    def handler(changed, old, new):
        changed = str(changed)
        if namespace is not None and not (changed == namespace or changed.startswith(namespace + ".")):
            return
        callback(changed, str(old), str(new))

    kwargs = {"signal_name": "NameOwnerChanged", "dbus_interface": "org.freedesktop.DBus",
              "bus_name": "org.freedesktop.DBus", "path": "/org/freedesktop/DBus"}
    if name is not None:
        return bus.add_signal_receiver(handler, arg0=name, **kwargs)
    try:
        return bus.add_signal_receiver(handler, arg0namespace=namespace, **kwargs)
    except TypeError:   # dbus-python without arg0namespace: filter in the handler
        return bus.add_signal_receiver(handler, **kwargs)


class RemoteService:
    """Follows the values of another service by its signals after one asynchronous GetItems.

    `paths`: only these paths are kept (None: all). on_change(path, value, changed) for each value that arrives (changed: it differs from the last);
    on_ready(ok, detail) once GetItems answered (or failed). `values` holds the current values.
    The name is followed by its current owner (dbus-python resolves it), so a replaced owner keeps working,
    but the caller should rebuild it on NameOwnerChanged to get a fresh GetItems.
    """

    def __init__(self, bus, name: str, on_change: Optional[Callable[[str, Any], None]] = None,
                 on_ready: Optional[Callable[[bool, str], None]] = None, paths: Optional[set] = None,
                 timeout_s: float = 10.0):
        self.bus, self.name, self.paths = bus, name, paths
        self.values: dict[str, Any] = {}
        self.ready = False
        self._on_change, self._on_ready = on_change, on_ready
        self._closed = False
        # With `paths` given, one match per path: the daemon then does not wake us for the other paths' signals
        # (a battery changes many values every second; we keep six).
        self._matches = [
            bus.add_signal_receiver(self._on_properties, signal_name="PropertiesChanged", dbus_interface=IFACE,
                                    bus_name=name, path_keyword="path", **({} if p is None else {"path": p}))
            for p in ([None] if paths is None else sorted(paths))
        ] + [
            bus.add_signal_receiver(self._on_items, signal_name="ItemsChanged", dbus_interface=IFACE,
                                    bus_name=name, path="/"),
        ]
        bus.call_async(name, "/", IFACE, "GetItems", "", (), self._got_items, self._failed,
                       timeout=timeout_s)

    def _update(self, path: str, raw) -> None:
        if self._closed or (self.paths is not None and path not in self.paths):
            return
        value = unwrap(raw)
        changed = path not in self.values or self.values[path] != value or type(self.values[path]) is not type(value)
        self.values[path] = value
        if self._on_change is not None:
            self._on_change(path, value, changed)

    def _on_properties(self, changes, path=None):
        if path is not None and "Value" in changes:
            self._update(str(path), changes["Value"])

    def _on_items(self, items):
        for path, props in items.items():
            if "Value" in props:
                self._update(str(path), props["Value"])

    def _got_items(self, items):
        if self._closed:
            return
        for path, props in items.items():
            if "Value" in props:
                self._update(str(path), props["Value"])
        self.ready = True
        if self._on_ready is not None:
            self._on_ready(True, f"{len(items)} items")

    def _failed(self, exc):
        if self._closed:
            return
        log.debug("GetItems on %s failed: %s", self.name, exc)
        if self._on_ready is not None:
            self._on_ready(False, str(exc.get_dbus_name() if hasattr(exc, "get_dbus_name") else exc))

    def close(self) -> None:
        self._closed = True
        for match in self._matches:
            match.remove()
        self._matches = []


class RemoteItem:
    """Follows one path of one service: an asynchronous GetValue, then its PropertiesChanged and the
    service's ItemsChanged. on_change(value) whenever a value arrives; value None = invalid or unavailable."""

    def __init__(self, bus, name: str, path: str, on_change: Callable[[Any], None], timeout_s: float = 10.0):
        self.bus, self.name, self.path = bus, name, path
        self.value: Any = None
        self._on_change = on_change
        self._closed = False
        self._matches = [
            bus.add_signal_receiver(self._on_properties, signal_name="PropertiesChanged", dbus_interface=IFACE,
                                    bus_name=name, path=path),
            bus.add_signal_receiver(self._on_items, signal_name="ItemsChanged", dbus_interface=IFACE,
                                    bus_name=name, path="/"),
        ]
        bus.call_async(name, path, IFACE, "GetValue", "", (), self._set, self._failed, timeout=timeout_s)

    def _set(self, raw) -> None:
        if not self._closed:
            self.value = unwrap(raw)
            self._on_change(self.value)

    def _failed(self, exc) -> None:
        log.debug("GetValue %s %s failed: %s", self.name, self.path, exc)
        self._set(dbus.Array([], signature="i"))

    def _on_properties(self, changes):
        if "Value" in changes:
            self._set(changes["Value"])

    def _on_items(self, items):
        props = items.get(self.path)
        if props is not None and "Value" in props:
            self._set(props["Value"])

    def close(self) -> None:
        self._closed = True
        for match in self._matches:
            match.remove()
        self._matches = []
