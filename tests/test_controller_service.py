"""The controller process on the real bus: real publishers under the owning services' names, the state file
across restarts, a corrupt state file."""
from __future__ import annotations

import json
import logging
import os
import time

import pytest

from common import messages as m
from common.bus import Publisher, Subscriber
from common.clock import SYSTEM_CLOCK
from services.controller.persist import FILE_NAME, StateStore
from tests.support import base_sections, wait_for, write_config
from tests.test_controller_support import battery, dtu_status, grid, inverter, setting


# ------------------------------------------------------------------ the state file

def test_state_store_round_trip_is_atomic(tmp_path):
    store = StateStore(str(tmp_path))
    assert store.load() is None
    assert store.save({"format": 1, "x": [1, 2]})
    assert store.load() == {"format": 1, "x": [1, 2]}
    assert sorted(os.listdir(tmp_path)) == [FILE_NAME]          # no temp file left


@pytest.mark.parametrize("content", [b"{not json", b"", b"[1, 2]", b"\xff\xfe\x00", b"null", b"[" * 100_000,
                                     b'{"a": 1e999999}' + b" " * 2_000_000])
def test_state_store_corrupt_file_is_kept_aside_and_not_overwritten(tmp_path, caplog, content):
    (tmp_path / FILE_NAME).write_bytes(content)
    store = StateStore(str(tmp_path), wall=lambda: 1796000000.0)
    with caplog.at_level(logging.ERROR):
        assert store.load() is None
    assert len([r for r in caplog.records if "unusable" in r.getMessage()]) == 1
    aside = tmp_path / f"{FILE_NAME}.corrupt-20261130T005320Z"
    assert aside.read_bytes() == content and "kept as" in caplog.text
    assert store.save({"format": 1, "defaults": True}) and not (tmp_path / FILE_NAME).exists()   # defaults: no write
    assert store.save({"format": 1, "changed": True})                                              # a change: written
    assert StateStore(str(tmp_path)).load() == {"format": 1, "changed": True}


def test_state_store_refuses_a_fifo_and_a_symlink_without_blocking(tmp_path, caplog):
    os.mkfifo(tmp_path / FILE_NAME)          # opening a FIFO for reading would block until a writer comes
    with caplog.at_level(logging.ERROR):
        assert StateStore(str(tmp_path)).load() is None
    assert "not a regular file" in caplog.text
    os.unlink(tmp_path / FILE_NAME)
    target = tmp_path / "elsewhere.json"
    target.write_text('{"format": 1}')
    os.symlink(target, tmp_path / FILE_NAME)
    store = StateStore(str(tmp_path))
    assert store.load() is None and "symbolic link" in caplog.text
    store.save({"format": 1})
    assert store.save({"format": 2})
    assert target.read_text() == '{"format": 1}'                 # the link was replaced, its target not written


