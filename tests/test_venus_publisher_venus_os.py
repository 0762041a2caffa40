"""venus_publisher with stand-ins of localsettings and venus-platform on a private bus (sim/venus_services.py):
notifications and the standing alarm, VRM instances from localsettings, settings written through to
localsettings. The notification rules themselves are tested in-process below (services/venus_publisher/notify.py).
"""
from __future__ import annotations

import json
import time

import pytest

from common import messages as m
from common.settings import BY_NAME
from services.venus_publisher.model import ALARM, OK, WARNING, Inputs, Params
from services.venus_publisher.notify import (ALL_OK_NAME, INJECT_ALARM, INJECT_INFO, INJECT_WARNING, Injection,
                                             Notifier, cause_texts, standing_alarm)
from sim.venus_services import LocalSettings, Platform
from tests.support import wait_for
from tests.test_vedbus_helper import HelperService
from tests.test_venus_publisher_battery import battery_spec
from tests.test_venus_publisher_support import (ACLOAD, ALARM as ALARM_SVC, Feeds, ctrl_settings, ctrl_status,
                                                dtu_status, grid, inverter, meter_status, set_value, start_publisher,
                                                until, value, venus_subscriber, victron_names)

MAX_FEED_IN = BY_NAME["max_feed_in"].local_path
SFM = BY_NAME["soc_floating_max"].local_path


# ------------------------------------------------------------------ in-process: the rules

def test_rising_edges_are_injected_once_rate_limited_and_cleared_with_info():
    n = Notifier(min_interval_s=300)
    causes = {"grid_meter": "dbus-opendtu: grid meter unreachable (timeout) — inverters at minimum"}
    assert n.update({"grid_meter": None}, {}, 0) == []                  # unknown at start: no event
    assert n.update({"grid_meter": OK}, {}, 1) == []
    assert n.update({"grid_meter": ALARM}, causes, 2) == [Injection(INJECT_ALARM, causes["grid_meter"])]
    assert n.update({"grid_meter": ALARM}, causes, 3) == []                             # standing, not repeated
    assert n.update({"grid_meter": OK}, causes, 4) == [Injection(INJECT_INFO, "dbus-opendtu: grid meter ok again")]
    assert n.update({"grid_meter": ALARM}, causes, 10) == []                             # flapping: rate-limited
    assert n.update({"grid_meter": OK}, causes, 11) == []                                # ... and so its clear
    assert n.update({"grid_meter": WARNING}, causes, 400)[0].kind == INJECT_WARNING     # after the interval
    assert n.update({"grid_meter": ALARM}, causes, 401)[0].kind == INJECT_ALARM         # worse: always told
    assert n.update({"grid_meter": WARNING}, causes, 402) == []
    assert n.update({"grid_meter": ALARM}, causes, 403) == []                           # flapping between them
    assert n.update({"grid_meter": ALARM}, causes, 800) == []
    assert Injection(INJECT_ALARM, "a\tb\nc").wire("dev") == "1\tdev\ta b c"


def test_nothing_is_told_while_the_sources_come_up_and_what_is_still_wrong_is_told_after():
    n = Notifier(quiet_until=30)
    assert n.update({"dtu": ALARM, "balcony_meter": WARNING}, {}, 1) == []
    assert n.update({"dtu": OK, "balcony_meter": WARNING}, {}, 5) == []           # came up: no "ok again" either
    assert [e.kind for e in n.update({"dtu": OK, "balcony_meter": WARNING}, {}, 30)] == [INJECT_WARNING]


def test_cause_texts_name_the_cause_and_never_a_voltage():
    inputs = Inputs(started_t=0.0)
    now = 100.0
    inputs.on_message(m.METER_STATUS, meter_status("grid", ok=False), now)
    levels = {"grid_meter": ALARM, "balcony_meter": WARNING, "dtu": OK, "inverter": OK, "temperature": None,
              "battery": ALARM, "controller": ALARM}
    from services.venus_publisher.model import BatteryView
    texts = cause_texts(inputs, BatteryView(detail="no battery service on D-Bus"), levels, now, Params(), 500)
    assert texts["grid_meter"] == "dbus-opendtu: grid meter unreachable (timeout, 2 errors in a row) — " \
                                  "inverters at minimum"
    assert "500 W assumed" in texts["balcony_meter"] and "no battery service" in texts["battery"]
    assert set(texts) == {"grid_meter", "balcony_meter", "battery", "controller"}
    assert not any("voltage" in t.lower() for t in texts.values())
    level, name = standing_alarm(levels, texts)
    assert level == 2 and name.startswith("dbus-opendtu: grid meter unreachable") and name.endswith("(+2 more)")
    assert standing_alarm({"grid_meter": WARNING}, texts) == (0, ALL_OK_NAME)


# ------------------------------------------------------------------ on the private bus

