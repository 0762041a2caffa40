"""The GX's grid meter (`[grid_meter] source = dbus`): the pure tracker with a manual clock (reading and timing
rules), then the D-Bus follower in-process against simulated meters on a private dbus-daemon."""
from __future__ import annotations

import math
import threading
import time

import pytest

from common import messages as m
from common.clock import ManualClock
from common.config import ConfigError, parse_config
from common.vedbus import VeDbusService, new_system_bus
from services.venus_publisher.gridmeter import (GETITEMS_RETRY_S, GridMeterTracker, choose_meter, reading,
                                                stale_after_s)
from sim.dbus_thread import DbusSimThread
from sim.grid_dbus import GridMeterDbus
from tests.support import wait_for

A = "com.victronenergy.grid.cgwacs_ttyUSB0_mb1"
B = "com.victronenergy.grid.cg_HQ2201"


def full_items(power=None, phases=(100.0, 50.0, -30.0), refresh_ms=600, connected=1):
    items = {"/DeviceInstance": 30, "/ProductName": "Carlo Gavazzi EM24", "/Connected": connected,
             "/RefreshTime": refresh_ms, "/Ac/Power": power if power is not None else sum(phases)}
    for n, p in enumerate(phases, start=1):
        items.update({f"/Ac/L{n}/Power": p, f"/Ac/L{n}/Voltage": 230.0, f"/Ac/L{n}/Current": 0.5})
    return items


def only(outputs, topic):
    return [body for t, body in outputs if t == topic]


def following(name=A, configured="", items=None, t=0.0):
    tracker = GridMeterTracker(configured)
    tracker.appeared(name, t)
    tracker.instance(name, 30, t)
    assert tracker.chosen == name
    tracker.items(name, items or full_items(), t, initial=True)
    return tracker


# ------------------------------------------------------------------ reading rules

@pytest.mark.parametrize("values, expected", [
    ({"/Ac/Power": 250, "/Ac/L1/Power": 1.0}, 250.0),                     # total preferred, int accepted
    ({"/Ac/Power": None, "/Ac/L1/Power": 100, "/Ac/L3/Power": -40.5}, 59.5),   # invalid total: valid phases
    ({"/Ac/Power": [], "/Ac/L1/Power": 7.0}, 7.0),                        # an empty array is invalid
    ({"/Ac/Power": float("nan"), "/Ac/L2/Power": 3}, 3.0),
    ({"/Ac/Power": True, "/Ac/L1/Power": "12"}, None),                    # neither bool nor text is a power
    ({"/Ac/Power": 0}, 0.0),                                              # zero is valid
    ({"/Ac/Power": 500.0, "/Connected": 0}, None),
    ({"/Ac/Power": 500.0, "/Role": "acload"}, None),
    ({}, None),
])
def test_reading_prefers_valid_total_and_sums_only_valid_phases(values, expected):
    total, phases, error = reading(values)
    assert total == expected
    assert (error is None) == (expected is not None)
    assert all(isinstance(p["power_w"], float) and math.isfinite(p["power_w"]) for p in phases)


def test_reading_carries_per_phase_power_where_the_meter_has_it():
    total, phases, _ = reading({"/Ac/L1/Power": 120, "/Ac/L2/Power": None, "/Ac/L3/Power": -20.0,
                                "/Ac/L1/Voltage": 231.5, "/Ac/L1/Energy/Forward": 12.5})
    assert total == 100.0
    assert [p["power_w"] for p in phases] == [120.0, -20.0]
    assert phases[0]["voltage_v"] == 231.5 and phases[0]["energy_import_kwh"] == 12.5


@pytest.mark.parametrize("refresh_ms, limit_s", [(None, 5.0), (20, 5.0), (600, 5.0), (2000, 6.0), (2500, 7.5),
                                                 (0, 5.0), (-5, 5.0), ([], 5.0)])
