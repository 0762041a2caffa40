"""OpenDTU simulator over real HTTP: both live-data shapes, the limit acknowledgement flow, validation codes, auth,
every fault mode. The plant is stepped by the test (simulated time), so timing checks are exact and fast."""
import json
import time

import pytest
import requests

from sim.opendtu import OpenDtuSimulator, parse_firmware
from sim.plant import Plant

PW = "openDTU42"
AUTH = ("admin", PW)
COMMON_KEYS = {"serial", "name", "order", "data_age", "data_age_ms", "poll_enabled", "reachable", "producing",
               "limit_relative", "limit_absolute", "radio_stats"}


def advance(plant, seconds, dt=0.1):
    for _ in range(int(round(seconds / dt))):
        plant.step(dt)


@pytest.fixture
def plant():
    plant = Plant.demo(n_inverters=2, seed=1, scenario="quiet")
    plant.set_load_override(600.0)
    return plant


def start(plant, **kw):
    kw.setdefault("poll_interval_s", 1.0)
    kw.setdefault("failure_timeout_s", 1.5)
    kw.setdefault("limit_readback_s", 5.0)
    kw.setdefault("hang_s", 10.0)
    return OpenDtuSimulator(plant, **kw).start()


@pytest.fixture
def dtu(plant):
    sim = start(plant)
    yield sim
    sim.stop()


def get(sim, path, **kw):
    kw.setdefault("timeout", 5)
    return requests.get(sim.url + path, **kw)


def post_limit(sim, body, auth=AUTH, **kw):
    data = {"data": body if isinstance(body, str) else json.dumps(body)}
    return requests.post(sim.url + "/api/limit/config", data=data, auth=auth, timeout=5, **kw)


def test_firmware_parsing():
    assert parse_firmware("v25.9.11") == (25, 9, 11)
    assert parse_firmware("v24.1.26-12-gabcdef0") == (24, 1, 26)
    assert parse_firmware("2025.09.16") == (25, 9, 16)


def test_modern_shapes_summary_and_inv(plant, dtu):
    advance(plant, 2.5)
    summary = get(dtu, "/api/livedata/status")
    assert summary.status_code == 200 and summary.headers["Content-Type"].startswith("application/json")
    doc = summary.json()
    assert set(doc) == {"inverters", "total", "hints"}
    assert [i["serial"] for i in doc["inverters"]] == dtu.serials
    for inv in doc["inverters"]:
        assert set(inv) == COMMON_KEYS, "the plain call carries no channel data since v24.2.12"
        assert isinstance(inv["serial"], str) and inv["reachable"] is True
    assert set(doc["hints"]) == {"time_sync", "radio_problem", "default_password", "pin_mapping_issue"}
    assert set(doc["total"]) == {"Power", "YieldDay", "YieldTotal"} and doc["total"]["Power"]["u"] == "W"
    serial = dtu.serials[1]
    one = get(dtu, "/api/livedata/status", params={"inv": serial}).json()
    assert len(one["inverters"]) == 1
    inv = one["inverters"][0]
    assert inv["serial"] == serial and set(inv) == COMMON_KEYS | {"AC", "DC", "INV", "events"}
    assert set(inv["AC"]["0"]) == {"Power", "Voltage", "Current", "Frequency", "PowerFactor", "ReactivePower"}
    assert set(inv["INV"]["0"]) == {"Power DC", "YieldDay", "YieldTotal", "Temperature", "Efficiency"}
    assert inv["INV"]["0"]["Temperature"]["u"] == "°C"
    assert set(inv["DC"]) == {"0", "1"}                          # HM-600: two inputs
    dc0 = inv["DC"]["0"]
    assert set(dc0) == {"name", "Power", "Voltage", "Current", "YieldDay", "YieldTotal"}
    assert dc0["Current"]["v"] == pytest.approx(dc0["Power"]["v"] / dc0["Voltage"]["v"], rel=1e-3)
    assert inv["AC"]["0"]["Power"]["v"] < inv["INV"]["0"]["Power DC"]["v"]
    assert get(dtu, "/api/livedata/status", params={"inv": "116100000000"}).json()["inverters"] == []


