"""dtu_poller wired to AhoyDTU ([opendtu] type = auto | ahoy): the transport adapter, finding the gateway, what
differs per gateway, and the real process against the AhoyDTU simulator on a real bus.

The simulator runs with a short refresh (1 s instead of 15 s) so the process tests cost seconds; what depends on
the refresh (poll interval, ack timeout) is checked in-process against the default 15 s."""
import pytest

from common import messages as m
from common.config import parse_config
from services.dtu_poller.client import DtuConnectionError, DtuInvalidResponse, DtuTimeout
from services.dtu_poller.gateway import (AHOY_POLLS_PER_REFRESH, GatewayChanged, ahoy_request, open_gateway,
                                         read_only_reason, rechecker)
from services.dtu_poller.reader import Reader
from services.dtu_poller.service import BACKOFF_CAP_S, PollLoop, connect
from services.dtu_poller.writer import Inventory
from sim.ahoy import AhoySimulator
from sim.opendtu import OpenDtuSimulator
from sim.plant import Plant, RealtimeRunner
from sim.shelly import ShellySimulator
from tests.support import base_sections, free_port, write_config
from tests.test_dtu_poller_sim import Bus

PASSWORD = "ahoy-admin"


def config(host, **opendtu):
    keys = {"host": host, "password": PASSWORD, "poll_interval": 0.5, "timeout": 1.0, **opendtu}
    sections = base_sections("/tmp/unused", opendtu=keys)
    text = "\n".join(f"[{name}]\n" + "".join(f"{k} = {v}\n" for k, v in body.items() if v is not None)
                     for name, body in sections.items() if body is not None)
    return parse_config(text, "test.ini")


@pytest.fixture
def plant():
    plant = Plant.demo(n_inverters=2, seed=3, scenario="quiet")
    plant.set_load_override(800.0)
    runner = RealtimeRunner(plant).start()
    yield plant
    runner.stop()


def ahoy(plant, **kw):
    kw = {"password": PASSWORD, "refresh_s": 1.0, "hang_s": 3.0, **kw}
    return AhoySimulator(plant, **kw).start()


@pytest.fixture
def sim(plant):
    sim = ahoy(plant)
    yield sim
    sim.stop()


# ------------------------------------------------------------------ the transport adapter

def test_the_request_adapter_sends_json_and_maps_every_fault_to_its_kind(sim):
    request = ahoy_request(sim.url, 1.0)
    status, doc = request("GET", "/api/generic")
    assert status == 200 and doc["version"] == "0.8.156"
    status, doc = request("POST", "/api/ctrl", {"auth": PASSWORD})      # a raw JSON body, as AhoyDTU wants it
    assert status == 200 and doc["success"] is True and len(doc["token"]) == 16
    for fault, error, kind in (("refused", DtuConnectionError, "connection"), ("hang", DtuTimeout, "timeout"),
                               ("html", DtuInvalidResponse, "html")):
        sim.set_fault(fault)
        with pytest.raises(error) as err:
            request("GET", "/api/index")
        assert err.value.kind == kind
    sim.set_fault(None)
    assert request("GET", "/api/index")[0] == 200


# ------------------------------------------------------------------ what differs per gateway

def test_ahoy_gateway_polls_by_its_refresh_and_waits_longer_than_its_resends(plant):
    sim = ahoy(plant, refresh_s=15.0)
    try:
        cfg = config(sim.url, type="ahoy", poll_interval=2.0, limit_ack_timeout_s=15)
        gateway = open_gateway(cfg, "ahoy")
        assert gateway.name == "AhoyDTU" and gateway.params.gateway == "AhoyDTU"
        assert gateway.poll_interval_s == 15.0 / AHOY_POLLS_PER_REFRESH
        budget_s = gateway.write_client.limit_ack_budget_s
        assert budget_s > 30.0 and gateway.params.ack_timeout_s > budget_s    # 15 s would give up too early
        assert gateway.params.can_control and read_only_reason(gateway) is None
        assert open_gateway(config(sim.url, poll_interval=20.0), "ahoy").poll_interval_s == 20.0
        opendtu = open_gateway(cfg, "opendtu")             # the OpenDTU side unchanged
        assert (opendtu.poll_interval_s, opendtu.params.ack_timeout_s, opendtu.params.gateway) == \
            (2.0, 15.0, "OpenDTU")
    finally:
        sim.stop()


def test_who_may_command_ahoy_depends_on_its_admin_password(plant):
    protected = ahoy(plant)
    open_ahoy = ahoy(plant, password="")
    try:
        gateway = open_gateway(config(protected.url, password=""), "ahoy")
        assert not gateway.params.can_control and "AhoyDTU has an admin password" in read_only_reason(gateway)
        assert open_gateway(config(open_ahoy.url, password=""), "ahoy").params.can_control   # no password set
        assert not open_gateway(config(open_ahoy.url, password=""), "opendtu").params.can_control
    finally:
        protected.stop()
        open_ahoy.stop()


