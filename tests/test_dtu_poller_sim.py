"""dtu_poller against the OpenDTU simulator over real HTTP, and the real process on a real bus."""
import time

import pytest

from common import messages as m
from common.bus import Publisher, Subscriber
from services.dtu_poller.client import (DtuAuthError, DtuConnectionError, DtuHttpError, DtuInvalidResponse,
                                        DtuRateLimited, DtuRejected, DtuTimeout, OpenDtuClient)
from tests.support import base_sections, wait_for, write_config

opendtu = pytest.importorskip("sim.opendtu")
from sim.plant import Plant, RealtimeRunner  # noqa: E402

PASSWORD = "openDTU42"


@pytest.fixture
def plant(request):
    plant = Plant.demo(n_inverters=getattr(request, "param", 2), seed=1)
    plant.set_load_override(600.0)
    runner = RealtimeRunner(plant).start()
    yield plant
    runner.stop()


def make_sim(plant, firmware="v25.9.11", password=PASSWORD):
    return opendtu.OpenDtuSimulator(plant, firmware=firmware, password=password, poll_interval_s=0.3,
                                     failure_timeout_s=2.0).start()


@pytest.fixture
def sim(plant):
    sim = make_sim(plant)
    yield sim
    sim.stop()


def serials_of(plant):
    return [inv.serial for inv in plant.inverters]


# ------------------------------------------------------------------ the client over real HTTP

@pytest.mark.parametrize("firmware", ["v25.9.11", "v23.10.9"])
def test_both_firmware_formats_give_full_samples(plant, firmware):
    sim = make_sim(plant, firmware)
    try:
        client = OpenDtuClient(sim.url.replace("http://", ""), "admin", PASSWORD, 2.0)
        summary = client.livedata_summary()
        assert [inv.serial for inv in summary] == serials_of(plant)

        def full_samples():
            lives = [client.livedata_inverter(s) for s in serials_of(plant)]
            return lives if all(l is not None and l.reachable and l.ac_voltage_v and l.yield_total_kwh is not None
                                and l.dc_inputs and l.dc_inputs[0].voltage_v for l in lives) else None
        lives = wait_for(full_samples, 15, 0.2, "reachable inverters with channel data")
        assert all(l.temperature_c is not None for l in lives)
        assert client.firmware().startswith("v2")
    finally:
        sim.stop()


FAULTS = [
    ("refused", DtuConnectionError), ("hang", DtuTimeout), ("http500", DtuHttpError), ("http429", DtuRateLimited),
    ("html", DtuInvalidResponse), ("null", DtuInvalidResponse), ("garbage", DtuInvalidResponse),
    ("http401", DtuAuthError),
]


def test_each_http_fault_is_an_error_of_its_kind(sim):
    client = OpenDtuClient(sim.url, "admin", PASSWORD, 0.8)
    assert client.livedata_summary()
    for kind, error in FAULTS:
        sim.set_fault(kind)
        try:
            with pytest.raises(error) as err:
                client.livedata_summary()
                client.livedata_inverter(serials_of(sim_plant(sim))[0])
                client.limit_status()
        finally:
            sim.set_fault(None)
        if kind == "http429":
            assert err.value.retry_after_s is not None and err.value.retry_after_s > 0
        if kind == "html":
            assert err.value.kind == "html"
        wait_for(lambda: _answers(client), 10, 0.1, f"DTU answers again after {kind}")


def sim_plant(sim):
    return sim.plant


def _answers(client):
    try:
        return client.livedata_summary()
    except Exception:
        return None


def test_auth_wrong_password_and_rejected_limits(sim, plant):
    serial = serials_of(plant)[0]
    wrong = OpenDtuClient(sim.url, "admin", "not-it", 2.0)
    with pytest.raises(DtuAuthError):
        wrong.set_limit_relative(serial, 50)
    right = OpenDtuClient(sim.url, "admin", PASSWORD, 2.0)
    assert right.set_limit_relative(serial, 50)["type"] == "success"
    with pytest.raises(DtuRejected) as err:
        right.post_command("/api/limit/config", {"serial": serial, "limit_type": 3, "limit_value": 2500})
    assert err.value.code == 5002
    with pytest.raises(DtuRejected) as err:
        right.set_limit_relative("999999999999", 50)
    assert err.value.code == 5004
    with pytest.raises(DtuInvalidResponse) as err:     # unknown path: 200 + HTML
        right.get_json("/api/limit/config")
    assert err.value.kind == "html"