def test_legacy_shape_full_data_in_plain_call(plant):
    sim = start(plant, firmware="v24.1.26")
    try:
        advance(plant, 2.5)
        for params in ({}, {"inv": "116100000000"}):      # ?inv= is ignored on old firmware
            doc = get(sim, "/api/livedata/status", params=params).json()
            assert len(doc["inverters"]) == 2
            for inv in doc["inverters"]:
                assert "data_age_ms" not in inv and "radio_stats" not in inv
                assert {"AC", "DC", "INV", "events", "order"} <= set(inv)
                assert {"Power DC", "YieldDay", "YieldTotal", "Efficiency"} <= set(inv["AC"]["0"])
                assert set(inv["INV"]["0"]) == {"Temperature"}
            assert "pin_mapping_issue" not in doc["hints"]
        assert get(sim, "/api/system/status").json()["git_hash"] == "v24.1.26"
    finally:
        sim.stop()


def test_round_robin_data_age_and_boot_state(plant, dtu):
    status = get(dtu, "/api/limit/status").json()
    assert all(v["max_power"] == 0 and v["limit_set_status"] == "Ok" for v in status.values())
    doc = get(dtu, "/api/livedata/status").json()
    assert all(i["limit_absolute"] == -1 and i["limit_relative"] == 0 for i in doc["inverters"])
    ages = []
    for _ in range(12):
        advance(plant, 0.5)
        ages.append([i["data_age_ms"] for i in get(dtu, "/api/livedata/status").json()["inverters"]])
    for k in range(2):
        series = [a[k] for a in ages]
        assert max(series) <= 2000 + 100, "each inverter is polled every poll_interval × N"
        assert any(b > a for a, b in zip(series, series[1:])), "data_age grows between polls"
        assert any(b < a for a, b in zip(series, series[1:])), "and refreshes at its slot"
    status = get(dtu, "/api/limit/status").json()
    assert status[dtu.serials[0]]["max_power"] == 800
    assert status[dtu.serials[0]]["limit_relative"] == 100, "read back after limit_readback_s"
    assert get(dtu, "/api/devinfo/status", params={"inv": dtu.serials[0]}).json()["max_power"] == 800
    assert get(dtu, "/api/devinfo/status", params={"inv": "1234"}).json() == {}


def test_limit_ack_flow_pending_then_ok_then_output(plant, dtu):
    advance(plant, 3)
    serial = dtu.serials[0]
    answer = post_limit(dtu, {"serial": serial, "limit_type": 1, "limit_value": 25})
    assert answer.json() == {"type": "success", "message": "Settings saved!", "code": 1001}
    assert get(dtu, "/api/limit/status").json()[serial]["limit_set_status"] == "Pending"
    for _ in range(60):
        advance(plant, 0.1)
        status = get(dtu, "/api/limit/status").json()[serial]
        if status["limit_set_status"] != "Pending":
            break
    assert status == {"limit_relative": 25, "max_power": 800, "limit_set_status": "Ok"}
    entry = dtu.limit_log[-1]
    assert (entry["serial"], entry["type"], entry["value"], entry["w"], entry["status"]) == (serial, 1, 25, 200, "Ok")
    assert 0.2 <= entry["ack_t_s"] - entry["t_s"] <= 4.1
    advance(plant, 20)
    assert plant.by_serial[serial].ac_power_w == pytest.approx(200, abs=2)
    advance(plant, 2.1)                                  # a stats poll newer than the output change
    inv = get(dtu, "/api/livedata/status", params={"inv": serial}).json()["inverters"][0]
    assert inv["AC"]["0"]["Power"]["v"] == pytest.approx(200, abs=2)
    assert inv["limit_relative"] == 25 and inv["limit_absolute"] == 200
    # absolute, non-persistent: 300 W of 800 W
    post_limit(dtu, {"serial": serial, "limit_type": 0, "limit_value": 300})
    advance(plant, 4.5)
    assert get(dtu, "/api/limit/status").json()[serial]["limit_relative"] == 37.5


