"""venus_publisher as a real process on a private dbus-daemon, fed by test publishers under the real service
names; gdbus and dbus-send are the D-Bus clients."""
from __future__ import annotations

import signal
import time

import pytest

from common import messages as m
from tests.support import wait_for
from tests.test_venus_publisher_support import (ACLOAD, ALARM, DCSYSTEM, Feeds, bus_names, ctrl_settings, ctrl_status,
                                                dcload, dtu_status, grid, inverter, items, meter_status,
                                                set_value, start_publisher, until, value, venus_subscriber,
                                                victron_names)

pytestmark = pytest.mark.timeout(120)

MANDATORY = {"/Mgmt/ProcessName": "s", "/Mgmt/ProcessVersion": "s", "/Mgmt/Connection": "s",
             "/DeviceInstance": "i", "/ProductId": "i", "/ProductName": "s", "/HardwareVersion": "i",
             "/Connected": "i", "/CustomName": "s"}


@pytest.fixture
def feeds(rundir):
    f = Feeds(rundir)
    yield f
    f.close()


def feed_all(feeds, serials=("1141", "1142"), relay=None):
    feeds.dtu.publish(m.DTU_STATUS, dtu_status(list(serials)))
    for index, serial in enumerate(serials):
        feeds.dtu.publish(m.DTU_INVERTER, inverter(serial, index, f"Inv{serial}", dc_power_w=200.0 + index,
                                                   dc_current_a=4.0 + index))
    feeds.shelly.publish(m.METER_GRID, grid(123.0))
    feeds.shelly.publish(m.METER_STATUS, meter_status("grid"))
    feeds.ctrl.publish(m.CTRL_STATUS, ctrl_status({"controller": 0, "grid_meter": 1}))
    feeds.ctrl.publish(m.CTRL_SETTINGS, ctrl_settings())