@pytest.fixture
def feeds(rundir):
    f = Feeds(rundir)
    yield f
    f.close()


def feed(feeds, with_grid=True, settings=None):
    feeds.dtu.publish(m.DTU_STATUS, dtu_status(["1141"]))
    feeds.dtu.publish(m.DTU_INVERTER, inverter("1141", 0, "Inv1141"))
    if with_grid:
        feeds.shelly.publish(m.METER_GRID, grid(123.0))
        feeds.shelly.publish(m.METER_STATUS, meter_status("grid"))
    else:
        feeds.shelly.publish(m.METER_STATUS, meter_status("grid", ok=False))
    feeds.ctrl.publish(m.CTRL_STATUS, ctrl_status({"controller": 0}))
    feeds.ctrl.publish(m.CTRL_SETTINGS, ctrl_settings(**(settings or {})))


@pytest.mark.timeout(120)
def test_notifications_and_the_standing_alarm_name_the_cause(private_dbus, procs, rundir, feeds):
    with Platform() as platform:
        HelperService(procs, rundir, battery_spec("com.victronenergy.battery.ttyUSB0"))
        proc = start_publisher(procs, rundir)
        until(lambda: feed(feeds), lambda: value(ALARM_SVC, "/CustomName") == ("s", ALL_OK_NAME)
              and value(ACLOAD, "/Alarms/GridMeter") == ("i", 0), what="all ok")
        assert value(ALARM_SVC, "/Alarm") == ("i", 0) and value(ALARM_SVC, "/DeviceInstance") == ("i", 139)
        # the grid meter goes silent (timeouts): its alarm rises, one event, the standing alarm names it
        until(lambda: feed(feeds, with_grid=False), lambda: value(ALARM_SVC, "/Alarm") == ("i", 2),
              what="standing alarm")
        name = value(ALARM_SVC, "/CustomName")[1]
        assert name == "dbus-opendtu: grid meter unreachable (timeout, 2 errors in a row) — inverters at minimum"
        assert value(ACLOAD, "/Alarms/GridMeter") == ("i", 2)
        until(lambda: feed(feeds, with_grid=False), lambda: (1, "dbus-opendtu alarms", name) in
              platform.notifications(), what="the alarm injected")
        # back: the alarm clears, an info entry, nothing repeated meanwhile
        until(lambda: feed(feeds), lambda: value(ALARM_SVC, "/Alarm") == ("i", 0), what="cleared")
        until(lambda: feed(feeds),
              lambda: (2, "dbus-opendtu alarms", "dbus-opendtu: grid meter ok again") in platform.notifications(),
              what="the info entry")
        assert [e for e in platform.notifications() if e[0] == 1] == [(1, "dbus-opendtu alarms", name)]
        assert proc.alive()


@pytest.mark.timeout(120)
def test_without_the_inject_path_the_standing_alarm_still_works(private_dbus, procs, rundir, feeds):
    with Platform(with_inject=False):
        HelperService(procs, rundir, battery_spec("com.victronenergy.battery.ttyUSB0"))
        proc = start_publisher(procs, rundir)
        until(lambda: feed(feeds), lambda: value(ALARM_SVC, "/Alarm") == ("i", 0), what="all ok")
        until(lambda: feed(feeds, with_grid=False), lambda: value(ALARM_SVC, "/Alarm") == ("i", 2),
              what="standing alarm")
        wait_for(lambda: "alarms show through the standing alarm only" in proc.output(), 10, what="one log line")
        assert proc.output().count("alarms show through the standing alarm only") == 1


