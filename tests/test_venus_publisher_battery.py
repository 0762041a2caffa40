"""Battery monitoring of venus_publisher: discovery, signals (no polling), loss, replacement, switch and ambiguity.
Battery and system services are real helper processes with our own VeDbusService on a private dbus-daemon."""
from __future__ import annotations

import signal
import time

import pytest

from common import messages as m
from tests.support import wait_for
from tests.test_vedbus_helper import HelperService
from tests.test_venus_publisher_support import (ACLOAD, DCSYSTEM, start_publisher, value, venus_subscriber)

pytestmark = pytest.mark.timeout(120)

B1 = "com.victronenergy.battery.ttyUSB0"
B2 = "com.victronenergy.battery.socketcan_can0"
SYSTEM = "com.victronenergy.system"


def battery_spec(name: str, soc: float = 55.0, voltage: float = 52.4, instance: int = 512) -> dict:
    return {"name": name, "mandatory": {"device_instance": instance, "product_name": "Test battery"},
            "paths": [["/Soc", soc], ["/Dc/0/Voltage", voltage], ["/Dc/0/Current", -3.5], ["/Dc/0/Power", -183.4],
                      ["/Dc/0/Temperature", 21.5], ["/Info/MaxChargeCurrent", 50.0],
                      ["/Info/MaxDischargeCurrent", 100.0], ["/Info/MaxChargeVoltage", 55.2]]}


class BatteryFeed:
    """Collects venus.battery from the real publisher."""

    def __init__(self, rundir):
        self.sub = venus_subscriber(rundir)
        self.bodies: list[tuple[float, dict]] = []

    def poll(self):
        for msg in self.sub.drain():
            if msg.topic == m.VENUS_BATTERY:
                self.bodies.append((time.monotonic(), msg.body))
        return self.bodies[-1][1] if self.bodies else None

    def wait(self, predicate, what: str, timeout_s: float = 20.0) -> dict:
        return wait_for(lambda: (lambda b: b if b is not None and predicate(b) else None)(self.poll()),
                        timeout_s, interval_s=0.05, what=what)


@pytest.fixture
def battery_feed(rundir):
    feed = BatteryFeed(rundir)
    yield feed
    feed.sub.close()