# ------------------------------------------------------------------ the real process

class Bus:
    """The test's side of the bus: a controller Publisher repeating a setpoint, a Subscriber collecting dtu.*."""

    def __init__(self, rundir):
        self.pub = Publisher("controller", rundir)
        self.sub = Subscriber(rundir, topics=["dtu."])
        self.messages = []
        self.setpoint = None
        self.setpoint_seqs = []
        self._last_sent = 0.0

    def pump(self):
        now = time.monotonic()
        if self.setpoint is not None and now - self._last_sent >= 0.5:
            self.setpoint_seqs.append(self.pub.publish(m.CTRL_SETPOINT, self.setpoint))
            self._last_sent = now
        while True:
            msg = self.sub.recv(0.05)
            if msg is None:
                break
            self.messages.append(msg)

    def bodies(self, topic, since=0):
        return [msg.body for msg in self.messages[since:] if msg.topic == topic]

    def wait(self, pred, timeout_s=15, what="condition"):
        def check():
            self.pump()
            return pred()
        return wait_for(check, timeout_s, 0.0, what)

    def mark(self):
        self.pump()
        return len(self.messages)

    def close(self):
        self.sub.close()
        self.pub.close()


@pytest.fixture
def bus(rundir):
    bus = Bus(rundir)
    yield bus
    bus.close()


def assert_no_sample_twice(bus, serials):
    """Per inverter, sample times strictly increase and the DTU's sample (values + age) never repeats."""
    for serial in serials:
        samples = [b for b in bus.bodies(m.DTU_INVERTER) if b["serial"] == serial and b["reachable"]]
        times = [b["sample_t_mono"] for b in samples]
        assert len(samples) >= 1
        assert times == sorted(times) and len(set(times)) == len(times)
        for a, b in zip(samples, samples[1:]):
            assert b["sample_t_mono"] - a["sample_t_mono"] > 0.2


def start_service(procs, rundir, sim, **opendtu):
    keys = {"host": sim.url, "password": PASSWORD, "poll_interval": 0.5, "timeout": 1.0,
            "setpoint_timeout_s": 3, "limit_ack_timeout_s": 8, **opendtu}
    path = write_config(rundir, base_sections(rundir, opendtu=keys))
    return procs.python("dtu", "services.dtu_poller", "--config", path)


