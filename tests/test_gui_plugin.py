"""The GX GUI plugin (gui/dbus-opendtu.json) as gui-v2 loads it: the built JSON's resource registered, every page
loaded offscreen from qrc:/ against the stand-ins in tests/qml, under the D-Bus and the MQTT uid scheme; every
control driven and the exact uid and value written checked; bindings checked against the settings declaration
(common/settings.py) and the paths venus_publisher creates."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import shiboken6

from tests import gui_support as gs
from tests.gui_support import INVERTERS, Uids, find, sample_values

from PySide6.QtCore import Q_ARG, Q_RETURN_ARG, QMetaObject, QTranslator  # noqa: E402

from common.settings import USER_SETTINGS  # noqa: E402
from scripts import build_gui  # noqa: E402
from services.venus_publisher.app import gui_info_values  # noqa: E402
from services.venus_publisher.model import (ALARM_PATHS, SETTINGS, Inputs, Params, acload_values,  # noqa: E402
                                            dcload_values)
from services.venus_publisher.venus_os import instance_setting, unique_id  # noqa: E402

pytestmark = pytest.mark.timeout(120)
BACKENDS = ("dbus", "mqtt")


@pytest.fixture(scope="module")
def gui():
    g = gs.Gui()
    yield g
    g.close()


@pytest.fixture
def page(gui, request):
    """Loads a page of the plugin with a running system's values under one backend."""
    def load(source: str, url: str = gs.MAIN_PAGE, with_inverters: bool = True, **properties):
        gui.close()
        gui.backend.reset(source)
        values, limits = sample_values(Uids(source), with_inverters=with_inverters)
        gui.backend.seed(values, limits)
        return gui.load(url, **properties)
    yield load
    gui.close()


def call(obj, method: str, *args):
    return QMetaObject.invokeMethod(obj, method, Q_RETURN_ARG("QVariant"), *[Q_ARG("QVariant", a) for a in args])


def qml_type(obj) -> str:
    return obj.metaObject().className().split("_QML")[0]


def all_items(view) -> list:
    """Every object of the page once (QObject children and visual children)."""
    todo, seen = [view.rootObject()], {}
    while todo:
        obj = todo.pop()
        key = shiboken6.getCppPointer(obj)[0]
        if key in seen:
            continue
        seen[key] = obj
        todo.extend(obj.children())
        if hasattr(obj, "childItems"):
            todo.extend(obj.childItems())
    return list(seen.values())


# ------------------------------------------------------------------ packaging

def test_built_json_is_committed_reproducible_and_as_gui_v2_reads_it(gui):
    first, second = build_gui.build(), build_gui.build()
    assert first == second, "two builds differ"
    assert gs.PLUGIN_JSON.read_bytes() == first, "gui/dbus-opendtu.json is stale: python -m scripts.build_gui"
    plugin = json.loads(first)
    # name = app folder = JSON file name = qrc prefix (dbus-flashmq serves only /data/apps/enabled/<app>/gui-v2/<app>.json)
    assert plugin["name"] == "dbus-opendtu" == gs.PLUGIN_JSON.stem
    assert plugin["version"] and plugin["minRequiredVersion"] == "v1.2.14"
    assert plugin["integrations"] == [{"type": 1, "url": gs.MAIN_PAGE}]
    assert plugin["translations"] == ["qrc:/dbus-opendtu/dbus-opendtu_de.qm"]
    assert len(first) < 64_000, "over MQTT the browser fetches it in 4 KB chunks within 15 s"
    from PySide6.QtCore import QFile
    for path in (":/dbus-opendtu/PageSettingsDbusOpenDtu.qml", ":/dbus-opendtu/PageInverterDbusOpenDtu.qml",
                 ":/dbus-opendtu/dbus-opendtu_de.qm"):
        assert QFile.exists(path), path


def test_rcc_file_time_follows_the_content(tmp_path):
    # Qt's QML disk cache (on the GX too) reuses compiled code while a qrc file's time is unchanged
    a, b = tmp_path / "A.qml", tmp_path / "B.qml"
    a.write_text("Item {}")
    b.write_text("Item {}")
    first = build_gui.source_date([a, b])
    assert build_gui.source_date([a, b]) == first
    b.write_text("Item { }")
    assert build_gui.source_date([a, b]) != first


def test_build_check_flags_a_stale_json(tmp_path):
    out = tmp_path / "dbus-opendtu.json"
    out.write_text("{}")
    assert build_gui.main(["--check", "--output", str(out)]) == 1
    assert build_gui.main(["--output", str(out)]) == 0
    assert build_gui.main(["--check", "--output", str(out)]) == 0


# ------------------------------------------------------------------ the main page

