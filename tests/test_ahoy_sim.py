"""The AhoyDTU client against the AhoyDTU simulator over real HTTP on 127.0.0.1. The plant and the client's clock
are stepped together by the test (simulated time), so the 15 s refresh, the token's 20 min and the ack timeouts
cost no wall time."""
import http.client
import json

import pytest

from common.clock import ManualClock
from services.dtu_poller.ahoy import AhoyClient, detect_gateway
from services.dtu_poller.client import (DtuAuthError, DtuConnectionError, DtuInvalidResponse, DtuRejected,
                                        decode_json)
from sim.ahoy import AhoySimulator
from sim.opendtu import OpenDtuSimulator
from sim.plant import Plant
from sim.shelly import ShellySimulator
from tests.support import wait_for

PASSWORD = "ahoy-admin"


def http_request(port, source_ip=None, timeout_s=5.0):
    """The Request callable on http.client (the product adapts common/http.py the same way)."""
    def request(method, path, json_body=None):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s,
                                          source_address=(source_ip, 0) if source_ip else None)
        body = None if json_body is None else json.dumps(json_body)
        try:
            conn.request(method, path, body=body, headers={"Content-Type": "application/json"} if body else {})
            resp = conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            raise DtuConnectionError(f"{method} {path}: {type(exc).__name__}") from None
        finally:
            conn.close()
        ctype = (resp.getheader("Content-Type") or "").split(";")[0].strip()
        if ctype != "application/json":
            raise DtuInvalidResponse(f"{path}: HTTP {resp.status}, Content-Type {ctype!r}, not JSON",
                                     "html" if "html" in ctype else "invalid")
        return resp.status, decode_json(data.decode("utf-8"))
    return request


class Rig:
    def __init__(self, plant, sim, clock):
        self.plant, self.sim, self.clock = plant, sim, clock

    def advance(self, seconds, dt=0.25):
        for _ in range(int(round(seconds / dt))):
            self.plant.step(dt)
            self.clock.advance(dt)

    def client(self, password=PASSWORD, source_ip=None, **kw):
        return AhoyClient(http_request(self.sim.port, source_ip), host=self.sim.url, password=password,
                          clock=self.clock, **kw)

    def until(self, predicate, max_s, step_s=0.5):
        """Step simulated time until predicate() is truthy (bounded); returns its value."""
        waited = 0.0
        while waited <= max_s:
            value = predicate()
            if value:
                return value
            self.advance(step_s)
            waited += step_s
        raise AssertionError(f"not within {max_s} s of simulated time")


@pytest.fixture
def plant():
    plant = Plant.demo(n_inverters=2, seed=3, scenario="quiet")
    plant.set_load_override(800.0)
    return plant


@pytest.fixture
def rig(plant):
    sim = AhoySimulator(plant, password=PASSWORD, positions=[0, 2], field_order="shuffled", hang_s=5.0).start()
    yield Rig(plant, sim, ManualClock(start_s=100.0))
    sim.stop()


def polled(rig):
    rig.advance(3.0)                   # first refresh 2 s after boot
    client = rig.client()
    client.livedata_summary()
    return client


def inverter(rig, serial):
    return rig.plant.by_serial[serial]


# ------------------------------------------------------------------ detection and shape

def test_detection_tells_ahoy_opendtu_and_neither_apart(plant, rig):
    assert detect_gateway(http_request(rig.sim.port), rig.sim.url) == "ahoy"
    opendtu = OpenDtuSimulator(plant).start()
    shelly = ShellySimulator(plant, "shem", "grid").start()
    try:
        assert detect_gateway(http_request(opendtu.port), opendtu.url) == "opendtu"
        with pytest.raises(DtuInvalidResponse, match="neither an OpenDTU nor an AhoyDTU") as err:
            detect_gateway(http_request(shelly.port), shelly.url)
        assert shelly.url in str(err.value)
    finally:
        opendtu.stop()
        shelly.stop()