def test_stale_after_is_max_of_5s_and_three_refresh_times(refresh_ms, limit_s):
    assert stale_after_s(refresh_ms) == limit_s


def test_choose_lowest_instance_or_the_configured_service():
    assert choose_meter({A: 40, B: 31}) == (B, None)
    assert choose_meter({A: 40, B: 31}, configured=A) == (A, None)
    chosen, detail = choose_meter({B: 31}, configured=A)
    assert chosen is None and A in detail
    assert choose_meter({A: None, B: 50}) == (B, None)              # unknown instance: not (yet) a candidate
    assert choose_meter({})[0] is None
    assert choose_meter({"com.victronenergy.acload.http_59": 1, A: 40}) == (A, None)


# ------------------------------------------------------------------ timing rules (manual clock)

def test_getitems_alone_is_no_sample_and_silence_from_the_start_goes_stale():
    tracker = following(t=0.0)
    assert tracker.verdict(0.0)[0] == "starting"
    assert only(tracker.tick(4.9), m.METER_GRID) == []
    assert tracker.verdict(5.1)[0] == "stale"       # a driver that never signals: its cached values prove nothing


def test_each_signal_is_a_sample_and_silence_is_stale_after_the_limit():
    tracker = following(items=full_items(refresh_ms=2500), t=0.0)
    out = tracker.items(A, {"/Ac/L1/Voltage": 231.0}, 1.0)
    (grid,) = only(out, m.METER_GRID)
    assert grid["power_w"] == 120.0 and grid["sample_t_mono"] == 1.0 and grid["sign"] == "positive_is_import"
    assert [p["power_w"] for p in grid["phases"]] == [100.0, 50.0, -30.0]
    assert grid["device"] == "Carlo Gavazzi EM24"
    m.check_body(m.METER_GRID, grid)
    (status,) = only(out, m.METER_STATUS)
    assert status["ok"] and status["role"] == "grid"
    # 3 x 2.5 s = 7.5 s > 5 s
    assert only(tracker.tick(8.4), m.METER_STATUS) in ([], [status | {"last_ok_t_mono": 1.0}])
    assert tracker.verdict(8.5)[0] is None
    (stale,) = only(tracker.tick(8.6), m.METER_STATUS)
    assert stale["ok"] is False and stale["error_kind"] == "stale" and stale["error_count"] == 1
    m.check_body(m.METER_STATUS, stale)
    # the next signal makes it fresh again at once
    out = tracker.items(A, {"/Ac/Power": 125.0}, 9.0)
    assert only(out, m.METER_GRID)[0]["power_w"] == 125.0
    assert only(out, m.METER_STATUS)[0]["ok"] is True


def test_changed_power_goes_out_at_once_an_unchanged_one_at_most_every_second():
    tracker = following(t=0.0)
    assert len(only(tracker.items(A, {"/Ac/L1/Voltage": 231.0}, 1.0), m.METER_GRID)) == 1
    assert only(tracker.items(A, {"/Ac/L1/Voltage": 230.0}, 1.5), m.METER_GRID) == []
    assert only(tracker.items(A, {"/Ac/Power": 121.0}, 1.6), m.METER_GRID)[0]["power_w"] == 121.0
    assert only(tracker.items(A, {"/Ac/L1/Power": 100.5}, 1.7), m.METER_GRID)[0]["phases"][0]["power_w"] == 100.5
    assert only(tracker.items(A, {"/Ac/L1/Voltage": 231.0}, 2.69), m.METER_GRID) == []
    assert len(only(tracker.items(A, {"/Ac/L1/Voltage": 230.0}, 2.71), m.METER_GRID)) == 1


@pytest.mark.parametrize("change, kind", [({"/Connected": 0}, "connection"), ({"/Ac/Power": None, "/Ac/L1/Power": None,
                                          "/Ac/L2/Power": None, "/Ac/L3/Power": None}, "invalid_reading"),
                                          ({"/Role": "pvinverter"}, "unsupported")])