@pytest.mark.parametrize("source", BACKENDS)
def test_status_lines_show_what_the_acload_publishes(page, source):
    view = page(source)
    shown = {name: (find(view, name).property("secondaryText"), find(view, name).property("caption"))
             for name in ("statusReason", "statusGrid", "statusOutput", "statusCap", "statusLimit",
                          "statusGateway", "statusGridMeter")}
    assert shown == {
        "statusReason": ("", "project law; target 25 W (zero point); waiting for grid sample"),
        "statusGrid": ("23 W", ""),
        "statusOutput": ("412 W", ""),
        "statusCap": ("540 W", "Set by: battery discharge limit (voltage × DCL)"),
        "statusLimit": ("430 W", ""),
        "statusGateway": ("OK", "192.168.1.50"),
        "statusGridMeter": ("Warning", "192.168.1.51"),
    }


@pytest.mark.parametrize("source", BACKENDS)
def test_status_follows_changes_and_a_missing_service(gui, page, source):
    view = page(source)
    a = Uids(source).acload
    gui.backend.seed({a + "/Control/CapBy": 0, a + "/Alarms/Dtu": 2, a + "/Ac/Power": None})
    assert find(view, "statusCap").property("caption") == "Battery state unknown: inverters at their minimum"
    assert find(view, "statusGateway").property("secondaryText") == "Alarm"
    assert find(view, "statusGrid").property("secondaryText") == "--"
    # the acload's instance setting gone (venus_publisher not installed or not started): nothing is shown as live
    gui.backend.seed({Uids(source).setting(instance_setting(unique_id("acload"))): None})
    assert find(view, "statusReason").property("secondaryText") == "Not running"
    assert find(view, "statusOutput").property("secondaryText") == "--"
    assert find(view, "statusGateway").property("secondaryText") == "Unknown"


@pytest.mark.parametrize("source", BACKENDS)
def test_each_spin_box_is_a_declared_setting_and_writes_its_exact_uid(gui, page, source):
    view = page(source)
    uids = Uids(source)
    spin_boxes = [o for o in all_items(view) if qml_type(o) == "ListSpinBox"]
    assert sorted(o.objectName() for o in spin_boxes) == sorted(f"setting{s.dbus_path[1:]}" for s in USER_SETTINGS)
    for spec in USER_SETTINGS:
        box = find(view, f"setting{spec.dbus_path[1:]}")
        uid = uids.setting(spec.local_path)
        assert [c.property("uid") for c in box.children() if qml_type(c) == "VeQuickItem"] == [uid]
        # limits from localsettings (the spin box's defaults), unit and step as declared
        assert (box.property("from"), box.property("to")) == (spec.min, spec.max), spec.name
        assert (box.property("suffix"), box.property("stepSize")) == (spec.unit, spec.step), spec.name
        assert box.property("secondaryText") == f"{spec.default}{spec.unit}"
        assert box.property("effectiveVisible") is True
        new = spec.default + spec.step
        gui.backend.writes.clear()
        assert call(box, "acceptSelector", new) is True
        assert gui.backend.writes == [(uid, new)], spec.name
        assert box.property("secondaryText") == f"{new}{spec.unit}"


@pytest.mark.parametrize("source", BACKENDS)
def test_a_user_below_installer_cannot_write_and_missing_settings_are_hidden(gui, page, source):
    view = page(source)
    box = find(view, "settingMaxFeedIn")
    gui.backend.access_level = 0
    gui.backend.sourceChanged.emit()
    try:
        assert call(box, "acceptSelector", 710) is False
        assert gui.backend.writes == []
    finally:
        gui.backend.access_level = 1
        gui.backend.sourceChanged.emit()
    gui.backend.seed({Uids(source).setting(USER_SETTINGS[0].local_path): None})
    assert find(view, f"setting{USER_SETTINGS[0].dbus_path[1:]}").property("effectiveVisible") is False


@pytest.mark.parametrize("source", BACKENDS)
def test_inverter_rows_open_their_page_with_the_dcload_uid(gui, page, source):
    view = page(source)
    uids = Uids(source)
    assert find(view, "inverterNone").property("effectiveVisible") is False
    for instance, serial, name in INVERTERS:
        row = find(view, f"inverter{instance}")
        assert (row.property("text"), row.property("secondaryText")) == (name, serial)
        gui.backend.pushes.clear()
        call(row, "click")
        assert gui.backend.pushes == [("qrc:/dbus-opendtu/PageInverterDbusOpenDtu.qml",
                                       {"title": name, "serviceUid": uids.service("dcload", instance)})]


@pytest.mark.parametrize("source", BACKENDS)
def test_no_inverters_yet(page, source):
    view = page(source, with_inverters=False)
    assert find(view, "inverterNone").property("effectiveVisible") is True
    assert find(view, "inverterList").property("count") == 0


# ------------------------------------------------------------------ the inverter page