def test_unknown_paths_answer_like_ahoy(rig):
    request = http_request(rig.sim.port)
    status, doc = request("GET", "/api/record/live")
    assert status == 200 and "avail_endpoints" in doc
    assert request("GET", "/api/inverter/id/1")[1] == {"error": "inverter not found!"}     # the gap
    with pytest.raises(DtuInvalidResponse) as err:
        request("GET", "/index.html")
    assert err.value.kind == "html"


# ------------------------------------------------------------------ inventory, values, freshness

def test_inventory_with_a_gap_and_values_by_name_in_shuffled_order(rig):
    client = polled(rig)
    summary = client.livedata_summary()
    assert [(s.serial, s.order) for s in summary] == [(rig.sim.serials[0], 0), (rig.sim.serials[1], 2)]
    for s in summary:
        live = client.livedata_inverter(s.serial)
        inv = inverter(rig, s.serial)
        stats = rig.sim.dtu.by_serial_slot[s.serial].radio.stats
        assert live.reachable and live.has_channels
        assert live.ac_power_w == round(stats["ac_power_w"], 3) and live.ac_power_w > 0
        assert live.ac_voltage_v == 230.0 and live.temperature_c == round(stats["temperature_c"], 3)
        assert len(live.dc_inputs) == inv.spec.n_inputs
        assert live.dc_inputs[0].voltage_v == round(stats["dc_voltage_v"], 3)
        assert client.model(s.serial) == inv.spec.model
    names = client.fields.ac_names
    assert names.index("P_AC") != 2 or client.fields.dc_names.index("U_DC") != 0   # really shuffled


def test_freshness_follows_ts_last_success_and_stale_data_ages(rig):
    client = polled(rig)
    serial = rig.sim.serials[0]
    first = client.livedata_inverter(serial)
    assert first.data_age_s <= 2.0
    rig.advance(10.0)
    assert 10.0 <= client.livedata_inverter(serial).data_age_s <= 13.0
    rig.advance(6.0)                                       # the next refresh (every 15 s)
    assert client.livedata_inverter(serial).data_age_s <= 3.0
    rig.sim.set_fault("stale")                             # AhoyDTU stops polling; values stay as they were
    rig.advance(60.0)
    stale = client.livedata_inverter(serial)
    assert stale.data_age_s >= 55.0 and stale.reachable and stale.ac_power_w is not None
    rig.advance(300.0)
    assert not client.livedata_inverter(serial).reachable  # not available after 5 min


# ------------------------------------------------------------------ limits

def test_limit_flow_with_ack_and_read_back(rig):
    client = polled(rig)
    serial = rig.sim.serials[0]
    client.livedata_inverter(serial)
    client.set_limit_relative(serial, 25.0)
    assert rig.sim.limit_log[-1]["cmd"] == "limit_nonpersistent_absolute"
    assert client.limit_status()[serial].status == "Pending"
    status = rig.until(lambda: client.limit_status()[serial].status == "Ok" and client.limit_status()[serial],
                       max_s=client.ack_timeout_s)
    assert status.limit_relative_pct == 25.0
    assert inverter(rig, serial).limit_pct == 25.0
    assert len(rig.sim.limit_log) == 1 and rig.sim.limit_log[0]["status"] == "acked"


def test_lost_ack_times_out_resends_and_fails(rig):
    client = polled(rig)
    serial = rig.sim.serials[1]
    client.livedata_inverter(serial)
    rig.sim.set_fault("limit_failure", serial)
    client.set_limit_relative(serial, 30.0)
    rig.until(lambda: client.limit_status() and len(rig.sim.limit_log) == 2, max_s=client.ack_timeout_s + 2)
    assert client.limit_status()[serial].status == "Pending"
    rig.until(lambda: client.limit_status()[serial].status == "Failure", max_s=client.ack_timeout_s + 2)
    assert [e["status"] for e in rig.sim.limit_log] == ["lost", "lost"]
    assert inverter(rig, serial).limit_pct == 100.0          # never applied
    rig.sim.set_fault(None, serial)
    client.set_limit_relative(serial, 30.0)                  # the writer's next try gets through
    rig.until(lambda: client.limit_status()[serial].status == "Ok", max_s=client.ack_timeout_s)