def test_disconnected_or_invalid_meter_publishes_no_sample(change, kind):
    tracker = following(t=0.0)
    tracker.items(A, {"/Ac/L1/Voltage": 231.0}, 1.0)
    out = tracker.items(A, change, 1.2)
    assert only(out, m.METER_GRID) == []
    assert only(out, m.METER_STATUS)[0]["error_kind"] == kind
    assert only(tracker.items(A, {"/Ac/L1/Voltage": 230.0}, 2.5), m.METER_GRID) == []


def test_status_repeats_every_5s_and_the_meter_leaving_is_at_once_no_meter():
    tracker = following(t=0.0)
    tracker.items(A, {"/Ac/L1/Voltage": 231.0}, 1.0)
    assert only(tracker.items(A, {"/Ac/L1/Voltage": 230.0}, 5.0), m.METER_STATUS) == []
    assert only(tracker.tick(5.9), m.METER_STATUS) == []
    assert only(tracker.tick(6.1), m.METER_STATUS)[0]["ok"] is True
    (gone,) = only(tracker.gone(A, 6.2), m.METER_STATUS)
    assert gone["ok"] is False and gone["error_kind"] == "connection" and tracker.chosen is None
    assert tracker.items(A, {"/Ac/Power": 1.0}, 6.3) == []       # a late signal of a gone meter is ignored


def test_a_lower_instance_appearing_takes_over_and_values_start_over():
    tracker = following(A, t=0.0)
    tracker.items(A, {"/Ac/L1/Voltage": 231.0}, 1.0)
    tracker.appeared(B, 2.0)
    assert tracker.chosen == A
    tracker.instance(B, 10, 2.1)
    assert tracker.chosen == B
    assert tracker.items(A, {"/Ac/Power": 5.0}, 2.2) == []        # the old meter is no longer read
    assert tracker.verdict(2.2)[0] == "starting"


def test_configured_service_wins_over_a_lower_instance():
    tracker = GridMeterTracker(configured=A)
    tracker.appeared(B, 0.0)
    tracker.instance(B, 1, 0.0)
    assert tracker.chosen is None and tracker.verdict(0.0)[0] == "connection"
    tracker.appeared(A, 0.1)
    assert tracker.chosen == A


# ------------------------------------------------------------------ config

def _cfg(grid: str) -> str:
    return f"[opendtu]\nhost = 127.0.0.1\n[grid_meter]\n{grid}\n"


def test_config_source_and_service():
    cfg = parse_config(_cfg("source = dbus"))
    assert (cfg.grid_meter.source, cfg.grid_meter.service, cfg.grid_meter.host) == ("dbus", "", "")
    assert parse_config(_cfg(f"source = dbus\nservice = {A}\nhost = 10.0.0.5")).grid_meter.service == A
    assert parse_config(_cfg("host = 10.0.0.5")).grid_meter.source == "shelly"
    with pytest.raises(ConfigError, match=r"\[grid_meter\] host: required with source = shelly"):
        parse_config(_cfg("source = shelly"))
    with pytest.raises(ConfigError, match=r"service = 'com.victronenergy.acload.x'"):
        parse_config(_cfg("source = dbus\nservice = com.victronenergy.acload.x"))
    with pytest.raises(ConfigError, match="must be one of shelly, dbus"):
        parse_config(_cfg("source = modbus\nhost = x"))


# ------------------------------------------------------------------ D-Bus, in-process (private dbus-daemon)

SIM = "com.victronenergy.grid.sim_gridmeter"


class Loop(DbusSimThread):
    """One GLib main loop thread that runs the simulated meters and the follower under test."""
    thread_name = "test-loop"

    def _open(self):
        pass

    def _close(self):
        pass

    def _tick(self):
        return False


class Power:
    """The meters' source: per-phase W, set by the test."""

    def __init__(self, phases=(300.0, 100.0, -50.0)):
        self.phases = list(phases)

    def __call__(self):
        return {"phases_w": list(self.phases), "import_kwh": 12.0, "export_kwh": 3.0}