def test_a_gateway_found_late_after_errors_reported_with_backoff(plant):
    """Nothing listens at first (connection refused), then an AhoyDTU starts: connect reports each failure on
    dtu.status, waits with a growing delay, and then returns the AhoyDTU (type auto)."""
    port = free_port()
    started = []
    delays = []

    def sleep(delay_s):
        delays.append(delay_s)
        if len(delays) == 3:
            started.append(ahoy(plant, port=port))
    published = []
    try:
        gateway = connect(config(f"127.0.0.1:{port}"), Reader(can_control=True),
                          lambda t, b: published.append((t, b)), sleep=sleep)
        assert gateway.kind == "ahoy"
    finally:
        for sim in started:
            sim.stop()
    assert delays == sorted(delays) and delays[0] < delays[-1] <= BACKOFF_CAP_S
    assert [b["error_kind"] for t, b in published] == ["connection"] * 3
    assert all(t == m.DTU_STATUS and not b["ok"] for t, b in published)


def test_a_host_that_is_neither_gateway_is_one_clear_error_retried_not_a_crash(plant):
    decoy = ShellySimulator(plant, "shem", "grid").start()
    published = []

    class Enough(Exception):
        pass

    def sleep(delay_s):
        if len(published) >= 3:
            raise Enough
    try:
        with pytest.raises(Enough):
            connect(config(decoy.url), Reader(can_control=True), lambda t, b: published.append((t, b)),
                    sleep=sleep)
    finally:
        decoy.stop()
    bodies = [b for t, b in published]
    assert len(bodies) == 3 and all(b["error_kind"] == "invalid" for b in bodies)
    detail = bodies[0]["detail"]
    assert decoy.url in detail and "neither an OpenDTU nor an AhoyDTU" in detail and "/api/generic" in detail


def test_the_poll_loop_asks_again_after_the_gateway_was_unreachable(plant):
    """type auto: after connection errors the gateway is asked again; the same kind polls on, another kind ends
    the poll thread with GatewayChanged (the service restarts and opens the new one)."""
    port = free_port()
    sim = ahoy(plant, port=port)
    cfg = config(sim.url)
    gateway = open_gateway(cfg, "ahoy")
    asked = []
    recheck = rechecker(cfg, gateway)
    published = []
    loop = PollLoop(gateway.poll_client, Reader(can_control=True), lambda t, b: published.append((t, b)),
                    Inventory(), 1.0, recheck=lambda: (asked.append(1), recheck()), name=gateway.name)
    other = None
    try:
        loop.step()
        sim.set_fault("refused")
        loop.step()
        assert published[-1][1]["error_kind"] == "connection" and asked == []
        sim.set_fault(None)
        loop.step()
        assert asked == [1] and published[-1][1]["ok"]
        loop.step()
        assert asked == [1]                                  # only after it was unreachable
        sim.stop()
        loop.step()
        other = OpenDtuSimulator(plant, port=port).start()
        with pytest.raises(GatewayChanged, match="answers as OpenDTU now"):
            loop.step()
    finally:
        sim.stop()
        if other:
            other.stop()
    assert rechecker(config(sim.url, type="ahoy"), gateway) is None     # a fixed type is not asked


# ------------------------------------------------------------------ the real process

def start_service(procs, rundir, sim, **opendtu):
    keys = {"host": sim.url, "password": PASSWORD, "poll_interval": 0.3, "timeout": 1.0,
            "setpoint_timeout_s": 5, **opendtu}
    path = write_config(rundir, base_sections(rundir, opendtu=keys))
    return procs.python("dtu", "services.dtu_poller", "--config", path)


@pytest.fixture
def bus(rundir):
    bus = Bus(rundir)
    yield bus
    bus.close()


def inverter_bodies(bus, serial, since=0):
    return [b for b in bus.bodies(m.DTU_INVERTER, since) if b["serial"] == serial]