def test_limits_are_clamped_to_what_the_inverter_can_do(rig):
    client = polled(rig)
    serial = rig.sim.serials[0]
    client.livedata_inverter(serial)
    rating = inverter(rig, serial).max_power_w
    client.set_limit_relative(serial, 250.0)
    assert rig.sim.limit_log[-1]["value"] == rating
    client.set_limit_relative(serial, -20.0)
    assert rig.sim.limit_log[-1]["value"] == 1.0            # never a negative that the firmware would wrap


def test_commands_before_the_first_poll_are_refused(plant):
    sim = AhoySimulator(plant, password="").start()
    try:
        client = AhoyClient(http_request(sim.port), host=sim.url, clock=ManualClock(),
                            rating_bound=lambda serial, position: 800.0)
        with pytest.raises(DtuRejected, match="ERR_LIMIT_NOT_ACCEPT"):
            client.set_limit_relative(sim.serials[0], 50.0)   # status 0: AhoyDTU takes no command
    finally:
        sim.stop()


# ------------------------------------------------------------------ token

def test_token_login_expiry_and_one_renewal(rig):
    client = polled(rig)
    serial = rig.sim.serials[0]
    client.set_power(serial, True)
    assert rig.sim.auth_count == 1 and client.auth_count == 1
    client.set_power(serial, True)
    assert rig.sim.auth_count == 1                          # the token carries
    rig.sim.expire_token()
    client.set_power(serial, True)
    assert rig.sim.auth_count == 2 and client.auth_count == 2
    rig.sim.set_fault("token_reset")                        # another client took the slot
    client.set_power(serial, True)
    assert rig.sim.auth_count == 3


def test_token_expires_after_20_min_of_simulated_silence(rig):
    client = polled(rig)
    serial = rig.sim.serials[0]
    client.set_power(serial, True)
    rig.advance(19 * 60.0, dt=1.0)
    client.set_power(serial, True)
    assert rig.sim.auth_count == 1
    rig.advance(21 * 60.0, dt=1.0)
    client.set_power(serial, True)
    assert rig.sim.auth_count == 2


def test_token_is_bound_to_the_ip_address(rig):
    client = polled(rig)
    serial = rig.sim.serials[0]
    client.set_power(serial, True)
    token = client._token
    other = http_request(rig.sim.port, source_ip="127.0.0.2")
    status, doc = other("POST", "/api/ctrl", {"id": 0, "cmd": "power", "val": 1, "token": token})
    assert doc == {"success": False, "error": "ERR_PROTECTED"}
    second = rig.client(source_ip="127.0.0.2")
    second.livedata_summary()
    second.set_power(serial, True)                          # logs in from .2: one slot, .1 loses it
    client.set_power(serial, True)
    assert rig.sim.auth_count == 3 and rig.sim.token_ip == "127.0.0.1"


def test_a_wrong_password_is_an_auth_error(rig):
    client = polled(rig)
    client = rig.client(password="wrong")
    with pytest.raises(DtuAuthError, match="ERR_AUTH"):
        client.set_power(rig.sim.serials[0], False)
    nopw = rig.client(password="")
    with pytest.raises(DtuAuthError, match="password"):
        nopw.set_power(rig.sim.serials[0], False)


# ------------------------------------------------------------------ power, restart, reboot

def test_power_off_then_on_verified(rig):
    client = polled(rig)
    serial = rig.sim.serials[0]
    client.set_power(serial, False)
    assert client.power_status()[serial] == "Pending"
    rig.until(lambda: client.power_status()[serial] == "Ok", max_s=client.ack_timeout_s)
    assert not inverter(rig, serial).enabled and inverter(rig, serial).ac_power_w == 0.0
    assert client.livedata_inverter(serial).ac_power_w == 0.0
    client.set_power(serial, True)
    rig.until(lambda: client.power_status()[serial] == "Ok", max_s=client.ack_timeout_s)
    assert inverter(rig, serial).enabled
    rig.until(lambda: client.livedata_inverter(serial).ac_power_w > 0, max_s=20.0)