def test_every_service_path_type_and_value(private_dbus, procs, rundir, feeds):
    proc = start_publisher(procs, rundir)
    until(lambda: feed_all(feeds),
          lambda: value(dcload(1), "/Dc/0/Power")[1] == 201.0 and value(ACLOAD, "/Ac/Power")[1] == 123.0
          and value(ACLOAD, "/MaxFeedIn")[1] == 700, what="all services filled")
    assert victron_names() == sorted([ACLOAD, DCSYSTEM, ALARM, dcload(0), dcload(1)])

    inv = items(dcload(0))
    for path, sig in MANDATORY.items():
        assert inv[path][0] == sig, path
    expect = {"/Dc/0/Voltage": ("d", 52.1), "/Dc/0/Current": ("d", 4.0), "/Dc/0/Power": ("d", 200.0),
              "/Dc/0/Temperature": ("d", 30.0), "/History/EnergyIn": ("d", 12.5), "/Ac/Power": ("d", 200.0),
              "/Limit/Percent": ("d", 25.0), "/Limit/Watt": ("d", 200.0), "/Reachable": ("i", 1),
              "/Producing": ("i", 1), "/Connected": ("i", 1), "/DeviceInstance": ("i", 134),
              "/CustomName": ("s", "Inv1141"), "/Serial": ("s", "1141"), "/Alarms/HighTemperature": ("i", 0),
              "/FirmwareVersion": ("s", "v25.9.11"), "/ProductName": ("s", "OpenDTU")}
    for path, (sig, val) in expect.items():
        assert inv[path][:2] == (sig, val), path
    assert inv["/Dc/0/Power"][2] == "200W" and inv["/Dc/0/Voltage"][2] == "52.10V"
    assert value(dcload(1), "/DeviceInstance") == ("i", 135)

    dcs = items(DCSYSTEM)
    for path, sig in MANDATORY.items():
        assert dcs[path][0] == sig, path
    assert dcs["/Dc/0/Power"][:2] == ("d", 401.0)            # Σ DC power of both inverters
    assert dcs["/Dc/0/Current"][:2] == ("d", 9.0)
    assert dcs["/Dc/0/Voltage"][:2] == ("d", 52.1)           # no battery on the bus: the inverters' DC voltage
    assert dcs["/DeviceInstance"][:2] == ("i", 137)

    ac = items(ACLOAD)
    for path, sig in MANDATORY.items():
        assert ac[path][0] == sig, path
    assert ac["/Role"][:2] == ("s", "acload") and ac["/DeviceInstance"][:2] == ("i", 59)
    assert ac["/CustomName"][:2] == ("s", "Grid by Shelly")
    assert ac["/Ac/Power"][:2] == ("d", 123.0) and ac["/Connected"][:2] == ("i", 1)
    for n in (1, 2, 3):
        assert ac[f"/Ac/L{n}/Power"][:2] == ("d", 41.0)
        assert ac[f"/Ac/L{n}/Voltage"][:2] == ("d", 229.0 + n)
        assert ac[f"/Ac/L{n}/Current"][0] == "d"
        assert ac[f"/Ac/L{n}/Energy/Forward"][:2] == ("d", 9.0 + n)
    assert ac["/Ac/Energy/Forward"][:2] == ("d", 33.0) and ac["/Ac/Energy/Reverse"][:2] == ("d", 6.0)
    for path, val in (("/Control/GridFiltered", 22.5), ("/Control/Target", 25.0), ("/Control/Budget", 650.0),
                      ("/Control/TotalLimit", 400.0), ("/FeedInMinSoc", 30.0), ("/Soc", 80.0)):
        assert ac[path][:2] == ("d", val), path
    assert ac["/Control/RelayWanted"][:2] == ("i", 1) and ac["/Control/Law"][:2] == ("s", "project")
    # for the GX page (gui/): budget 650 W < MaxFeedIn 700 W - balcony 0 W: the battery's discharge limit binds
    assert ac["/Control/CapBy"] == ("i", 3, "battery discharge limit (V x DCL)")
    assert ac["/Control/InverterPower"][:2] == ("d", 400.0)             # Σ AC power of both inverters
    assert ac["/Gateway/Host"][:2] == ("s", "127.0.0.1:9") and ac["/GridMeter/Host"][:2] == ("s", "127.0.0.1:9")
    assert ac["/Inverters/DeviceInstances"][:2] == ("s", "134,135")
    for path, val in (("/MaxFeedIn", 700), ("/PowerFeedInSoc", 96), ("/SocFloatingMax", 74), ("/ZeroPoint", 25)):
        assert ac[path][:2] == ("i", val), path
    alarms = {p: v for p, v in ac.items() if p.startswith("/Alarms/")}
    assert sorted(alarms) == sorted(["/Alarms/GridMeter", "/Alarms/BalconyMeter", "/Alarms/Dtu", "/Alarms/Inverter",
                                     "/Alarms/Temperature", "/Alarms/Battery", "/Alarms/Controller"])
    assert alarms["/Alarms/GridMeter"][:2] == ("i", 1)       # the controller's warning wins over our own 0
    assert alarms["/Alarms/Dtu"][:2] == ("i", 0) and alarms["/Alarms/Controller"][:2] == ("i", 0)
    assert alarms["/Alarms/BalconyMeter"][:2] == ("i", 0)    # not configured
    assert proc.alive()