@pytest.mark.parametrize("source", BACKENDS)
def test_inverter_page_renames_through_the_dcloads_custom_name(gui, page, source):
    instance, serial, name = INVERTERS[1]
    d = Uids(source).service("dcload", instance)
    view = page(source, gs.INVERTER_PAGE, title=name, serviceUid=d)
    field = find(view, "inverterName")
    assert field.property("secondaryText") == name
    assert find(view, "inverterSerial").property("secondaryText") == serial
    assert find(view, "inverterPower").property("secondaryText") == "206 W"
    assert find(view, "inverterLimit").property("secondaryText") == "215 W"
    assert "enable_switch_off" in find(view, "inverterSwitchOff").property("caption")
    assert call(field, "enterText", "Dach Ost") is True
    assert gui.backend.writes == [(d + "/CustomName", "Dach Ost")]


# ------------------------------------------------------------------ bindings against our services

@pytest.mark.parametrize("source", BACKENDS)
def test_every_path_the_pages_read_is_one_our_services_create(gui, page, source, tmp_path):
    from tests.support import base_sections, write_config
    from common.config import load_config as load
    uids = Uids(source)
    page(source)
    main_read = set(gui.backend.read)
    instance, _serial, name = INVERTERS[0]
    page(source, gs.INVERTER_PAGE, title=name, serviceUid=uids.service("dcload", instance))
    read = main_read | gui.backend.read

    settings = {uid[len(uids.settings):] for uid in read if uid.startswith(uids.settings + "/")}
    assert settings == {s.local_path for s in USER_SETTINGS} | {instance_setting(unique_id("acload"))}

    cfg = load(write_config(str(tmp_path), base_sections(str(tmp_path))))
    acload_paths = (set(acload_values(Inputs(0.0), 0.0, Params())) | set(SETTINGS) | set(ALARM_PATHS)
                    | set(gui_info_values(cfg)))
    dcload_paths = set(dcload_values(None, Params())) | {"/CustomName", "/Serial"}
    services = {uids.acload: acload_paths, **{uids.service("dcload", i): dcload_paths for i, _s, _n in INVERTERS}}
    for uid in read - {uids.settings + p for p in settings}:
        service = next((s for s in services if uid.startswith(s + "/")), None)
        assert service is not None, f"{uid}: not one of our services"
        assert uid[len(service):] in services[service], f"{uid}: no such path on {service}"


# ------------------------------------------------------------------ lint and translations

def _qt_tool(name: str) -> str:
    return build_gui.tool(name)


def test_qmllint_is_clean_and_catches_a_misspelled_property(tmp_path):
    pages = sorted(str(p) for p in build_gui.qml_files())
    lint = [_qt_tool("qmllint"), "-I", str(gs.STUBS), "--max-warnings", "0"]
    done = subprocess.run(lint + pages, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    bad = tmp_path / "PageSettingsDbusOpenDtu.qml"
    bad.write_text(Path(pages[1]).read_text().replace("stepSize: 10", "stepSise: 10", 1))
    done = subprocess.run(lint + [str(bad)], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "stepSise" in done.stdout + done.stderr


def test_german_translation_is_complete_and_loads(gui, page, tmp_path):
    ts = build_gui.TRANSLATIONS / "dbus-opendtu_de.ts"
    fresh = tmp_path / ts.name
    shutil.copyfile(ts, fresh)
    subprocess.run([_qt_tool("lupdate"), *map(str, build_gui.qml_files()), "-ts", str(fresh), "-locations", "none",
                    "-no-obsolete"], capture_output=True, timeout=60, check=True)
    text = fresh.read_text(encoding="utf-8")
    assert fresh.read_bytes() == ts.read_bytes(), "gui/translations/dbus-opendtu_de.ts misses strings: run lupdate"
    assert 'type="unfinished"' not in text and 'type="vanished"' not in text
    translator = QTranslator()
    assert translator.load(":/dbus-opendtu/dbus-opendtu_de.qm")
    gui.app.installTranslator(translator)
    try:
        view = page("dbus")
        gui.engine.retranslate()
        assert find(view, "statusGrid").property("text") == "Netzleistung (+ Bezug)"
        assert find(view, "settingMaxFeedIn").property("text") == "Maximale Einspeisung"
    finally:
        gui.app.removeTranslator(translator)
        gui.engine.retranslate()


def test_stand_ins_name_the_gui_v2_source_they_mirror():
    for qml in sorted((gs.STUBS / "Victron" / "VenusOS").glob("*.qml")):
        head = qml.read_text().splitlines()[0]
        assert head.startswith("// Mirrors ") and ("gui-v2" in head or "veutil" in head), qml.name


def test_screenshot_renders(gui, tmp_path):
    out = tmp_path / "gui.png"
    gs.screenshot(out, gui)
    from PySide6.QtGui import QImage
    image = QImage(str(out))
    assert (image.width(), image.height()) == (gs.SHOT_WIDTH, gs.SHOT_HEIGHT)
    colours = {image.pixel(x, y) for x in range(0, image.width(), 7) for y in range(0, image.height(), 7)}
    assert len(colours) > 20, "the page did not draw"


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