def test_power_off_that_is_not_obeyed_fails(rig):
    client = polled(rig)
    serial = rig.sim.serials[1]
    rig.sim.set_fault("unreachable", serial)
    client.set_power(serial, False)
    rig.until(lambda: client.power_status()[serial] == "Failure", max_s=2 * client.ack_timeout_s + 3)
    assert inverter(rig, serial).enabled


def test_restart_ahoy_reboots_the_dtu(rig):
    client = polled(rig)
    client.reboot_dtu()

    def refused():
        try:
            client.livedata_summary()
        except DtuConnectionError:
            return True
        return False
    wait_for(refused, timeout_s=5.0, what="the DTU rebooting")
    wait_for(lambda: not refused(), timeout_s=10.0, what="the DTU back")
    assert rig.sim.token is None


# ------------------------------------------------------------------ the pieces downstream, unchanged

def test_todays_poll_loop_and_writer_machine_run_on_the_ahoy_client(rig):
    """The contract the wiring relies on: PollLoop/Reader and WriterMachine as they are, with AhoyClient in place
    of OpenDtuClient (the writer's ack timeout set from the client's budget)."""
    from common import messages as m
    from services.dtu_poller.reader import Reader
    from services.dtu_poller.service import PollLoop
    from services.dtu_poller.writer import Inventory, WriterMachine, WriterParams
    rig.advance(3.0)
    published = []
    inventory = Inventory()
    loop = PollLoop(rig.client(), Reader(can_control=True), lambda t, b: published.append((t, b)), inventory,
                    15.0, clock=rig.clock)
    loop.step()
    bodies = {b["serial"]: b for t, b in published if t == m.DTU_INVERTER}
    assert list(bodies) == rig.sim.serials and [b["index"] for b in bodies.values()] == [0, 1]
    for serial, body in bodies.items():
        inv = inverter(rig, serial)
        assert body["max_power_w"] == inv.max_power_w and body["reachable"] and body["ac_power_w"] > 0
        assert body["limit_pct"] == 100.0 and body["model"] == inv.spec.model
    status = [b for t, b in published if t == m.DTU_STATUS][-1]
    assert status["ok"] and status["firmware"] == "AhoyDTU 0.8.156"

    client = rig.client()
    machine = WriterMachine(WriterParams(ack_timeout_s=client.limit_ack_budget_s), start_t=rig.clock.monotonic())
    _v, serials, reachable, limits, poll_t, samples = inventory.snapshot()
    machine.on_inventory(serials, reachable, limits, poll_t, samples, rig.clock.monotonic())
    machine.on_command_flags(client.command_flags())
    serial = rig.sim.serials[1]
    machine.on_setpoint({"limits": [{"serial": serial, "limit_pct": 40.0}]}, 7, rig.clock.monotonic(),
                        rig.clock.monotonic())
    sent = {}
    while (cmd := machine.next_command(rig.clock.monotonic())) is not None:   # the other one: its first minimum
        assert cmd.kind == "limit"
        sent[cmd.serial] = cmd.limit_pct
        client.set_limit_relative(cmd.serial, cmd.limit_pct)
        assert machine.on_sent(cmd, rig.clock.monotonic(), None, rig.clock.monotonic()) == []
    assert sent[serial] == 40.0          # the setpoint took the place of this inverter's unsent first minimum
    acks = rig.until(lambda: [a for a in machine.on_limit_status(client.limit_status(), rig.clock.monotonic())
                              if a[1]["serial"] == serial], max_s=25.0)
    assert acks[0][1]["outcome"] == "ok" and acks[0][1]["setpoint_seq"] == 7
    assert inverter(rig, serial).limit_pct == 40.0