def test_newer_limit_replaces_a_queued_one_and_disabled_commands_are_silent(plant, dtu):
    advance(plant, 3)
    serial = dtu.serials[0]
    for value in (10, 20, 30):
        assert post_limit(dtu, {"serial": serial, "limit_type": 1, "limit_value": value}).json()["code"] == 1001
    advance(plant, 9)
    assert [e["status"] for e in dtu.limit_log] == ["Ok", "replaced", "Ok"]
    assert plant.by_serial[serial].limit_pct == 30
    dtu.dtu.set_command_enable(serial, False)
    assert post_limit(dtu, {"serial": serial, "limit_type": 1, "limit_value": 50}).json()["code"] == 1001
    advance(plant, 3)
    status = get(dtu, "/api/limit/status").json()[serial]
    assert status["limit_relative"] == 30 and status["limit_set_status"] == "Ok"
    assert plant.by_serial[serial].limit_pct == 30
    # a negative value wraps in the firmware (uint16 × 10): full power
    dtu.dtu.set_command_enable(serial, True)
    post_limit(dtu, {"serial": serial, "limit_type": 1, "limit_value": -5})
    advance(plant, 4.5)
    assert plant.by_serial[serial].limit_pct == 100


def test_unreachable_inverter_fails_then_cycles_and_recovers(plant, dtu):
    advance(plant, 3)
    serial = dtu.serials[1]
    before = get(dtu, "/api/livedata/status", params={"inv": serial}).json()["inverters"][0]
    dtu.set_fault("unreachable", serial=serial)
    post_limit(dtu, {"serial": serial, "limit_type": 1, "limit_value": 10})
    seen = []
    for _ in range(40):
        advance(plant, 0.2)
        seen.append(get(dtu, "/api/limit/status").json()[serial]["limit_set_status"])
    assert "Failure" in seen and seen[0] == "Pending"
    assert "Pending" in seen[seen.index("Failure"):], "the library re-sends a failed limit at the next poll"
    after = get(dtu, "/api/livedata/status", params={"inv": serial}).json()["inverters"][0]
    assert after["reachable"] is False and after["data_age"] >= 6
    assert after["AC"]["0"]["Power"] == before["AC"]["0"]["Power"], "stale values while unreachable"
    assert plant.by_serial[serial].limit_pct != 10
    dtu.set_fault(None, serial=serial)
    advance(plant, 6)
    assert get(dtu, "/api/limit/status").json()[serial] == {"limit_relative": 10, "max_power": 600,
                                                            "limit_set_status": "Ok"}
    assert get(dtu, "/api/livedata/status").json()["inverters"][1]["reachable"] is True


def test_limit_failure_keeps_stats_alive(plant, dtu):
    advance(plant, 3)
    serial = dtu.serials[0]
    dtu.set_fault("limit_failure", serial=serial)
    post_limit(dtu, {"serial": serial, "limit_type": 1, "limit_value": 40})
    advance(plant, 1.7)
    assert get(dtu, "/api/limit/status").json()[serial]["limit_set_status"] == "Failure"
    inv = get(dtu, "/api/livedata/status").json()["inverters"][0]
    assert inv["reachable"] and inv["data_age"] <= 2


def test_validation_codes(plant, dtu):
    serial = dtu.serials[0]
    post = lambda body: post_limit(dtu, body)  # noqa: E731
    r = requests.post(dtu.url + "/api/limit/config", data={"other": "1"}, auth=AUTH, timeout=5)
    assert r.status_code == 200 and r.json()["code"] == 1002 and r.json()["type"] == "warning"
    assert post("{not json").json()["code"] == 1004
    assert post({"serial": serial, "limit_type": 1}).json()["code"] == 1005
    assert post({"serial": 12345, "limit_type": 1, "limit_value": 5}).json()["code"] == 1005, "strict types"
    assert post({"serial": serial, "limit_type": 1, "limit_value": "5"}).json()["code"] == 1005
    assert post({"serial": serial, "limit_type": 1.5, "limit_value": 5}).json()["code"] == 1005
    assert post({"serial": "0", "limit_type": 1, "limit_value": 5}).json()["code"] == 5001
    assert post({"serial": serial, "limit_type": 1, "limit_value": 2251}).json() == {
        "type": "warning", "message": "Limit must between 0 and 2250!", "code": 5002, "param": {"max": 2250}}
    assert post({"serial": serial, "limit_type": 256, "limit_value": 5}).json()["code"] == 5003
    assert post({"serial": "116100000000", "limit_type": 1, "limit_value": 5}).json()["code"] == 5004
    assert post({"serial": serial, "limit_type": 3, "limit_value": 50}).json()["code"] == 1001   # persistent, new
    advance(plant, 4.5)
    assert plant.by_serial[serial].persistent_limit_pct == 50
    files = {"data": (None, json.dumps({"serial": serial, "limit_type": 1, "limit_value": 7}))}
    r = requests.post(dtu.url + "/api/limit/config", files=files, auth=AUTH, timeout=5)
    assert r.json()["code"] == 1001, "multipart form works too"


