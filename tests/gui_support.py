"""Loading the built GX GUI plugin offscreen against the stand-ins in tests/qml (see tests/qml/.../README.md).

`Backend` is the test's side of the stand-in VeQuickItem: it holds values by full uid (e.g.
"dbus/com.victronenergy.settings/Settings/DbusOpenDtu/Control/MaxFeedIn" or "mqtt/settings/0/Settings/..."),
records every uid the page reads and every setValue the page sends. `Uids` builds the uids of our services the
way gui-v2 does for a backend (gui-v2 src/backendconnection.cpp); `sample_values` is a running system's state.
"""
from __future__ import annotations

import base64
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("QT_QUICK_BACKEND", "software")
os.environ.setdefault("QML_DISABLE_DISK_CACHE", "1")      # no ~/.cache/<app>/qmlcache from tests

from PySide6.QtCore import Property, QCoreApplication, QEvent, QObject, QResource, QUrl, Signal, Slot  # noqa: E402
from PySide6.QtGui import QGuiApplication  # noqa: E402
from PySide6.QtQml import QQmlEngine, qmlRegisterSingletonInstance  # noqa: E402
from PySide6.QtQuick import QQuickView  # noqa: E402

from common.settings import SETTINGS_PREFIX, USER_SETTINGS  # noqa: E402
from services.venus_publisher.venus_os import instance_setting, unique_id  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
STUBS = ROOT / "tests" / "qml"
PLUGIN_JSON = ROOT / "gui" / "dbus-opendtu.json"
MAIN_PAGE = "qrc:/dbus-opendtu/PageSettingsDbusOpenDtu.qml"
INVERTER_PAGE = "qrc:/dbus-opendtu/PageInverterDbusOpenDtu.qml"
ACLOAD_INSTANCE = 61           # not config's default 59: localsettings moved it, the page must follow
INVERTERS = ((134, "114184512345", "Garage"), (135, "114184567890", "Roof east"))


class Backend(QObject):
    changed = Signal(str)
    sourceChanged = Signal()

    def __init__(self):
        super().__init__()
        self.values: dict[str, Any] = {}
        self.limits: dict[tuple[str, str], Any] = {}
        self.writes: list[tuple[str, Any]] = []
        self.pushes: list[tuple[str, dict]] = []
        self.read: set[str] = set()
        self._source = "dbus"
        self.access_level = 1          # installer (gui-v2's default write level)

    def reset(self, source: str) -> None:
        self.values.clear()
        self.limits.clear()
        self.writes.clear()
        self.pushes.clear()
        self.read.clear()
        self._source = source
        self.sourceChanged.emit()

    def _get_source(self) -> str:
        return self._source

    source = Property(str, _get_source, notify=sourceChanged)

    def _get_access(self) -> int:
        return self.access_level

    accessLevel = Property(int, _get_access, notify=sourceChanged)

    def seed(self, values: dict[str, Any], limits: dict[tuple[str, str], Any] | None = None) -> None:
        self.values.update(values)
        self.limits.update(limits or {})
        self.changed.emit("")

    @Slot(str, result="QVariant")
    def value(self, uid: str) -> Any:
        if uid:
            self.read.add(uid)
        return self.values.get(uid)

    @Slot(str, str, result="QVariant")
    def limit(self, uid: str, which: str) -> Any:
        return self.limits.get((uid, which), math.nan if which != "default" else None)

    @Slot(str, "QVariant")
    def setValue(self, uid: str, value: Any) -> None:  # noqa: N802 - the QML name
        self.writes.append((uid, value))
        self.values[uid] = value
        self.changed.emit(uid)

    @Slot(str, "QVariant")
    def pushPage(self, url: str, properties: Any) -> None:  # noqa: N802
        if hasattr(properties, "toVariant"):
            properties = properties.toVariant()
        self.pushes.append((url, dict(properties or {})))


@dataclass(frozen=True)
class Uids:
    """Our services' uids under one gui-v2 backend, as gui-v2 builds them."""
    source: str                        # "dbus" or "mqtt"

    @property
    def settings(self) -> str:
        return "mqtt/settings/0" if self.source == "mqtt" else "dbus/com.victronenergy.settings"

    def service(self, service_class: str, instance: int) -> str:
        if self.source == "mqtt":
            return f"mqtt/{service_class}/{instance}"
        return f"dbus/com.victronenergy.{service_class}.http_{instance}"

    @property
    def acload(self) -> str:
        return self.service("acload", ACLOAD_INSTANCE)

    def setting(self, local_path: str) -> str:
        return self.settings + local_path