def test_process_on_ahoy_detects_it_samples_limits_and_stops_verified(procs, rundir, sim, plant, bus):
    serials = sim.serials
    proc = start_service(procs, rundir, sim)
    bus.wait(lambda: any(b["ok"] and b["serials"] == serials and b["can_control"]
                         and b.get("firmware") == "AhoyDTU 0.8.156" for b in bus.bodies(m.DTU_STATUS)),
             15, "dtu.status ok from the AhoyDTU")
    bus.wait(lambda: {b["serial"] for b in bus.bodies(m.DTU_INVERTER)
                      if b["reachable"] and b["ac_power_w"] and b["max_power_w"]} == set(serials), 15, "samples")
    assert "AhoyDTU at " + sim.url in proc.output()
    # first seen: the minimum at once, before any setpoint
    bus.wait(lambda: all(plant.by_serial[s].limit_pct <= 5.0 for s in serials), 20, "the first-seen minimum")

    # a setpoint becomes an acknowledged limit on the plant
    target = serials[0]
    mark = bus.mark()
    bus.setpoint = {"limits": [{"serial": s, "limit_pct": 40.0 if s == target else 20.0} for s in serials]}
    acks = bus.wait(lambda: [b for b in bus.bodies(m.DTU_ACK, mark) if b["serial"] == target
                             and b["command"] == "limit" and b["limit_pct"] == 40.0], 30, "the limit acknowledged")
    assert acks[0]["outcome"] == "ok" and acks[0]["setpoint_seq"] in bus.setpoint_seqs
    assert abs(plant.by_serial[target].limit_pct - 40.0) <= 1.0
    assert [e for e in sim.limit_log if e["cmd"] != "limit_nonpersistent_absolute"] == []

    # a stop: minimum limit, power off, and "off" only once a sample shows no output
    mark = bus.mark()
    bus.setpoint = {"limits": [{"serial": s, "limit_pct": 20.0, "on": s != target} for s in serials]}
    bus.wait(lambda: any(b.get("power_state") == "off" for b in inverter_bodies(bus, target, mark)), 40,
             "the stop verified")
    states = [b.get("power_state") for b in inverter_bodies(bus, target, mark)]
    assert "stopping" in states and states.index("stopping") < states.index("off")
    assert not plant.by_serial[target].enabled and plant.by_serial[target].ac_power_w <= 5.0
    off = [b for b in inverter_bodies(bus, target, mark) if b.get("power_state") == "off"][0]
    assert off["ac_power_w"] <= 5.0

    # a restart twice: the second is refused by the rate limit
    mark = bus.mark()
    bus.setpoint = {"limits": [{"serial": s, "limit_pct": 20.0} for s in serials], "restart": [serials[1]]}
    bus.wait(lambda: any(b["command"] == "restart" for b in bus.bodies(m.DTU_ACK, mark)), 15, "the restart")
    bus.setpoint = {"limits": [{"serial": s, "limit_pct": 20.0} for s in serials], "restart": [serials[1]]}
    bus.wait(lambda: any(b["command"] == "restart" and b["outcome"] == "rate_limited"
                         for b in bus.bodies(m.DTU_ACK, mark)), 15, "the second restart refused")
    assert proc.alive()


def test_process_reports_ahoy_faults_and_recovers(procs, rundir, sim, plant, bus):
    start_service(procs, rundir, sim, type="ahoy")
    bus.wait(lambda: any(b["ok"] for b in bus.bodies(m.DTU_STATUS)), 15, "dtu.status ok")
    for fault, kind in (("refused", "connection"), ("hang", "timeout"), ("html", "html")):
        mark = bus.mark()
        sim.set_fault(fault)
        bus.wait(lambda: any(not b["ok"] and b["error_kind"] == kind for b in bus.bodies(m.DTU_STATUS, mark)),
                 20, f"dtu.status {kind}")
        sim.set_fault(None)
        mark = bus.mark()
        bus.wait(lambda: any(b["ok"] for b in bus.bodies(m.DTU_STATUS, mark)), 20, "dtu.status ok again")


def test_process_against_a_decoy_reports_it_and_keeps_running(procs, rundir, plant, bus):
    decoy = ShellySimulator(plant, "shem", "grid").start()
    try:
        proc = start_service(procs, rundir, decoy)
        bodies = bus.wait(lambda: [b for b in bus.bodies(m.DTU_STATUS) if b["error_kind"] == "invalid"], 15,
                          "the decoy reported")
        assert decoy.url in bodies[0]["detail"] and "neither an OpenDTU nor an AhoyDTU" in bodies[0]["detail"]
        bus.wait(lambda: len([b for b in bus.bodies(m.DTU_STATUS) if b["error_kind"] == "invalid"]) >= 2, 15,
                 "asked again")
        assert proc.alive()
        assert proc.output().count("neither an OpenDTU nor an AhoyDTU") == 1     # logged once, not per retry
    finally:
        decoy.stop()


# ------------------------------------------------------------------ timing on AhoyDTU (simulated time)