def test_setvalue_validation_readme_commands_and_confirmation(private_dbus, procs, rundir, feeds):
    start_publisher(procs, rundir)
    sub = venus_subscriber(rundir)
    answers: list[str] = []
    confirmed = {"max_feed_in": 700, "power_feed_in_soc": 96}
    seen: list[dict] = []

    def controller():
        for msg in sub.drain():
            if msg.topic == m.VENUS_SETTING:
                seen.append(msg.body)
        feeds.ctrl.publish(m.CTRL_SETTINGS, ctrl_settings(answers=list(answers), **confirmed))

    try:
        until(controller, lambda: value(ACLOAD, "/MaxFeedIn") == ("i", 700), what="settings shown")
        # the original README's commands, through dbus-send
        assert set_value(ACLOAD, "/MaxFeedIn", "int32:700") == "int32 0"
        assert set_value(ACLOAD, "/MaxFeedIn", "int32:650") == "int32 0"
        assert value(ACLOAD, "/MaxFeedIn") == ("i", 650)            # pending request shown at once
        until(controller, lambda: len([b for b in seen if b["value"] == 650]) >= 2, what="venus.setting repeated")
        request = [b for b in seen if b["value"] == 650][0]
        assert request["name"] == "max_feed_in"
        # the controller confirms with what it put in force (here: clamped to 640)
        confirmed["max_feed_in"] = 640
        answers.append(request["request_id"])
        until(controller, lambda: value(ACLOAD, "/MaxFeedIn") == ("i", 640), what="confirmed value shown")
        count = len(seen)
        for _ in range(8):
            controller()
            time.sleep(0.25)
        assert not [b for b in seen[count:] if b["request_id"] == request["request_id"]], "repeated after confirm"

        assert set_value(ACLOAD, "/PowerFeedInSoc", "int32:60") == "int32 0"
        until(controller, lambda: any(b["name"] == "power_feed_in_soc" and b["value"] == 60 for b in seen),
              what="PowerFeedInSoc request")
        assert set_value(ACLOAD, "/SocFloatingMax", "int32:73") == "int32 2"     # README example: below 74
        assert set_value(ACLOAD, "/SocFloatingMax", "int32:126") == "int32 2"
        assert set_value(ACLOAD, "/SocFloatingMax", "int32:100") == "int32 0"
        # out of range, wrong type: rejected, unchanged, logged
        for path, typed, code in (("/MaxFeedIn", "int32:801", 2), ("/MaxFeedIn", "int32:-1", 2),
                                  ("/MaxFeedIn", "string:abc", 1), ("/MaxFeedIn", "double:600.5", 1),
                                  ("/MaxFeedIn", "boolean:true", 1), ("/PowerFeedInSoc", "int32:9", 2),
                                  ("/PowerFeedInSoc", "int32:100", 2), ("/ZeroPoint", "int32:201", 2),
                                  ("/ZeroPoint", "int32:-5", 2)):
            assert set_value(ACLOAD, path, typed) == f"int32 {code}", (path, typed)
        assert value(ACLOAD, "/MaxFeedIn") == ("i", 640)
        assert value(ACLOAD, "/ZeroPoint") == ("i", 25)
        assert set_value(ACLOAD, "/ZeroPoint", "string:40") == "int32 0"          # `dbus -y ... SetValue 40`
        until(controller, lambda: any(b["name"] == "zero_point" and b["value"] == 40 for b in seen),
              what="ZeroPoint request")
        assert not any(b["value"] in (801, -1, 9, 100, 201, 73, 126) and b["name"] != "soc_floating_max"
                       for b in seen)
        assert not any(b["name"] == "soc_floating_max" and b["value"] != 100 for b in seen)
        # read-only paths refuse
        assert set_value(ACLOAD, "/Ac/Power", "double:5.0") == "int32 1"
        assert set_value(ACLOAD, "/FeedInMinSoc", "int32:5") == "int32 1"
        # CustomName is writable
        assert set_value(ACLOAD, "/CustomName", "string:Meter") == "int32 0"
        assert value(ACLOAD, "/CustomName") == ("s", "Meter")
        log = procs.procs[0].output()
        assert "/MaxFeedIn: SetValue 801 rejected: 801 outside 0..800" in log
        assert "SetValue 'abc' refused, not coercible" in log
    finally:
        sub.close()