class Harness:
    def __init__(self, loop: Loop):
        self.loop = loop
        self.meters: list[GridMeterDbus] = []
        self.others: list = []
        self.out: list[tuple[float, str, dict]] = []
        self.lock = threading.Lock()
        self.follower = None
        self.source_id = None

    def meter(self, power=None, interval_s=0.2, **kwargs) -> GridMeterDbus:
        meter = GridMeterDbus(power or Power(), interval_s=interval_s, **kwargs)
        self.loop.call(meter._first)          # registers it and starts its updates inside the shared loop
        self.meters.append(meter)
        return meter

    def service(self, name: str, paths: dict, instance: int = 1):
        """Any other service (ours or a non-grid meter), registered in the loop."""
        def make():
            from common.vedbus import VeDbusService
            svc = VeDbusService(name)
            svc.add_mandatory_paths("test", "1", "test", instance, 0, name)
            for path, value in paths.items():
                svc.add_path(path, value)
            svc.register()
            return svc
        svc = self.loop.call(make)
        self.others.append(svc)
        return svc

    def follow(self, configured: str = "", clock=None):
        from common.vedbus import new_system_bus
        from services.venus_publisher.gridmeter import GridMeterFollower

        def publish(topic, body):
            m.check_body(topic, body)
            with self.lock:
                self.out.append((time.monotonic(), topic, body))

        def make():
            self.bus = new_system_bus()
            self.follower = GridMeterFollower(self.bus, configured, publish,
                                              clock.monotonic if clock else time.monotonic,
                                              check_ms=50)
            self.source_id = self.follower.start()
        self.loop.call(make)
        return self.follower

    def last(self, topic: str):
        with self.lock:
            found = [body for _t, tp, body in self.out if tp == topic]
        return found[-1] if found else None

    def mark(self) -> int:
        with self.lock:
            return len(self.out)

    def since(self, mark: int, topic: str) -> list[dict]:
        with self.lock:
            return [body for _t, tp, body in self.out[mark:] if tp == topic]

    def wait_status(self, predicate, what: str, timeout_s: float = 10.0) -> dict:
        return wait_for(lambda: (lambda b: b if b is not None and predicate(b) else None)(self.last(m.METER_STATUS)),
                        timeout_s, interval_s=0.02, what=what)

    def wait_grid(self, mark: int, predicate, what: str, timeout_s: float = 10.0) -> dict:
        def check():
            found = [b for b in self.since(mark, m.METER_GRID) if predicate(b)]
            return found[-1] if found else None
        return wait_for(check, timeout_s, interval_s=0.02, what=what)

    def close(self):
        def down():
            from gi.repository import GLib
            if self.follower is not None:
                self.follower.close()
                GLib.source_remove(self.source_id)
                self.bus.set_exit_on_disconnect(False)
                self.bus.close()
            for meter in self.meters:
                meter._close()
                meter.fault = "absent"       # its timer keeps running until the loop stops: no re-open
            for svc in self.others:
                svc.close()
        self.loop.call(down)


@pytest.fixture
def dbus_loop(private_dbus):
    loop = Loop(interval_s=0.1).start()
    harness = Harness(loop)
    yield harness
    harness.close()
    loop.stop()


dbus_timeout = pytest.mark.timeout(60)


@dbus_timeout
def test_itemschanged_only_int_values_are_followed(dbus_loop):
    power = Power([300.0, 100.0, -50.0])
    dbus_loop.meter(power, items_only=True, int_values=True)
    dbus_loop.follow()
    status = dbus_loop.wait_status(lambda b: b["ok"], "meter followed")
    assert status["device"] == "Simulated grid meter"
    grid = dbus_loop.last(m.METER_GRID)
    assert grid["power_w"] == 350.0 and [p["power_w"] for p in grid["phases"]] == [300.0, 100.0, -50.0]
    assert grid["energy_import_kwh"] == 12.0 and abs(grid["sample_t_mono"] - time.monotonic()) < 2
    mark = dbus_loop.mark()
    t0 = time.monotonic()
    power.phases = [-400.0, 100.0, 50.0]
    dbus_loop.wait_grid(mark, lambda b: b["power_w"] == -250.0, "a change by ItemsChanged only")
    assert time.monotonic() - t0 < 2