@pytest.fixture
def stepped(request):
    """The AhoyDTU simulator with its default 15 s refresh; plant and clients stepped together (test_ahoy_sim)."""
    from common.clock import ManualClock
    from tests.test_ahoy_sim import Rig
    plant = Plant.demo(n_inverters=2, seed=3, scenario="quiet")
    plant.set_load_override(800.0)
    sim = AhoySimulator(plant, password=PASSWORD, **getattr(request, "param", {})).start()
    yield Rig(plant, sim, ManualClock(start_s=100.0))
    sim.stop()


def test_polls_follow_the_ahoy_refresh_so_samples_arrive_fresh(stepped):
    """A fixed 5 s interval would see each 15 s sample at a fixed phase (up to 5 s late); the loop puts its next
    poll just after the next sample is due, and looks again soon while one is late."""
    rig = stepped
    rig.advance(3.0)
    published = []
    client = rig.client()
    loop = PollLoop(client, Reader(can_control=True), lambda t, b: published.append((t, b)), Inventory(), 5.0,
                    clock=rig.clock, name="AhoyDTU", sample_period_s=lambda: client.refresh_s)
    polls = 0
    next_t = rig.clock.monotonic() + 1.7              # an arbitrary phase to the DTU's refresh
    while rig.clock.monotonic() < 220.0:
        if rig.clock.monotonic() >= next_t:
            next_t = rig.clock.monotonic() + loop.step()
            polls += 1
        rig.advance(0.25)
    samples = [b for t, b in published if t == m.DTU_INVERTER and b["reachable"]]
    ages = [b["data_age_s"] for b in samples]
    assert len(samples) >= 2 * 7 and max(ages[2:]) <= 2.5, ages       # seen within ~1 s of the DTU's sample
    assert polls <= 2 * (220 - 103) / 15 + 3                          # about two polls per refresh, not three


@pytest.mark.parametrize("stepped, flag_seen", [({"ack_min_s": 1.2, "ack_max_s": 1.8}, True),
                                               ({"ack_min_s": 0.05, "ack_max_s": 0.2}, False)],
                         indirect=["stepped"], ids=["ack-flag-seen", "read-back-only"])
def test_an_ahoy_limit_counts_from_the_inverters_ack(stepped, flag_seen):
    """The inverter takes a limit when it acknowledges it. A status read while the limit is in the air sees
    power_limit_ack fall and rise: Ok within seconds. An ack too fast to be seen is proven by the read-back one
    refresh later, and the dtu.ack's latency (the controller's output model uses it) still counts to the first read
    with the flag up, not to the read-back."""
    from services.dtu_poller.writer import STATUS_POLL_S, WriterMachine, WriterParams
    rig = stepped
    rig.advance(3.0)
    client = rig.client()
    client.livedata_summary()
    serial = rig.sim.serials[0]
    machine = WriterMachine(WriterParams(ack_timeout_s=client.limit_ack_budget_s + 5), start_t=rig.clock.monotonic())
    inventory = Inventory()
    PollLoop(client, Reader(can_control=True), lambda t, b: None, inventory, 5.0, clock=rig.clock).step()
    machine.on_inventory(*inventory.snapshot()[1:], rig.clock.monotonic())
    machine.on_command_flags(client.command_flags())
    rig.advance(4.0)
    machine.on_setpoint({"limits": [{"serial": s, "limit_pct": 30.0} for s in rig.sim.serials]}, 5,
                        rig.clock.monotonic(), rig.clock.monotonic())
    sent_t = {}
    while (cmd := machine.next_command(rig.clock.monotonic())) is not None:
        sent_t[cmd.serial] = rig.clock.monotonic()
        client.set_limit_relative(cmd.serial, cmd.limit_pct)
        machine.on_sent(cmd, rig.clock.monotonic(), None, rig.clock.monotonic())
    rig.advance(STATUS_POLL_S)                      # the writer's first status poll
    acks = rig.until(lambda: [a for t, a in machine.on_limit_status(client.limit_status(), rig.clock.monotonic())
                              if a["serial"] == serial], max_s=40.0, step_s=STATUS_POLL_S)
    ok_after_s = rig.clock.monotonic() - sent_t[serial]
    entry = [e for e in rig.sim.limit_log if e["serial"] == serial][-1]
    ack_s = entry["ack_t_s"] - entry["t_s"]
    assert acks[0]["outcome"] == "ok" and acks[0]["limit_pct"] == 30.0
    assert abs(rig.plant.by_serial[serial].limit_pct - 30.0) <= 0.5
    if flag_seen:
        assert ok_after_s <= ack_s + STATUS_POLL_S + 0.01                  # seconds, not a refresh
    else:
        assert ok_after_s > 3.0                                            # proven only with the read-back
    assert ack_s <= acks[0]["latency_s"] <= ack_s + STATUS_POLL_S + 0.01  # the first read after the ack
    assert acks[0]["sent_t_mono"] == round(sent_t[serial], 4)