@pytest.mark.timeout(150)
def test_instances_and_settings_live_in_localsettings(private_dbus, procs, rundir, feeds):
    with LocalSettings() as settings:
        # another device already holds dcload:134: localsettings hands out the next free instance
        assert settings.call(settings.add, "/Settings/Devices/other/ClassAndVrmInstance", "dcload:134", "s",
                             0, 0) == (0, "dcload:134")
        with open(f"{rundir}/venus_publisher_names.json", "w") as handle:     # a name given before localsettings
            json.dump({"dcload:1141": "Garage"}, handle)
        proc = start_publisher(procs, rundir)
        sub = venus_subscriber(rundir)
        seen = []

        def controller(**values):
            seen.extend(msg.body for msg in sub.drain() if msg.topic == m.VENUS_SETTING)
            feed(feeds, settings=values)

        # the controller's values (from its state file) move to localsettings once
        until(lambda: controller(max_feed_in=650), lambda: settings.value(MAX_FEED_IN) == 650,
              what="state file values migrated")
        assert settings.value("/Settings/DbusOpenDtu/StateFileMigrated") == 1
        ours = "/Settings/Devices/dbusopendtu_dcload_1141/ClassAndVrmInstance"
        assert settings.value(ours) == "dcload:135"
        until(lambda: controller(max_feed_in=650), lambda: value("com.victronenergy.dcload.http_135",
                                                                 "/DeviceInstance") == ("i", 135), what="dcload 135")
        assert settings.value("/Settings/Devices/dbusopendtu_acload/ClassAndVrmInstance") == "acload:59"
        lim = settings.settings[MAX_FEED_IN]
        assert (lim.lo, lim.hi, lim.default) == (0, 800, 700)        # the GUI's spin box reads these

        # the acload's SetValue works as before and writes through
        assert set_value(ACLOAD, "/MaxFeedIn", "int32:555") == "int32 0"
        wait_for(lambda: settings.value(MAX_FEED_IN) == 555, 10, what="written through")
        assert set_value(ACLOAD, "/MaxFeedIn", "int32:900") == "int32 2"
        assert settings.value(MAX_FEED_IN) == 555
        until(lambda: controller(max_feed_in=650), lambda: any(b["value"] == 555 for b in seen), what="request")

        # the user changes the setting in the GUI (localsettings): the controller is asked
        settings.user_sets(MAX_FEED_IN, 420)
        until(lambda: controller(max_feed_in=650), lambda: any(b["value"] == 420 for b in seen),
              what="the GUI's change reaches the controller")
        # the controller moves SocFloatingMax itself: copied to localsettings
        until(lambda: controller(max_feed_in=420, soc_floating_max=88), lambda: settings.value(SFM) == 88,
              what="learned value copied")

        # custom names: the old file's name moved over once; a new one is written to localsettings
        assert settings.value("/Settings/DbusOpenDtu/CustomName/Dcload_1141") == "Garage"
        assert value("com.victronenergy.dcload.http_135", "/CustomName") == ("s", "Garage")
        assert set_value(ACLOAD, "/CustomName", "string:Netz") == "int32 0"
        wait_for(lambda: settings.value("/Settings/DbusOpenDtu/CustomName/Acload") == "Netz", 10, what="name")
        settings.user_sets("/Settings/DbusOpenDtu/CustomName/Dcload_1141", "Carport")     # changed in the GUI
        wait_for(lambda: value("com.victronenergy.dcload.http_135", "/CustomName") == ("s", "Carport"), 10,
                 what="the GUI's name shown")

        # the user gives the acload another VRM instance: it re-registers under it
        settings.user_sets("/Settings/Devices/dbusopendtu_acload/ClassAndVrmInstance", "acload:77")
        until(lambda: controller(max_feed_in=420, soc_floating_max=88),
              lambda: value("com.victronenergy.acload.http_77", "/DeviceInstance") == ("i", 77), what="acload 77")
        assert "com.victronenergy.acload.http_59" not in victron_names()
        assert value("com.victronenergy.acload.http_77", "/MaxFeedIn")[0] == "i"

        # a restart (or a reinstall with a fresh state folder) keeps instances and settings from localsettings
        procs.stop(proc)
        time.sleep(0.2)
        seen.clear()
        start_publisher(procs, rundir, label="venus_publisher2")
        until(lambda: controller(max_feed_in=700), lambda: any(b["value"] == 420 for b in seen),
              what="localsettings' value pushed to a controller that forgot it")
        assert value("com.victronenergy.acload.http_77", "/DeviceInstance") == ("i", 77)
        assert value("com.victronenergy.dcload.http_135", "/DeviceInstance") == ("i", 135)
        assert value("com.victronenergy.acload.http_77", "/CustomName") == ("s", "Netz")


def test_localsettings_is_waited_for_when_asked_and_absent_means_fallback():
    from services.venus_publisher.venus_os import LocalSettings as Client

    class Bus:            # the bus edge: localsettings appears on the third look
        looks = 0

        def name_has_owner(self, name):
            assert name == "com.victronenergy.settings"
            self.looks += 1
            return self.looks >= 3

    slept = []
    assert Client.connect(Bus(), wait_s=60, sleep=slept.append) is not None and slept == [0.5, 0.5]
    assert Client.connect(Bus(), wait_s=0, sleep=slept.append) is None


def test_the_names_file_is_never_a_trap(tmp_path):
    import os
    from services.venus_publisher.app import NAMES_FILE, NameStore
    os.mkfifo(tmp_path / NAMES_FILE)                    # would block a plain open() for reading
    assert NameStore(str(tmp_path)).names == {}
    os.unlink(tmp_path / NAMES_FILE)
    (tmp_path / "elsewhere").write_text('{"acload": "Evil"}')
    os.symlink(tmp_path / "elsewhere", tmp_path / NAMES_FILE)
    store = NameStore(str(tmp_path))
    assert store.get("acload") is None
    store.put("acload", "Netz")
    assert (tmp_path / "elsewhere").read_text() == '{"acload": "Evil"}'     # the link is replaced, not followed
    assert NameStore(str(tmp_path)).get("acload") == "Netz"