def test_inverters_come_and_go_and_stale_values_go_invalid(private_dbus, procs, rundir, feeds):
    start_publisher(procs, rundir, relay={"keepalive_url": "http://127.0.0.1:9/on",
                                          "switchoff_url": "http://127.0.0.1:9/off", "interval": 5})
    serials = ["A1", "B2"]
    fresh_inverters = {"A1", "B2"}

    def feed(grid_on=True, ctrl_on=True):
        feeds.dtu.publish(m.DTU_STATUS, dtu_status(serials))
        for index, serial in enumerate(serials):
            if serial in fresh_inverters:
                feeds.dtu.publish(m.DTU_INVERTER, inverter(serial, index, serial, dc_power_w=100.0))
        if grid_on:
            feeds.shelly.publish(m.METER_GRID, grid(50.0))
        if ctrl_on:
            feeds.ctrl.publish(m.CTRL_STATUS, ctrl_status())
            feeds.ctrl.publish(m.CTRL_SETTINGS, ctrl_settings())

    until(feed, lambda: value(dcload(1), "/Dc/0/Power") == ("d", 100.0), what="two dcloads")
    # a third inverter appears
    serials.append("C3")
    fresh_inverters.add("C3")
    until(feed, lambda: value(dcload(2), "/Dc/0/Power") == ("d", 100.0), what="third dcload")
    assert value(dcload(2), "/CustomName") == ("s", "C3") and value(dcload(2), "/DeviceInstance") == ("i", 136)
    until(feed, lambda: value(DCSYSTEM, "/Dc/0/Power") == ("d", 300.0), what="Σ of three")
    # the last one goes away: its service goes
    serials.remove("C3")
    until(feed, lambda: dcload(2) not in bus_names(), what="third dcload removed")
    until(feed, lambda: value(DCSYSTEM, "/Dc/0/Power") == ("d", 200.0), what="Σ of two")
    # B2 stops reporting: its values go invalid, /Connected 0, Σ leaves it out, inverter alarm warns
    fresh_inverters.discard("B2")
    until(feed, lambda: value(dcload(1), "/Dc/0/Power") == ("ai", None), what="stale inverter invalid")
    assert value(dcload(1), "/Connected") == ("i", 0) and value(dcload(1), "/Dc/0/Voltage") == ("ai", None)
    assert value(dcload(0), "/Dc/0/Power") == ("d", 100.0) and value(dcload(0), "/Connected") == ("i", 1)
    assert value(DCSYSTEM, "/Dc/0/Power") == ("d", 100.0)
    assert value(ACLOAD, "/Alarms/Inverter") == ("i", 1)
    # the grid meter and the controller go silent
    until(lambda: feed(grid_on=False, ctrl_on=False),
          lambda: value(ACLOAD, "/Ac/Power") == ("ai", None) and value(ACLOAD, "/Alarms/Controller") == ("i", 2),
          what="grid and controller stale")
    assert value(ACLOAD, "/Connected") == ("i", 0) and value(ACLOAD, "/Ac/L1/Power") == ("ai", None)
    assert value(ACLOAD, "/Alarms/GridMeter") == ("i", 2)
    assert value(ACLOAD, "/Control/Target") == ("ai", None) and value(ACLOAD, "/FeedInMinSoc") == ("ai", None)
    # the relay is known open: the dcsystem shows a valid 0
    def relay_open():
        feeds.shelly.publish(m.RELAY_STATE, {"command_on": False, "command_seq": 1, "ok": True, "on": False})
        feed()

    until(relay_open,
          lambda: value(DCSYSTEM, "/Dc/0/Power") == ("d", 0.0), what="relay off -> 0 W")
    assert value(DCSYSTEM, "/Dc/0/Current") == ("d", 0.0)
    assert value(ACLOAD, "/FeedInRelay") == ("i", 0)
    # everything silent: the DTU alarm rises
    until(lambda: None, lambda: value(ACLOAD, "/Alarms/Dtu") == ("i", 2), what="DTU stale")
    assert value(dcload(0), "/Dc/0/Power") == ("ai", None)


def test_kill_9_and_restart_reregisters_everything(private_dbus, procs, rundir, feeds):
    proc = start_publisher(procs, rundir)
    until(lambda: feed_all(feeds), lambda: len(victron_names()) == 5, what="five services")
    before = victron_names()
    procs.stop(proc, signal.SIGKILL)
    wait_for(lambda: victron_names() == [], 20, what="every name released after kill -9")
    proc2 = start_publisher(procs, rundir, label="venus_publisher_again")
    until(lambda: feed_all(feeds), lambda: victron_names() == before
          and value(dcload(1), "/Dc/0/Power") == ("d", 201.0), what="every service back")
    assert value(ACLOAD, "/MaxFeedIn") == ("i", 700)
    assert "Traceback" not in proc2.output()
    procs.stop(proc2)                                       # SIGTERM: clean exit, names released
    assert proc2.popen.returncode == 0
    assert victron_names() == []