def test_process_publishes_fresh_samples_applies_limits_and_reports_acks(procs, rundir, sim, plant, bus):
    serials = serials_of(plant)
    proc = start_service(procs, rundir, sim)
    bus.wait(lambda: any(b["ok"] and b["serials"] == serials and b["can_control"]
                         for b in bus.bodies(m.DTU_STATUS)), 15, "dtu.status ok with both inverters")
    bus.wait(lambda: {b["serial"] for b in bus.bodies(m.DTU_INVERTER)
                      if b["ac_voltage_v"] and b["max_power_w"]} == set(serials), 15, "samples of both")
    for body in bus.bodies(m.DTU_INVERTER):
        assert body["index"] == serials.index(body["serial"])
    bus.wait(lambda: {b.get("model") for b in bus.bodies(m.DTU_INVERTER)} >= {inv.spec.model for inv in plant.inverters},
             15, "models from devinfo")
    assert_no_sample_twice(bus, serials)

    # ack flow: both inverters to 40 %
    # (before any setpoint each inverter got the minimum, as soon as the DTU listed it)
    first = bus.wait(lambda: [b for b in bus.bodies(m.DTU_ACK) if b["outcome"] == "ok" and b["setpoint_seq"] is None]
                     if {b["serial"] for b in bus.bodies(m.DTU_ACK) if b["setpoint_seq"] is None} == set(serials)
                     else None, 15, "the minimum for both")
    assert {b["limit_pct"] for b in first} == {1.0} and "first seen" in first[0]["detail"]
    bus.setpoint = {"limits": [{"serial": s, "limit_pct": 40} for s in serials]}
    bus.wait(lambda: {b["serial"] for b in bus.bodies(m.DTU_ACK) if b["outcome"] == "ok" and b["setpoint_seq"]}
             == set(serials), 15, "ok acks for both")
    oks = [b for b in bus.bodies(m.DTU_ACK) if b["outcome"] == "ok" and b["setpoint_seq"] is not None]
    for ack in oks:
        assert ack["limit_pct"] == 40 and 0 < ack["latency_s"] < 8.5 and ack["setpoint_seq"] in bus.setpoint_seqs
        assert ack["sent_t_mono"] <= time.monotonic()
    latencies = sorted(a["latency_s"] for a in oks)
    print(f"limit ack latency (s): {latencies}")
    assert all(entry["type"] == 1 for entry in sim.limit_log), "only relative non-persistent limits"
    sent = len(sim.limit_log)
    # the same setpoint again is not re-sent
    mark = bus.mark()
    # (dtu.status goes out only on a change or every 5 s: the fresh samples show the polls)
    bus.wait(lambda: len(bus.bodies(m.DTU_INVERTER, mark)) >= 6, 10, "a few polls")
    assert len(sim.limit_log) == sent and not bus.bodies(m.DTU_ACK, mark)

    # Failure: the limit never gets through -> reported as not applied, never ok
    sim.set_fault("limit_failure", serial=serials[0])
    mark = bus.mark()
    bus.setpoint = {"limits": [{"serial": serials[0], "limit_pct": 60}, {"serial": serials[1], "limit_pct": 40}]}
    bad = bus.wait(lambda: [b for b in bus.bodies(m.DTU_ACK, mark) if b["serial"] == serials[0]], 20,
                   "an ack for the failing inverter")
    assert bad[0]["outcome"] == "failure" and bad[0]["limit_pct"] == 60
    assert not [b for b in bus.bodies(m.DTU_ACK, mark) if b["outcome"] == "ok" and b["serial"] == serials[0]]
    sim.set_fault(None)
    bus.wait(lambda: [b for b in bus.bodies(m.DTU_ACK, mark) if b["serial"] == serials[0] and b["outcome"] == "ok"],
             20, "ok after the fault clears (retry)")

    # restart: once, then rate-limited
    mark = bus.mark()
    bus.setpoint = {"limits": [{"serial": s, "limit_pct": 40} for s in serials], "restart": [serials[1]]}
    bus.wait(lambda: {b["outcome"] for b in bus.bodies(m.DTU_ACK, mark) if b["command"] == "restart"}
             == {"ok", "rate_limited"}, 15, "one restart done, the repeated request refused")
    restarts = [b for b in bus.bodies(m.DTU_ACK, mark) if b["command"] == "restart"]
    assert {b["serial"] for b in restarts} == {serials[1]}
    assert len([b for b in restarts if b["outcome"] == "ok"]) == 1
    # DTU reboot: once, then rate-limited
    mark = bus.mark()
    bus.setpoint = {"limits": [], "dtu_reboot": True}
    bus.wait(lambda: [b for b in bus.bodies(m.DTU_ACK, mark) if b["command"] == "dtu_reboot"
                      and b["outcome"] == "rate_limited"], 15, "second reboot refused")
    reboots = [b for b in bus.bodies(m.DTU_ACK, mark) if b["command"] == "dtu_reboot"]
    assert reboots[0]["outcome"] == "ok" and reboots[0]["serial"] is None
    assert proc.alive()
    assert "openDTU42" not in proc.output()