def test_old_firmware_rules(plant):
    sim = start(plant, firmware="v24.1.26")
    try:
        serial = sim.serials[0]
        assert post_limit(sim, {"serial": serial, "limit_type": 2, "limit_value": 5}).json()["code"] == 5003
        assert post_limit(sim, {"serial": serial, "limit_type": 257, "limit_value": 5}).json()["code"] == 1001
        numeric = {"serial": 12345, "limit_type": 1, "limit_value": 5}   # a number is taken as text (hex)
        assert post_limit(sim, numeric).json()["code"] == 5004
    finally:
        sim.stop()


def test_auth_basic(plant, dtu):
    body = {"serial": dtu.serials[0], "limit_type": 1, "limit_value": 5}
    for auth in (None, ("admin", "wrong"), ("user", PW)):
        r = post_limit(dtu, body, auth=auth)
        assert r.status_code == 401 and r.content == b""
        assert r.headers["WWW-Authenticate"] == 'Basic realm="Login Required"'
    r = post_limit(dtu, body, auth=None, headers={"X-Requested-With": "XMLHttpRequest"})
    assert r.status_code == 401 and "WWW-Authenticate" not in r.headers
    assert post_limit(dtu, body).json()["code"] == 1001
    assert get(dtu, "/api/livedata/status").status_code == 200, "read-only without a password"
    assert get(dtu, "/api/limit/status", auth=("admin", "wrong")).status_code == 200
    assert get(dtu, "/api/inverter/list").status_code == 401
    inv_list = get(dtu, "/api/inverter/list", auth=AUTH).json()["inverter"]
    assert [i["serial"] for i in inv_list] == dtu.serials
    assert inv_list[0]["type"] == "HM-600/700/800-2T" and inv_list[0]["command_enable_night"] is True
    assert get(dtu, "/api/security/authenticate", auth=AUTH).json()["code"] == 10002


def test_html_for_unknown_paths_and_wrong_methods(dtu):
    for r in (get(dtu, "/api/nope"), get(dtu, "/api/limit/config"),
              requests.post(dtu.url + "/api/livedata/status", timeout=5)):
        assert r.status_code == 200 and r.headers["Content-Type"] == "text/html"
        assert r.text.startswith("<!doctype html>")


@pytest.mark.parametrize("kind", ["http500", "http429", "html", "null", "garbage", "http401"])
def test_http_faults(dtu, kind):
    dtu.set_fault(kind)
    r = get(dtu, "/api/livedata/status")
    if kind == "http500":
        assert r.status_code == 500 and r.json()["type"] == "danger" and r.json()["code"] == 1007
    elif kind == "http429":
        assert r.status_code == 429 and r.headers["Retry-After"] == "60"
        assert r.headers["Content-Type"] == "text/plain"
    elif kind == "html":
        assert r.status_code == 200 and r.headers["Content-Type"] == "text/html"
    elif kind == "null":
        assert r.status_code == 200 and r.json() is None
    elif kind == "garbage":
        assert r.status_code == 200
        with pytest.raises(ValueError):
            json.loads(r.content)
    else:
        assert r.status_code == 401 and r.content == b""
    dtu.set_fault(None)
    assert get(dtu, "/api/livedata/status").json()["inverters"]


def test_refused_closes_the_port_and_reopens_it(dtu):
    port = dtu.port
    dtu.set_fault("refused")
    with pytest.raises(requests.ConnectionError):
        get(dtu, "/api/system/status", timeout=2)
    dtu.set_fault(None)
    assert dtu.port == port and get(dtu, "/api/system/status").json()["git_hash"] == "v25.9.11"