def sample_values(uids: Uids, *, with_inverters: bool = True) -> tuple[dict[str, Any], dict]:
    """A running system: the settings (with their localsettings limits), the acload's status, two inverters."""
    values: dict[str, Any] = {uids.setting(instance_setting(unique_id("acload"))): f"acload:{ACLOAD_INSTANCE}"}
    limits: dict[tuple[str, str], Any] = {}
    for spec in USER_SETTINGS:
        uid = uids.setting(spec.local_path)
        values[uid] = spec.default
        limits[(uid, "min")], limits[(uid, "max")], limits[(uid, "default")] = spec.min, spec.max, spec.default
    a = uids.acload
    values.update({
        a + "/Control/Reason": "project law; target 25 W (zero point); waiting for grid sample",
        a + "/Ac/Power": 23.4, a + "/Control/InverterPower": 412.0, a + "/Control/Budget": 540.0,
        a + "/Control/CapBy": 3, a + "/Control/TotalLimit": 430.0, a + "/Alarms/Dtu": 0, a + "/Alarms/GridMeter": 1,
        a + "/Gateway/Host": "192.168.1.50", a + "/GridMeter/Host": "192.168.1.51",
        a + "/Inverters/DeviceInstances": ",".join(str(i) for i, _s, _n in INVERTERS) if with_inverters else "",
    })
    for instance, serial, name in INVERTERS if with_inverters else ():
        d = uids.service("dcload", instance)
        values.update({d + "/CustomName": name, d + "/Serial": serial, d + "/Ac/Power": 206.0,
                       d + "/Limit/Watt": 215.0})
    return values, limits


class Gui:
    """One QGuiApplication, the backend singleton and the plugin's resource, for a test module."""

    def __init__(self, plugin_json: Path = PLUGIN_JSON):
        self.app = QGuiApplication.instance() or QGuiApplication([])
        self.backend = Backend()
        qmlRegisterSingletonInstance(Backend, "VenusTest", 1, 0, "TestBackend", self.backend)
        plugin = json.loads(plugin_json.read_text())
        self.plugin = plugin
        self._resource = base64.b64decode(plugin["resource"])     # kept: Qt reads it in place
        if not QResource.registerResourceData(self._resource):
            raise AssertionError("the plugin's resource does not register")
        self.engine = QQmlEngine()          # one engine for every view: the singleton lives as long as it
        self.engine.addImportPath(str(STUBS))
        self.views: list[QQuickView] = []

    def load(self, url: str, width: int = 480, height: int = 1100, **properties) -> QQuickView:
        view = QQuickView(self.engine, None)
        view.setResizeMode(QQuickView.SizeRootObjectToView)
        view.resize(width, height)
        if properties:
            view.setInitialProperties(properties)
        view.setSource(QUrl(url))
        if view.status() != QQuickView.Ready:
            raise AssertionError(f"{url}: {[e.toString() for e in view.errors()]}")
        view.show()
        self.process()
        self.views.append(view)
        return view

    def process(self) -> None:
        for _ in range(3):
            self.app.processEvents()

    def close(self) -> None:
        for view in self.views:
            view.close()
            view.deleteLater()
        self.views.clear()
        self.process()
        QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)


def find(view: QQuickView, name: str) -> QObject:
    """The item with this objectName: a QObject child, or a visual child (a Repeater's delegates)."""
    obj = view.rootObject().findChild(QObject, name)
    todo = [view.rootObject()]
    while obj is None and todo:
        item = todo.pop()
        if item.objectName() == name:
            obj = item
        todo.extend(item.childItems())
    if obj is None:
        raise AssertionError(f"no item {name!r} on the page")
    return obj


def settings_paths_read(backend: Backend, uids: Uids) -> set[str]:
    """The localsettings paths (under /Settings/) the page read."""
    prefix = uids.settings
    return {uid[len(prefix):] for uid in backend.read if uid.startswith(prefix + "/")}


SHOT_WIDTH, SHOT_HEIGHT = 480, 910


def screenshot(path: Path, gui: "Gui | None" = None) -> None:
    """The main page with a running system's values (D-Bus backend) as a PNG (README shows docs/gui.png)."""
    gui = gui or Gui()
    gui.close()
    gui.backend.reset("dbus")
    gui.backend.seed(*sample_values(Uids("dbus")))
    view = gui.load(MAIN_PAGE, SHOT_WIDTH, SHOT_HEIGHT)
    gui.process()
    if not view.grabWindow().save(str(path)):
        raise OSError(f"cannot write {path}")
    gui.close()


__all__ = ["Backend", "Gui", "Uids", "sample_values", "find", "settings_paths_read", "SETTINGS_PREFIX"]


if __name__ == "__main__":          # make gui-screenshot: python -m tests.gui_support docs/gui.png
    import sys
    screenshot(Path(sys.argv[1]))
    print(f"wrote {sys.argv[1]}")