def test_bad_and_stale_answers_never_yield_values(procs, rundir, sim, plant, bus):
    serials = serials_of(plant)
    start_service(procs, rundir, sim, poll_interval=0.3)
    bus.wait(lambda: len({b["serial"] for b in bus.bodies(m.DTU_INVERTER)}) == 2, 15, "samples")
    for kind, error_kind in [("html", "html"), ("null", "invalid"), ("garbage", "invalid"),
                             ("http500", "http"), ("http401", "auth"), ("refused", "connection"),
                             ("hang", "timeout")]:
        sim.set_fault(kind)
        time.sleep(0.05)      # let a poll that was already answered go through
        mark = bus.mark()
        bus.wait(lambda: any(not b["ok"] and b["error_kind"] == error_kind for b in bus.bodies(m.DTU_STATUS, mark)),
                 15, f"dtu.status {error_kind} for {kind}")
        mark = bus.mark()
        bus.wait(lambda: len(bus.bodies(m.DTU_STATUS, mark)) >= 1, 15, "another status")
        assert not bus.bodies(m.DTU_INVERTER, mark), f"no samples during {kind}"
        sim.set_fault(None)
        bus.wait(lambda: bus.bodies(m.DTU_STATUS, mark) and bus.bodies(m.DTU_STATUS, mark)[-1]["ok"], 40,
                 f"recovery after {kind}")
    # stale (the DTU stops polling an inverter): no new sample is published
    bus.wait(lambda: bus.bodies(m.DTU_INVERTER, mark), 15, "samples again")
    sim.set_fault("stale", serial=serials[0])
    time.sleep(1.0)
    mark = bus.mark()
    bus.wait(lambda: len(bus.bodies(m.DTU_INVERTER, mark)) >= 3, 15, "samples of the other inverter")
    assert {b["serial"] for b in bus.bodies(m.DTU_INVERTER, mark)} == {serials[1]}
    # unreachable: one message without values, then nothing
    sim.set_fault(None)
    sim.set_fault("unreachable", serial=serials[1])
    bus.wait(lambda: [b for b in bus.bodies(m.DTU_INVERTER, mark) if b["serial"] == serials[1]
                      and not b["reachable"]], 20, "unreachable message")
    gone = [b for b in bus.bodies(m.DTU_INVERTER, mark) if not b["reachable"]]
    assert all(b["ac_power_w"] is None and b["dc_power_w"] is None for b in gone)
    bus.wait(lambda: serials[1] in bus.bodies(m.DTU_STATUS)[-1].get("unreachable", []), 10, "status unreachable")
    # 429: Retry-After (60 s) is honoured: no new attempt, but the status keeps coming (at least every 5 s)
    sim.set_fault("http429")
    time.sleep(0.05)
    mark = bus.mark()
    bus.wait(lambda: [b for b in bus.bodies(m.DTU_STATUS, mark) if b["error_kind"] == "rate_limited"], 10, "429")
    first = len(bus.bodies(m.DTU_STATUS, mark))
    bus.wait(lambda: len(bus.bodies(m.DTU_STATUS, mark)) >= first + 2, 15, "status heartbeats during the backoff")
    limited = [b for b in bus.bodies(m.DTU_STATUS, mark) if b["error_kind"] == "rate_limited"]
    assert len(limited) >= 3 and {b["error_count"] for b in limited} == {1}
    assert not bus.bodies(m.DTU_INVERTER, mark)


@pytest.mark.parametrize("plant", [3], indirect=True)
def test_watchdog_sends_minimum_and_releases(procs, rundir, sim, plant, bus):
    serials = serials_of(plant)
    sim.dtu.set_command_enable(serials[2], False)     # OpenDTU would answer "success" and do nothing
    proc = start_service(procs, rundir, sim, setpoint_timeout_s=2)
    alarm = bus.wait(lambda: [b for b in bus.bodies(m.DTU_ALARM) if b["active"]], 15, "watchdog alarm")
    assert alarm[0]["kind"] == "setpoint_watchdog"
    bus.wait(lambda: {b["serial"] for b in bus.bodies(m.DTU_ACK)
                      if b["outcome"] == "ok" and b["limit_pct"] == 1} == set(serials[:2]), 15, "minimum applied")
    assert {e["serial"] for e in sim.limit_log if e["pct"] == 1} == set(serials[:2])
    bus.setpoint = {"limits": [{"serial": s, "limit_pct": 30} for s in serials]}
    bus.wait(lambda: [b for b in bus.bodies(m.DTU_ALARM) if not b["active"]], 10, "alarm released")
    bus.wait(lambda: {b["serial"] for b in bus.bodies(m.DTU_ACK)
                      if b["outcome"] == "ok" and b["limit_pct"] == 30} == set(serials[:2]), 15, "normal work")
    disabled = [b for b in bus.bodies(m.DTU_ACK) if b["serial"] == serials[2]]
    assert disabled and {b["outcome"] for b in disabled} == {"rejected"} and "disabled" in disabled[0]["detail"]
    assert not [e for e in sim.limit_log if e["serial"] == serials[2]]
    assert "commands are disabled" in proc.output()