@dbus_timeout
def test_role_change_is_meter_gone_and_the_acload_meter_is_never_read(dbus_loop):
    meter = dbus_loop.meter()
    dbus_loop.follow()
    dbus_loop.wait_status(lambda b: b["ok"], "meter followed")
    meter.set_fault("role")              # re-registers as com.victronenergy.acload.sim_gridmeter
    gone = dbus_loop.wait_status(lambda b: not b["ok"], "role change = meter gone", timeout_s=3)
    assert gone["error_kind"] == "connection"
    mark = dbus_loop.mark()
    time.sleep(0.6)                      # the acload meter keeps signalling: nothing of it is published
    assert dbus_loop.since(mark, m.METER_GRID) == []
    assert all(not b["ok"] for b in dbus_loop.since(mark, m.METER_STATUS))
    mark = dbus_loop.mark()
    meter.set_fault(None)                # back to the grid role: picked up without a restart
    dbus_loop.wait_status(lambda b: b["ok"], "meter back")
    dbus_loop.wait_grid(mark, lambda b: b["power_w"] == 350.0, "samples again")


@dbus_timeout
def test_connected_0_and_invalid_power_stop_the_samples(dbus_loop):
    meter = dbus_loop.meter()
    dbus_loop.follow()
    dbus_loop.wait_status(lambda b: b["ok"], "meter followed")
    for fault, kind in (("disconnected", "connection"), ("invalid", "invalid_reading")):
        meter.set_fault(fault)
        dbus_loop.wait_status(lambda b: b["error_kind"] == kind, f"{fault} seen", timeout_s=3)
        mark = dbus_loop.mark()
        time.sleep(0.5)
        assert dbus_loop.since(mark, m.METER_GRID) == []
        meter.set_fault(None)
        dbus_loop.wait_status(lambda b: b["ok"], f"back from {fault}", timeout_s=3)


@dbus_timeout
@pytest.mark.parametrize("refresh_ms, limit_s", [(600, 5.0), (2500, 7.5)])
def test_silence_is_stale_after_max_5s_and_3_refresh_times(dbus_loop, refresh_ms, limit_s):
    clock = ManualClock()
    meter = dbus_loop.meter(refresh_time_ms=refresh_ms)
    dbus_loop.follow(clock=clock)
    dbus_loop.wait_status(lambda b: b["ok"], "meter followed")
    meter.set_fault("silent")            # the service stays, /Connected stays 1, no signal any more
    clock.advance(limit_s - 0.2)
    time.sleep(0.3)                      # several silence checks run
    assert dbus_loop.last(m.METER_STATUS)["ok"] is True
    clock.advance(0.3)
    stale = dbus_loop.wait_status(lambda b: not b["ok"], "stale", timeout_s=1)
    assert stale["error_kind"] == "stale"
    meter.set_fault(None)
    dbus_loop.wait_status(lambda b: b["ok"], "fresh again")


@dbus_timeout
def test_lowest_instance_wins_the_configured_service_wins_and_the_other_takes_over(dbus_loop):
    dbus_loop.meter(Power([100.0, 0.0, 0.0]), ident="high", device_instance=40)
    low = dbus_loop.meter(Power([200.0, 0.0, 0.0]), ident="low", device_instance=31)
    follower = dbus_loop.follow()
    dbus_loop.wait_status(lambda b: b["ok"], "followed")
    wait_for(lambda: follower.tracker.chosen == "com.victronenergy.grid.low", 5, what="lowest instance chosen")
    mark = dbus_loop.mark()
    dbus_loop.wait_grid(mark, lambda b: b["power_w"] == 200.0, "the low instance's power")
    mark = dbus_loop.mark()
    low.set_fault("absent")
    dbus_loop.wait_grid(mark, lambda b: b["power_w"] == 100.0, "the other meter takes over")
    assert all(b["power_w"] == 100.0 for b in dbus_loop.since(mark, m.METER_GRID))