def test_hang_holds_until_cleared(dtu):
    dtu.set_fault("hang")
    start_s = time.monotonic()
    with pytest.raises(requests.Timeout):
        get(dtu, "/api/livedata/status", timeout=0.7)
    assert time.monotonic() - start_s < 5
    dtu.set_fault(None)
    assert get(dtu, "/api/livedata/status").status_code == 200


def test_stale_dtu_keeps_reachable_with_growing_age(plant, dtu):
    advance(plant, 3)
    before = get(dtu, "/api/livedata/status", params={"inv": dtu.serials[0]}).json()["inverters"][0]
    dtu.set_fault("stale")
    plant.set_load_override(100.0)
    advance(plant, 8)
    after = get(dtu, "/api/livedata/status", params={"inv": dtu.serials[0]}).json()["inverters"][0]
    assert after["reachable"] is True and after["data_age"] >= 7
    assert after["AC"]["0"] == before["AC"]["0"]
    dtu.set_fault(None)
    advance(plant, 2.5)
    assert get(dtu, "/api/livedata/status").json()["inverters"][0]["data_age"] <= 2


def test_power_off_on_restart(plant, dtu):
    advance(plant, 3)
    serial = dtu.serials[0]
    inv = plant.by_serial[serial]
    post = lambda body: requests.post(dtu.url + "/api/power/config", data={"data": json.dumps(body)},  # noqa
                                      auth=AUTH, timeout=5).json()
    assert post({"serial": serial, "power": "off"})["code"] == 1005
    assert post({"serial": "116100000000", "power": False})["code"] == 11002
    assert post({"serial": serial, "power": False})["code"] == 1001
    assert get(dtu, "/api/power/status").json()[serial] == {"power_set_status": "Pending"}
    advance(plant, 12)
    assert get(dtu, "/api/power/status").json()[serial] == {"power_set_status": "Ok"}
    assert inv.ac_power_w == 0.0
    assert get(dtu, "/api/livedata/status").json()["inverters"][0]["reachable"] is True
    post({"serial": serial, "power": True})
    advance(plant, 12)
    assert inv.ac_power_w > 100
    inv.persistent_limit_pct = 10.0
    post({"serial": serial, "restart": True})
    advance(plant, 3)
    assert inv.restarting(plant.now_s) and inv.ac_power_w == 0 and inv.yield_day_wh == 0
    advance(plant, 30)
    assert inv.limit_pct == 10.0 and inv.ac_power_w == pytest.approx(80, abs=2)


def test_reboot_refuses_then_boots_with_unknown_limits(plant):
    sim = start(plant, reboot_s=1.0)
    try:
        advance(plant, 6)
        assert get(sim, "/api/limit/status").json()[sim.serials[0]]["max_power"] == 800
        r = requests.post(sim.url + "/api/maintenance/reboot", data={"data": json.dumps({"reboot": True})},
                          auth=AUTH, timeout=5)
        assert r.json() == {"type": "success", "message": "Reboot triggered!", "code": 6001}

        def refused():
            try:
                get(sim, "/api/system/status", timeout=1)
                return False
            except requests.ConnectionError:
                return True
        from tests.support import wait_for
        wait_for(refused, 5, what="DTU down")
        wait_for(lambda: not refused(), 10, what="DTU back")
        status = get(sim, "/api/limit/status").json()[sim.serials[0]]
        assert status["max_power"] == 0 and status["limit_relative"] == 0
        assert get(sim, "/api/system/status").json()["uptime"] < 2
    finally:
        sim.stop()


def test_hms_applies_relative_limits_in_whole_percent():
    from sim.loadgen import Trace
    from sim.plant import MODELS, Battery, Inverter
    plant = Plant([Inverter("1144a0001234", MODELS["HMS-800"])], Trace([500.0]), Battery())
    sim = start(plant)
    try:
        advance(plant, 2)
        assert post_limit(sim, {"serial": "1144a0001234", "limit_type": 1, "limit_value": 6.5}).json()["code"] == 1001
        advance(plant, 4.5)
        assert get(sim, "/api/limit/status").json()["1144a0001234"]["limit_relative"] == 6.5, "DTU shows the command"
        assert plant.inverters[0].limit_pct == 6.0, "the inverter applies 6 %"
    finally:
        sim.stop()