def test_stop_and_start_requests_switch_the_inverter_over_power_config(procs, rundir, sim, plant, bus):
    serials = serials_of(plant)
    start_service(procs, rundir, sim)
    bus.wait(lambda: any(b["ok"] and b["serials"] == serials for b in bus.bodies(m.DTU_STATUS)), 15, "dtu up")
    bus.setpoint = {"limits": [{"serial": s, "limit_pct": 20} for s in serials]}
    bus.wait(lambda: {b["serial"] for b in bus.bodies(m.DTU_ACK) if b["outcome"] == "ok"} == set(serials),
             15, "limits applied")
    # stop the first: one power off, then no limits to it while it is stopped, even when its limit changes
    mark = bus.mark()
    bus.setpoint = {"limits": [{"serial": serials[0], "limit_pct": 1, "on": False}]
                    + [{"serial": s, "limit_pct": 20} for s in serials[1:]]}
    bus.wait(lambda: [b for b in bus.bodies(m.DTU_ACK, mark) if b["command"] == "power_off"
                      and b["outcome"] == "ok"], 15, "power off acknowledged")
    assert plant.inverters[0].enabled is False and all(inv.enabled for inv in plant.inverters[1:])
    sent_before = len([e for e in sim.limit_log if e["serial"] == serials[0]])
    bus.setpoint = {"limits": [{"serial": serials[0], "limit_pct": 5, "on": False}]
                    + [{"serial": s, "limit_pct": 20} for s in serials[1:]]}
    bus.wait(lambda: len(bus.bodies(m.DTU_INVERTER, mark)) >= 6, 15, "a few polls")
    assert len([e for e in sim.limit_log if e["serial"] == serials[0]]) == sent_before
    assert len([b for b in bus.bodies(m.DTU_ACK, mark) if b["command"] == "power_off"]) == 1
    # start it again: its limit first, then power on
    mark = bus.mark()
    bus.setpoint = {"limits": [{"serial": s, "limit_pct": 10, "on": True} for s in serials]}
    bus.wait(lambda: [b for b in bus.bodies(m.DTU_ACK, mark) if b["command"] == "power_on"
                      and b["outcome"] == "ok"], 20, "power on acknowledged")
    assert plant.inverters[0].enabled is True
    first = [b for b in bus.bodies(m.DTU_ACK, mark) if b["serial"] == serials[0]]
    assert [b["command"] for b in first][:2] == ["limit", "power_on"] and first[0]["limit_pct"] == 10
    # the others were never stopped: nothing but limits for them
    assert {b["command"] for b in bus.bodies(m.DTU_ACK, mark) if b["serial"] != serials[0]} <= {"limit"}


def test_without_password_read_only(procs, rundir, plant, bus):
    sim = make_sim(plant, firmware="v23.10.9", password=PASSWORD)
    try:
        serials = serials_of(plant)
        proc = start_service(procs, rundir, sim, password="")
        bus.setpoint = {"limits": [{"serial": s, "limit_pct": 30} for s in serials]}
        bus.wait(lambda: {b["serial"] for b in bus.bodies(m.DTU_ACK) if b["outcome"] == "read_only"}
                 == set(serials), 15, "read_only acks")
        bus.wait(lambda: any(b["ok"] and not b["can_control"] for b in bus.bodies(m.DTU_STATUS)), 15, "status")
        bus.wait(lambda: {b["serial"] for b in bus.bodies(m.DTU_INVERTER) if b["ac_voltage_v"]} == set(serials),
                 15, "legacy-format samples")
        bus.wait(lambda: len(bus.bodies(m.DTU_INVERTER)) >= 6, 15, "more samples")
        assert_no_sample_twice(bus, serials)
        assert not sim.limit_log
        assert proc.output().count("read-only") >= 1
    finally:
        sim.stop()