def test_state_store_unwritable_folder_is_logged_not_raised(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with caplog.at_level(logging.ERROR):
        assert StateStore(str(blocker / "sub")).save({"format": 1}) is False
    assert "cannot write" in caplog.text


# ------------------------------------------------------------------ processes

class Bus:
    """The other services' publishers, and a subscriber to the controller's topics."""

    def __init__(self, rundir):
        self.dtu = Publisher("dtu_poller", rundir)
        self.shelly = Publisher("shelly_poller", rundir)
        self.venus = Publisher("venus_publisher", rundir)
        self.sub = Subscriber(rundir, topics=["ctrl."])
        self.seen: dict[str, list] = {}

    def send(self, events):
        for topic, body in events:
            pub = self.dtu if topic.startswith("dtu.") else self.venus if topic.startswith("venus.") else self.shelly
            pub.publish(topic, body)

    def collect(self, timeout_s=0.2):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            msg = self.sub.recv(max(0.0, deadline - time.monotonic()))
            if msg is None:
                break
            self.seen.setdefault(msg.topic, []).append(msg.body)

    def last(self, topic):
        bodies = self.seen.get(topic)
        return bodies[-1] if bodies else None

    def close(self):
        for sock in (self.dtu, self.shelly, self.venus, self.sub):
            sock.close()


@pytest.fixture
def bus(rundir):
    b = Bus(rundir)
    yield b
    b.close()


def _start(procs, rundir, name="controller", **control):
    path = write_config(rundir, base_sections(rundir, control={"state_dir": rundir, **control},
                                              relay={"keepalive_url": "http://127.0.0.1:9/on",
                                                     "switchoff_url": "http://127.0.0.1:9/off",
                                                     "interval": 5}))
    return procs.python(name, "services.controller", "--config", path)


def _settings_with(bus, **wanted):
    def check():
        bus.collect(0.1)
        body = bus.last(m.CTRL_SETTINGS)
        return body if body and all(body.get(k) == v for k, v in wanted.items()) else None
    return check


def _ramp(a, b):
    step = 1 if b > a else -1
    return list(range(a + step, b + step, step))


def test_settings_and_season_survive_a_restart(procs, rundir, bus):
    proc = _start(procs, rundir)
    # a user's SetValue arrives (repeated until confirmed, as venus_publisher does)
    def confirmed():
        bus.send([setting("req-1", "max_feed_in", 555)])
        return _settings_with(bus, max_feed_in=555)() and "req-1" in bus.last(m.CTRL_SETTINGS)["answers"]
    wait_for(confirmed, 20, what="ctrl.settings confirming MaxFeedIn 555")
    # a full charge then a drop: SocFloatingMax 125 - 1 = 124
    for soc in [54] + _ramp(54, 100) + _ramp(100, 95):
        bus.send([battery(soc_pct=float(soc))])
        time.sleep(0.005)
    wait_for(_settings_with(bus, soc_floating_max=124), 20, what="SocFloatingMax 124")
    path = os.path.join(rundir, FILE_NAME)
    wait_for(lambda: os.path.exists(path) and json.load(open(path))["season"]["soc_floating_max"] == 124, 10,
             what="the state file")
    saved = json.load(open(path))
    assert saved["settings"]["max_feed_in"] == 555 and saved["season"]["soc"] == 95
    assert procs.stop(proc) == 0

    bus.seen.clear()
    proc2 = _start(procs, rundir)
    body = wait_for(_settings_with(bus, max_feed_in=555, soc_floating_max=124), 20,
                    what="restored settings after the restart")
    assert body["feed_in_min_soc"] == 8
    assert "persisted state restored" in proc2.output() or "restored" in json.dumps(bus.seen.get(m.CTRL_STATUS))
    procs.stop(proc2)


def test_a_corrupt_state_file_is_kept_and_defaults_are_used_without_writing(procs, rundir, bus):
    path = os.path.join(rundir, FILE_NAME)
    torn = '{"format": 1, "settings": {"max_feed_in": 30'      # a torn write of MaxFeedIn 300
    with open(path, "w") as handle:
        handle.write(torn)
    proc = _start(procs, rundir)
    wait_for(_settings_with(bus, max_feed_in=700, soc_floating_max=74, zero_point=25), 20,
             what="defaults in ctrl.settings")
    assert proc.alive()
    wait_for(lambda: "unusable" in proc.output(), 10, what="the corrupt file in the log")
    kept = [name for name in os.listdir(rundir) if name.startswith(FILE_NAME + ".corrupt-")]
    assert len(kept) == 1 and open(os.path.join(rundir, kept[0])).read() == torn
    assert not os.path.exists(path)                             # the defaults alone are not written
    bus.send([setting("req-9", "max_feed_in", 300)])
    saved = wait_for(lambda: _json_or_none(path), 10, what="a state file once a setting changed")
    assert saved["settings"]["max_feed_in"] == 300


def _json_or_none(path):
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def test_controller_on_the_real_bus_steers_and_falls_back_when_the_grid_goes_stale(procs, rundir, bus):
    proc = _start(procs, rundir, relay_first_decision_s=2)
    serials = ["114180000001", "114180000002"]
    acked = {}

    def feed(with_grid=True):
        now = SYSTEM_CLOCK.monotonic()
        events = [dtu_status(serials), battery(soc_pct=80.0, voltage_v=52.0, dcl_a=20.0)]
        for i, serial in enumerate(serials):
            pct = acked.get(serial, 10.0)
            events.append(inverter(serial, now - 0.3, pct, ac_power_w=pct * 4.0, index=i))
        if with_grid:
            events.append(grid(300.0, now))
        bus.send(events)
        bus.collect(0.15)
        # the writer's part: acknowledge what the controller asks for
        setpoint = bus.last(m.CTRL_SETPOINT)
        if setpoint:
            for item in setpoint["limits"]:
                if acked.get(item["serial"]) != item["limit_pct"]:
                    acked[item["serial"]] = item["limit_pct"]
                    bus.send([(m.DTU_ACK, {"serial": item["serial"], "command": "limit", "outcome": "ok",
                                           "limit_pct": item["limit_pct"]})])

    def raised():
        feed()
        sp = bus.last(m.CTRL_SETPOINT)
        return sp and {i["serial"] for i in sp["limits"]} == set(serials) and \
            all(i["limit_pct"] > 20 for i in sp["limits"])
    wait_for(raised, 30, what="ctrl.setpoint raising both inverters")
    status = bus.last(m.CTRL_STATUS)
    assert status["law"] == "project" and status["stale"] == [] and status["budget_w"] == 700.0
    assert status["total_limit_w"] <= 700.0
    assert all(item["reason"].startswith("project") for item in bus.last(m.CTRL_SETPOINT)["limits"])
    assert status["reasons"][0].startswith("project law; target 25 W")
    wait_for(lambda: feed() or bus.last(m.CTRL_RELAY), 20, what="a life-signal decision")
    assert bus.last(m.CTRL_RELAY)["on"] is True

    def safe():
        feed(with_grid=False)
        sp, st = bus.last(m.CTRL_SETPOINT), bus.last(m.CTRL_STATUS)
        return st and "grid" in st["stale"] and all(i["limit_pct"] <= 1.0 for i in sp["limits"])
    wait_for(safe, 30, what="safe minimum limits after the grid went stale")
    assert bus.last(m.CTRL_STATUS)["alarms"]["grid_meter"] == 2
    wait_for(lambda: feed(with_grid=False) or bus.last(m.CTRL_RELAY)["on"] is False, 20,
             what="no keep-alive while the grid is stale")
    assert proc.alive()
    assert procs.stop(proc) == 0