def test_single_battery_followed_by_signals_then_lost_and_replaced(private_dbus, procs, rundir, battery_feed):
    monitor = procs.start("dbus-monitor", ["dbus-monitor", "--system",
                                           "type='method_call',interface='com.victronenergy.BusItem'"])
    wait_for(lambda: "NameAcquired" in monitor.output() or "NameLost" in monitor.output(), 20, what="monitor")
    bat = HelperService(procs, rundir, battery_spec(B1))
    proc = start_publisher(procs, rundir)
    body = battery_feed.wait(lambda b: b["present"], "battery found")
    assert body["service"] == B1
    assert (body["soc_pct"], body["voltage_v"], body["current_a"], body["ccl_a"], body["dcl_a"],
            body["temperature_c"]) == (55.0, 52.4, -3.5, 50.0, 100.0, 21.5)
    assert body["age_s"] is not None and 0 <= body["age_s"] < 5
    # the dcsystem takes the battery's voltage and temperature
    wait_for(lambda: value(DCSYSTEM, "/Dc/0/Voltage") == ("d", 52.4), 20, what="dcsystem voltage from battery")
    assert value(DCSYSTEM, "/Dc/0/Temperature") == ("d", 21.5)
    wait_for(lambda: value(ACLOAD, "/Alarms/Battery") == ("i", 0), 20, what="battery alarm ok")

    # changes arrive by signal, fast, and the publisher never polls the battery
    t0 = time.monotonic()
    bat.send({"op": "set", "values": {"/Soc": 56.0}})
    battery_feed.wait(lambda b: b["soc_pct"] == 56.0, "SOC change by PropertiesChanged")
    assert time.monotonic() - t0 < 5
    bat.send({"op": "batch", "values": {"/Info/MaxChargeCurrent": 20.0, "/Dc/0/Voltage": 53.0}})
    battery_feed.wait(lambda b: b["ccl_a"] == 20.0 and b["voltage_v"] == 53.0, "batched change by ItemsChanged")
    bat.send({"op": "set", "values": {"/Info/MaxDischargeCurrent": None}})
    battery_feed.wait(lambda b: b["dcl_a"] is None and b["present"], "invalid value -> None")
    # published at least every 2 s even without changes
    start = len(battery_feed.bodies)
    wait_for(lambda: battery_feed.poll() is not None and len(battery_feed.bodies) - start >= 3, 20,
             what="periodic venus.battery")
    times = [t for t, _ in battery_feed.bodies[start:]]
    assert max(b - a for a, b in zip(times, times[1:])) < 2.5
    calls = [line for line in monitor.output().splitlines() if f"destination={B1}" in line]
    assert len(calls) == 2, calls          # one GetValue of /DeviceInstance, one GetItems: no polling
    assert "path=/DeviceInstance; interface=com.victronenergy.BusItem; member=GetValue" in calls[0]
    assert "path=/; interface=com.victronenergy.BusItem; member=GetItems" in calls[1]

    # the battery disappears: present False, values None, alarm
    procs.stop(bat.proc, signal.SIGKILL)
    body = battery_feed.wait(lambda b: not b["present"], "battery lost")
    assert body["soc_pct"] is None and body["voltage_v"] is None and body["age_s"] is None
    assert "no battery" in body["detail"]
    wait_for(lambda: value(ACLOAD, "/Alarms/Battery") == ("i", 2), 20, what="battery alarm")
    # it comes back under the same name (a restarted driver): followed again with fresh values
    HelperService(procs, rundir, battery_spec(B1, soc=70.0))
    body = battery_feed.wait(lambda b: b["present"] and b["soc_pct"] == 70.0, "same battery back")
    # replaced by another battery
    procs.stop(procs.procs[-1])
    battery_feed.wait(lambda b: not b["present"], "battery gone again")
    HelperService(procs, rundir, battery_spec(B2, soc=33.0))
    body = battery_feed.wait(lambda b: b["present"] and b["service"] == B2 and b["soc_pct"] == 33.0,
                             "another battery")
    assert proc.alive() and "Traceback" not in proc.output()


def test_several_batteries_system_choice_and_switch(private_dbus, procs, rundir, battery_feed):
    HelperService(procs, rundir, battery_spec(B1, soc=11.0))
    HelperService(procs, rundir, battery_spec(B2, soc=22.0, instance=513))
    proc = start_publisher(procs, rundir)
    body = battery_feed.wait(lambda b: b.get("detail") and "2 batteries" in b["detail"], "ambiguity reported")
    assert not body["present"] and body["service"] is None and "battery_service" in body["detail"]
    wait_for(lambda: value(ACLOAD, "/Alarms/Battery") == ("i", 2), 20, what="alarm while ambiguous")
    # Venus's system service names the active battery ("class/DeviceInstance", as systemcalc does): it wins
    system = HelperService(procs, rundir, {"name": SYSTEM,
                                           "paths": [["/ActiveBatteryService", "com.victronenergy.battery/513"]]})
    body = battery_feed.wait(lambda b: b["present"] and b["service"] == B2, "system's choice")
    assert body["soc_pct"] == 22.0
    # the system switches to the other battery
    system.send({"op": "set", "values": {"/ActiveBatteryService": "com.victronenergy.battery/512"}})
    body = battery_feed.wait(lambda b: b["present"] and b["service"] == B1 and b["soc_pct"] == 11.0, "switch")
    # systemcalc's /Dc/Battery/BatteryService (a D-Bus name) is taken first when it exists
    system.send({"op": "add", "path": "/Dc/Battery/BatteryService", "value": B2})
    battery_feed.wait(lambda b: b["present"] and b["service"] == B2 and b["soc_pct"] == 22.0, "BatteryService")
    # the system service goes away: back to ambiguity
    procs.stop(system.proc)
    battery_feed.wait(lambda b: not b["present"] and "2 batteries" in (b.get("detail") or ""), "ambiguous again")
    procs.stop(proc)
    # a configured name resolves the ambiguity
    start_publisher(procs, rundir, label="venus_publisher_configured", venus={"battery_service": B2})
    battery_feed.wait(lambda b: b["present"] and b["service"] == B2 and b["soc_pct"] == 22.0, "configured battery")