@dbus_timeout
def test_configured_service_wins_over_a_lower_instance(dbus_loop):
    dbus_loop.meter(Power([100.0, 0.0, 0.0]), ident="high", device_instance=40)
    dbus_loop.meter(Power([200.0, 0.0, 0.0]), ident="low", device_instance=31)
    dbus_loop.follow(configured="com.victronenergy.grid.high")
    mark = dbus_loop.mark()
    dbus_loop.wait_grid(mark, lambda b: b["power_w"] == 100.0, "the configured meter")
    time.sleep(0.5)
    assert {b["power_w"] for b in dbus_loop.since(mark, m.METER_GRID)} == {100.0}


@dbus_timeout
def test_meter_appearing_after_start_and_our_own_services_never_read(dbus_loop):
    dbus_loop.service("com.victronenergy.acload.http_59", {"/Ac/Power": 999.0, "/Ac/L1/Power": 999.0}, 59)
    dbus_loop.service("com.victronenergy.dcsystem.http_137", {"/Dc/0/Power": 5.0}, 137)
    dbus_loop.service("com.victronenergy.pvinverter.cgwacs_ttyUSB1_mb2", {"/Ac/Power": 777.0, "/Role": "pvinverter"},
                      1)
    dbus_loop.service("com.victronenergy.system", {"/Ac/Grid/L1/Power": 555.0}, 0)
    dbus_loop.follow()
    none = dbus_loop.wait_status(lambda b: b["error_kind"] == "connection", "no grid meter yet")
    assert "no com.victronenergy.grid" in none["detail"]
    time.sleep(0.3)
    assert dbus_loop.last(m.METER_GRID) is None
    mark = dbus_loop.mark()
    dbus_loop.meter(Power([10.0, 20.0, 30.0]), device_instance=50)
    dbus_loop.wait_grid(mark, lambda b: b["power_w"] == 60.0, "the meter that appeared")
    assert {b["power_w"] for b in dbus_loop.since(mark, m.METER_GRID)} == {60.0}


@dbus_timeout
def test_getitems_that_fails_is_asked_again(dbus_loop):
    name = "com.victronenergy.grid.late_objects"
    conn = dbus_loop.loop.call(new_system_bus)
    try:
        dbus_loop.loop.call(lambda: conn.request_name(name))        # the name, but no objects yet: GetItems fails
        dbus_loop.follow(configured=name)
        failed = dbus_loop.wait_status(lambda b: "GetItems" in (b.get("detail") or "") and "failed" in b["detail"],
                                       "GetItems failure reported")
        assert failed["error_kind"] == "starting" and not failed["ok"]

        def export():
            svc = VeDbusService(name, bus=conn)
            svc.add_mandatory_paths("test", "1", "test", 30, 0, "Late meter")
            svc.add_path("/Ac/Power", 42)
            svc.register()
            return svc
        svc = dbus_loop.loop.call(export)
        dbus_loop.others.append(svc)
        time.sleep(GETITEMS_RETRY_S + 0.5)                            # the follower asks again
        mark = dbus_loop.mark()
        dbus_loop.loop.call(lambda: svc.__setitem__("/Ac/Power", 43))
        dbus_loop.wait_grid(mark, lambda b: b["power_w"] == 43.0, "read after the retry")
    finally:
        dbus_loop.loop.call(lambda: (conn.set_exit_on_disconnect(False), conn.close()))


# ------------------------------------------------------------------ processes on the real bus