def test_inverter_disappearing_and_appearing(procs, rundir, sim, plant, bus):
    serials = serials_of(plant)
    start_service(procs, rundir, sim, setpoint_timeout_s=30)
    bus.wait(lambda: {b["serial"] for b in bus.bodies(m.DTU_INVERTER)} == set(serials), 15, "samples of both")
    with plant.lock:                       # the user deletes the first inverter in the DTU
        radio = sim.dtu.radios.pop(0)
        del sim.dtu.by_serial[radio.inv.serial]
        gone_t = plant.now_s
    mark = bus.mark()
    bus.wait(lambda: [b for b in bus.bodies(m.DTU_STATUS, mark) if b["serials"] == serials[1:]], 10, "one left")
    bus.setpoint = {"limits": [{"serial": s, "limit_pct": 35} for s in serials]}
    bus.wait(lambda: {(b["serial"], b["outcome"]) for b in bus.bodies(m.DTU_ACK, mark)}
             >= {(serials[0], "rejected"), (serials[1], "ok")}, 15, "ok for the remaining, rejected for the gone")
    mark2 = bus.mark()
    bus.wait(lambda: len(bus.bodies(m.DTU_INVERTER, mark2)) >= 2, 10, "samples of the remaining one")
    assert {(b["serial"], b["index"]) for b in bus.bodies(m.DTU_INVERTER, mark2)} == {(serials[1], 0)}
    assert not [e for e in sim.limit_log if e["serial"] == serials[0] and e["t_s"] > gone_t]
    with plant.lock:                       # and adds it again
        sim.dtu.radios.insert(0, radio)
        sim.dtu.by_serial[radio.inv.serial] = radio
    bus.wait(lambda: [b for b in bus.bodies(m.DTU_INVERTER, mark2) if b["serial"] == serials[0] and b["index"] == 0],
             15, "the returning inverter's samples at index 0")
    bus.wait(lambda: [b for b in bus.bodies(m.DTU_ACK, mark2) if b["serial"] == serials[0] and b["outcome"] == "ok"],
             15, "its limit applied")


def test_reader_reads_limit_status_only_until_the_ratings_are_known(sim, plant):
    """Footprint: once every rating (max_power) is known a poll is the summary plus one ?inv= per inverter; the
    published max_power_w and limit_pct stay what /api/limit/status and livedata say."""
    from services.dtu_poller.reader import Reader
    from services.dtu_poller.service import PollLoop
    from services.dtu_poller.writer import Inventory
    out = []
    client = OpenDtuClient(sim.url, "admin", PASSWORD, 2.0)
    loop = PollLoop(client, Reader(can_control=True), lambda t, b: out.append((t, b)), Inventory(), 0.3)
    serials = serials_of(plant)

    def ratings_and_models_known():
        loop.step()
        return set(loop._ratings) == set(serials) and set(loop.reader.models) == set(serials)
    wait_for(ratings_and_models_known, 15, what="ratings and models")
    before = sim.requests_served
    for _ in range(3):
        loop.step()
    assert sim.requests_served - before == 3 * (1 + len(serials))
    out.clear()
    wait_for(lambda: loop.step() is not None and any(t == m.DTU_INVERTER for t, _b in out), 10, interval_s=0.1,
             what="a sample")
    bodies = [b for t, b in out if t == m.DTU_INVERTER]
    rated = {inv.serial: inv.max_power_w for inv in plant.inverters}
    assert all(b["max_power_w"] == rated[b["serial"]] for b in bodies)
    assert all(b["limit_pct"] is None or 0 < b["limit_pct"] <= 100 for b in bodies)