def test_choose_battery_rules():
    from services.venus_publisher.battery import choose_battery
    both = {B1: 512, B2: 513}
    assert choose_battery(False, None, {B1: 512}) == (B1, None)
    assert choose_battery(False, None, {}) == (None, "no battery service on D-Bus")
    name, detail = choose_battery(False, None, both)
    assert name is None and "2 batteries" in detail and "battery_service" in detail
    assert choose_battery(False, None, both, configured=B2) == (B2, None)
    name, detail = choose_battery(False, None, both, configured="com.victronenergy.battery.nope")
    assert name is None and "not on D-Bus" in detail
    # the system's choice wins over the rules above, in systemcalc's two formats
    assert choose_battery(True, "com.victronenergy.battery/513", both) == (B2, None)
    assert choose_battery(True, "com.victronenergy.battery/513", both, system_service=B1) == (B1, None)
    assert choose_battery(True, "com.victronenergy.vebus.ttyS3", both) == ("com.victronenergy.vebus.ttyS3", None)
    # a system without a choice (or one we cannot resolve) falls back to the rules
    assert choose_battery(True, None, {B1: 512}) == (B1, None)
    assert choose_battery(True, "com.victronenergy.battery/999", {B1: 512}) == (B1, None)
    assert choose_battery(True, "garbage/x", both)[0] is None
    assert choose_battery(True, 5, {B1: None}) == (B1, None)


def test_a_disconnected_battery_is_not_present_and_quiet_values_grow_old(private_dbus, procs, rundir, battery_feed):
    bat = HelperService(procs, rundir, battery_spec(B1))
    proc = start_publisher(procs, rundir)
    battery_feed.wait(lambda b: b["present"], "battery found")
    # no value changes: venus_publisher keeps publishing, and the values' age grows (the controller's clue)
    body = battery_feed.wait(lambda b: b["present"] and b["age_s"] >= 3.0, "age_s growing without changes")
    assert body["soc_pct"] == 55.0
    # the driver lost its BMS: /Connected 0 with the old values still on D-Bus
    bat.send({"op": "set", "values": {"/Connected": 0}})
    body = battery_feed.wait(lambda b: not b["present"], "/Connected 0 -> not present")
    assert body["soc_pct"] is None and body["dcl_a"] is None and body["age_s"] is None
    assert "/Connected = 0" in body["detail"]
    # nor does the dcsystem show its last voltage (no inverter data here: invalid)
    wait_for(lambda: value(DCSYSTEM, "/Dc/0/Voltage") == ("ai", None), 10, 0.1, "dcsystem voltage invalid")
    bat.send({"op": "set", "values": {"/Connected": 1, "/Soc": 56.0}})
    body = battery_feed.wait(lambda b: b["present"] and b["soc_pct"] == 56.0, "connected again")
    assert body["age_s"] < 3.0
    assert proc.alive() and "Traceback" not in proc.output()


@pytest.mark.parametrize("raw", [1e300, -1e16, float("inf"), float("nan"), 10 ** 30])
def test_an_absurd_battery_value_is_published_as_unknown(raw):
    from services.venus_publisher.battery import BatteryMonitor
    monitor = BatteryMonitor(None, "", lambda: None, lambda: 100.0)
    monitor.chosen, monitor.ready, monitor.last_update_t = B1, True, 99.0
    monitor.values = {"/Soc": 50.0, "/Dc/0/Voltage": 52.0, "/Info/MaxDischargeCurrent": raw, "/Connected": 1}
    body = m.check_body(m.VENUS_BATTERY, monitor.body(100.0))      # sendable: no SchemaError
    assert body["present"] and body["dcl_a"] is None and body["soc_pct"] == 50.0 and body["age_s"] == 1.0