@pytest.mark.timeout(120)
def test_controller_sees_meter_grid_from_venus_publisher(private_dbus, procs, rundir):
    from common.bus import Subscriber
    from tests.support import base_sections, write_config
    power = Power([300.0, 100.0, -50.0])
    meter = GridMeterDbus(power, int_values=True, interval_s=0.5).start()
    try:
        config = write_config(rundir, base_sections(rundir, grid_meter={"source": "dbus", "host": "10.0.0.9"},
                                                    control={"state_dir": rundir, "grid_stale_s": 3}))
        sub = Subscriber(rundir, topics=["meter.", "ctrl.status"])
        try:
            shelly = procs.python("shelly_poller", "services.shelly_poller", "--config", config)
            procs.python("venus_publisher", "services.venus_publisher", "--config", config)
            procs.python("controller", "services.controller", "--config", config)
            seen = {"sources": set()}

            def ctrl_grid(predicate):
                def check():
                    msg = sub.recv(0.1)
                    while msg is not None:
                        if msg.topic.startswith("meter."):
                            seen["sources"].add((msg.topic, msg.src))
                        if msg.topic == m.CTRL_STATUS and predicate(msg.body):
                            return msg.body
                        msg = sub.recv(0)
                    return None
                return check
            wait_for(ctrl_grid(lambda b: b["grid_w"] == 350.0), 40, interval_s=0, what="controller uses 350 W")
            power.phases = [-200.0, 0.0, 0.0]
            wait_for(ctrl_grid(lambda b: b["grid_w"] == -200.0), 20, interval_s=0, what="controller follows")
            assert seen["sources"] <= {(m.METER_GRID, "venus_publisher"), (m.METER_STATUS, "venus_publisher")}
            assert (m.METER_GRID, "venus_publisher") in seen["sources"]
            assert "host = 10.0.0.9 ignored" in shelly.output()
            meter.set_fault("absent")
            body = wait_for(ctrl_grid(lambda b: "grid" in b["stale"]), 20, interval_s=0, what="grid stale")
            assert body["grid_w"] == -200.0
        finally:
            sub.close()
    finally:
        meter.stop()


@pytest.mark.timeout(60)
def test_python_m_sim_grid_dbus_serves_the_plant_and_takes_faults(private_dbus, procs):
    import dbus
    import requests
    from tests.test_sim_main import start_sim
    proc, _base, control = start_sim(procs, "--grid", "dbus", "--no-balcony", "--scenario", "quiet")
    bus = dbus.bus.BusConnection(private_dbus.address)
    try:
        def read(path, name=SIM):
            try:
                return bus.call_blocking(name, path, "com.victronenergy.BusItem", "GetValue", "", [], timeout=2)
            except dbus.DBusException:
                return None
        wait_for(lambda: read("/Ac/Power") is not None, 10, what="grid meter on D-Bus")
        assert isinstance(read("/Ac/Power"), dbus.Int32)                     # int values, as the vecan driver
        # the plant's grid power (it moves while the inverters settle; the meter is up to 1 s behind)
        wait_for(lambda: abs(int(read("/Ac/Power")) - requests.get(control + "/state", timeout=2).json()["grid_w"])
                 < 10, 20, interval_s=0.2, what="meter reads the plant's grid power")
        assert int(read("/RefreshTime")) == 600 and int(read("/Connected")) == 1
        assert f"grid=dbus:{SIM}" in proc.output()
        requests.post(control + "/fault", json={"device": "grid", "kind": "role"}, timeout=2).raise_for_status()
        wait_for(lambda: read("/Ac/Power") is None, 5, what="grid service gone")
        assert read("/Role", "com.victronenergy.acload.sim_gridmeter") == "acload"
        requests.post(control + "/fault", json={"device": "grid", "kind": None}, timeout=2).raise_for_status()
        wait_for(lambda: read("/Ac/Power") is not None, 5, what="grid service back")
    finally:
        bus.close()
