"""Shelly simulators over real HTTP: identity, Gen1 and Gen2 shapes, Basic and Digest (SHA-256) auth, counters,
the relay timer switching the plant's relay, every fault mode. The plant is stepped by the test."""
import hashlib
import json
import re
import time

import pytest
import requests
from requests.auth import HTTPDigestAuth

from sim.plant import Plant
from sim.shelly import ShellySimulator


def advance(plant, seconds, dt=0.1):
    for _ in range(int(round(seconds / dt))):
        plant.step(dt)


@pytest.fixture
def plant():
    plant = Plant.demo(n_inverters=1, seed=1, scenario="quiet")
    plant.set_load_override(700.0)
    plant.set_balcony_override(150.0)
    plant.inverters[0].apply_limit(25.0, 0.0)             # 200 W
    advance(plant, 15)
    return plant


@pytest.fixture
def servers():
    started = []
    yield started
    for sim in started:
        sim.stop()


def make(plant, servers, model, role="grid", **kw):
    kw.setdefault("noise_w", 0.0)
    kw.setdefault("hang_s", 10.0)
    sim = ShellySimulator(plant, model, role, **kw).start()
    servers.append(sim)
    return sim


def get(sim, path, **kw):
    kw.setdefault("timeout", 5)
    return requests.get(sim.url + path, **kw)


def test_identity_per_model(plant, servers):
    expected = {"shem": ("SHEM", 2), "shem3": ("SHEM-3", 3), "shsw1": ("SHSW-1", None)}
    for model, (ident, n) in expected.items():
        info = get(make(plant, servers, model, "relay" if model == "shsw1" else "grid", password="pw"), "/shelly").json()
        assert info["type"] == ident and "gen" not in info and info["auth"] is True
        assert info.get("num_emeters") == n
    for model, ident, gen, app in (("pro_em", "SPEM-002CEBEU50", 2, "ProEM"), ("em_gen3", "S3EM-002CXCEU", 3, "EMG3"),
                                   ("pro_3em", "SPEM-003CEBEU", 2, "Pro3EM")):
        sim = make(plant, servers, model, password="pw")
        info = get(sim, "/shelly").json()
        assert (info["model"], info["gen"], info["app"], info["auth_en"]) == (ident, gen, app, True)
        assert info["auth_domain"] == info["id"] == sim.device_id
        assert ("profile" in info) == (model == "pro_3em")
    assert get(make(plant, servers, "pro_em"), "/shelly").json()["auth_domain"] is None


def test_gen1_em_status_emeter_and_counters(plant, servers):
    sim = make(plant, servers, "shem")
    status = get(sim, "/status").json()
    e0 = status["emeters"][0]
    assert set(e0) == {"power", "reactive", "pf", "voltage", "is_valid", "total", "total_returned"}
    assert e0["power"] == pytest.approx(700 - 200 - 150, abs=1.5) and e0["is_valid"] is True
    assert status["emeters"][1]["power"] == 0.0 and "total_power" not in status
    assert isinstance(status["unixtime"], int) and status["relays"][0]["ison"] is False
    assert get(sim, "/emeter/0").json()["power"] == e0["power"]
    assert get(sim, "/emeter/2").status_code == 404
    total0 = e0["total"]
    advance(plant, 36)                                    # 350 W for 36 s = 3.5 Wh
    assert get(sim, "/emeter/0").json()["total"] - total0 == pytest.approx(3.5, abs=0.3)
    plant.set_load_override(100.0)                        # export 250 W
    advance(plant, 36)
    e = get(sim, "/emeter/0").json()
    assert e["power"] == pytest.approx(-250, abs=1.5) and e["total_returned"] > 0


def test_gen1_3em_phases_sum_to_grid(plant, servers):
    sim = make(plant, servers, "shem3")
    status = get(sim, "/status").json()
    assert len(status["emeters"]) == 3 and {"current", "voltage", "is_valid"} <= set(status["emeters"][0])
    assert status["total_power"] == pytest.approx(plant.grid_w, abs=0.1)
    assert status["total_power"] == pytest.approx(sum(e["power"] for e in status["emeters"]), abs=0.05)
    assert status["emeters"][1]["power"] > 0 and "emeter_n" in status


def test_balcony_role_reads_production_positive(plant, servers):
    sim = make(plant, servers, "shem", "balcony")
    assert get(sim, "/emeter/0").json()["power"] == pytest.approx(150.0)


def test_gen2_rpc_shapes(plant, servers):
    em = make(plant, servers, "pro_em")
    s = get(em, "/rpc/EM1.GetStatus?id=0").json()
    assert {"id", "current", "voltage", "act_power", "aprt_power", "pf", "freq", "calibration"} == set(s)
    assert s["act_power"] == pytest.approx(plant.grid_w, abs=0.1)
    assert set(get(em, "/rpc/EM1Data.GetStatus?id=1").json()) == {"id", "total_act_energy", "total_act_ret_energy"}
    bad = get(em, "/rpc/EM1.GetStatus?id=5")
    assert bad.status_code == 404 and bad.json()["code"] == -105
    assert get(em, "/rpc/EM1.GetStatus").json()["code"] == -103
    assert get(em, "/rpc/EM.GetStatus?id=0").status_code == 404
    post = requests.post(em.url + "/rpc", json={"id": 7, "method": "EM1.GetStatus", "params": {"id": 0}}, timeout=5)
    assert post.json()["id"] == 7 and post.json()["src"] == em.device_id and "act_power" in post.json()["result"]
    full = get(em, "/rpc/Shelly.GetStatus").json()
    assert {"em1:0", "em1:1", "em1data:0", "switch:0", "sys"} <= set(full) and "unixtime" in full["sys"]
    tri = make(plant, servers, "pro_3em")
    s = get(tri, "/rpc/EM.GetStatus?id=0").json()
    assert s["total_act_power"] == pytest.approx(plant.grid_w, abs=0.1) and s["n_current"] is None
    assert {"a_act_power", "b_voltage", "c_current", "total_current", "total_aprt_power"} <= set(s)
    d = get(tri, "/rpc/EMData.GetStatus?id=0").json()
    assert d["total_act"] == pytest.approx(d["a_total_act_energy"] + d["b_total_act_energy"] + d["c_total_act_energy"],
                                           abs=0.05)
    assert get(tri, "/rpc/Switch.Set?id=0&on=true").status_code == 404, "no relay on a Pro 3EM"


def test_gen1_basic_auth(plant, servers):
    sim = make(plant, servers, "shem", password="secret")
    for auth in (None, ("admin", "wrong"), ("other", "secret")):
        r = get(sim, "/status", auth=auth)
        assert r.status_code == 401 and r.text == "401 Unauthorized"
        assert r.headers["WWW-Authenticate"].startswith("Basic ")
    assert get(sim, "/status", auth=("admin", "secret")).json()["emeters"]
    assert get(sim, "/shelly").status_code == 200, "/shelly needs no auth"


def test_gen2_digest_auth_sha256(plant, servers):
    sim = make(plant, servers, "em_gen3", password="secret")
    r = get(sim, "/rpc/EM1.GetStatus?id=0")
    assert r.status_code == 401
    challenge = r.headers["WWW-Authenticate"]
    assert challenge.startswith("Digest ") and 'qop="auth"' in challenge and "algorithm=SHA-256" in challenge
    assert f'realm="{sim.device_id}"' in challenge
    assert get(sim, "/rpc/EM1.GetStatus?id=0", auth=("admin", "secret")).status_code == 401, "Basic is refused"
    assert get(sim, "/rpc/EM1.GetStatus?id=0", auth=HTTPDigestAuth("admin", "wrong")).status_code == 401
    session = requests.Session()
    session.auth = HTTPDigestAuth("admin", "secret")
    for _ in range(3):                                    # nonce reused with nc 1, 2, 3
        assert session.get(sim.url + "/rpc/EM1.GetStatus?id=0", timeout=5).json()["id"] == 0
    post = session.post(sim.url + "/rpc", json={"id": 1, "method": "EM1.GetStatus", "params": {"id": 1}}, timeout=5)
    assert post.json()["result"]["id"] == 1
    assert get(sim, "/rpc/Shelly.GetDeviceInfo").json()["id"] == sim.device_id

    # by hand: a replayed nc is refused
    nonce = re.search(r'nonce="([^"]+)"', get(sim, "/rpc/Sys.GetStatus").headers["WWW-Authenticate"]).group(1)
    h = lambda s: hashlib.sha256(s.encode()).hexdigest()  # noqa: E731
    uri = "/rpc/Sys.GetStatus"

    def header(nc):
        resp = h(f"{h(f'admin:{sim.device_id}:secret')}:{nonce}:{nc}:abc:auth:{h(f'GET:{uri}')}")
        return {"Authorization": f'Digest username="admin", realm="{sim.device_id}", nonce="{nonce}", uri="{uri}", '
                                 f'algorithm=SHA-256, response="{resp}", qop=auth, nc={nc}, cnonce="abc"'}
    assert get(sim, uri, headers=header("00000001")).status_code == 200
    assert get(sim, uri, headers=header("00000001")).status_code == 401
    assert get(sim, uri, headers=header("00000002")).status_code == 200


def test_gen1_relay_timer_switches_the_plant(plant, servers):
    relay = make(plant, servers, "shsw1", "relay", password="pw")
    assert get(relay, "/relay/0?turn=on&timer=3").status_code == 401
    state = get(relay, "/relay/0?turn=on&timer=3", auth=("admin", "pw")).json()
    assert state["ison"] is True and state["has_timer"] is True and state["timer_remaining"] == 3
    assert state["timer_duration"] == 3 and state["timer_started"] > 1e9
    advance(plant, 2.5)
    assert plant.relay_on and get(relay, "/relay/0?turn=on&timer=3", auth=("admin", "pw")).json()["ison"]
    advance(plant, 2.5)
    assert plant.relay_on, "re-arming restarted the countdown"
    advance(plant, 1.0)
    assert not plant.relay_on, "the flip-back timer opened the plant's relay"
    assert plant.inverters[0].ac_power_w == 0.0 and plant.inverters[0].ac_voltage_v == 0.0
    state = get(relay, "/relay/0", auth=("admin", "pw")).json()
    assert state == {"ison": False, "has_timer": False, "timer_started": 0, "timer_duration": 0,
                     "timer_remaining": 0, "source": "timer"}
    get(relay, "/relay/0?turn=on", auth=("admin", "pw"))
    assert plant.relay_on and plant.relay_timer_remaining_s() is None
    get(relay, "/relay/0?turn=off", auth=("admin", "pw"))
    assert not plant.relay_on
    assert get(relay, "/relay/0?turn=maybe", auth=("admin", "pw")).status_code == 400


def test_gen2_switch_timer_switches_the_plant(plant, servers):
    relay = make(plant, servers, "pro_em", "relay", password="pw")
    auth = HTTPDigestAuth("admin", "pw")
    plant.set_relay(False)
    r = get(relay, "/rpc/Switch.Set?id=0&on=true&toggle_after=2", auth=auth)
    assert r.json() == {"was_on": False} and plant.relay_on
    status = get(relay, "/rpc/Switch.GetStatus?id=0", auth=auth).json()
    assert status["output"] is True and status["timer_duration"] == 2 and "timer_started_at" in status
    advance(plant, 2.2)
    assert not plant.relay_on
    status = get(relay, "/rpc/Switch.GetStatus?id=0", auth=auth).json()
    assert status["output"] is False and "timer_duration" not in status
    assert get(relay, "/rpc/Switch.Set?id=0", auth=auth).json()["code"] == -103


@pytest.mark.parametrize("model", ["shem", "pro_em"])
@pytest.mark.parametrize("kind", ["http500", "http429", "html", "null", "garbage", "http401"])
def test_http_faults(plant, servers, model, kind):
    sim = make(plant, servers, model)
    path = "/status" if model == "shem" else "/rpc/EM1.GetStatus?id=0"
    sim.set_fault(kind)
    r = get(sim, path)
    expected_status = {"http500": 500, "http429": 429, "http401": 401}.get(kind, 200)
    assert r.status_code == expected_status
    if kind == "html":
        assert r.headers["Content-Type"] == "text/html"
    if kind == "null":
        assert r.json() is None
    if kind == "garbage":
        with pytest.raises(ValueError):
            json.loads(r.content)
    if kind == "http401" and model == "pro_em":
        assert r.headers["WWW-Authenticate"].startswith("Digest ")
    sim.set_fault(None)
    assert get(sim, path).status_code == 200


def test_invalid_reading(plant, servers):
    gen1 = make(plant, servers, "shem3")
    gen2 = make(plant, servers, "pro_3em")
    gen1.set_fault("invalid")
    gen2.set_fault("invalid")
    assert all(e["is_valid"] is False for e in get(gen1, "/status").json()["emeters"])
    assert get(gen2, "/rpc/EM.GetStatus?id=0").json()["errors"] == ["power_meter_failure"]
    gen1.set_fault(None)
    gen2.set_fault(None)
    assert get(gen1, "/emeter/0").json()["is_valid"] is True
    assert "errors" not in get(gen2, "/rpc/EM.GetStatus?id=0").json()


def test_stale_freezes_values_while_the_clock_runs(plant, servers):
    sim = make(plant, servers, "shem", noise_w=2.0)
    first = get(sim, "/status").json()
    sim.set_fault("stale")
    plant.set_load_override(2000.0)
    advance(plant, 5)
    frozen = get(sim, "/status").json()
    assert frozen["emeters"] == first["emeters"]
    assert frozen["uptime"] >= first["uptime"] + 5 and frozen["unixtime"] >= first["unixtime"] + 4
    sim.set_fault(None)
    advance(plant, 1.1)
    assert get(sim, "/status").json()["emeters"][0]["power"] > 1500


def test_refused_and_hang(plant, servers):
    sim = make(plant, servers, "pro_em")
    port = sim.port
    sim.set_fault("refused")
    with pytest.raises(requests.ConnectionError):
        get(sim, "/shelly", timeout=2)
    sim.set_fault("hang")
    assert sim.port == port
    with pytest.raises(requests.Timeout):
        get(sim, "/shelly", timeout=0.7)
    sim.set_fault(None)
    assert get(sim, "/shelly").json()["gen"] == 2


def test_meter_refreshes_about_once_a_second(plant, servers):
    sim = make(plant, servers, "shem", noise_w=3.0)
    a = get(sim, "/emeter/0").json()["power"]
    advance(plant, 0.5)
    assert get(sim, "/emeter/0").json()["power"] == a
    advance(plant, 0.6)
    assert get(sim, "/emeter/0").json()["power"] != a


def test_bad_model_or_role():
    plant = Plant.demo(n_inverters=1, scenario="quiet")
    for model, role in (("nope", "grid"), ("shem", "nope"), ("pro_3em", "relay"), ("shsw1", "grid")):
        with pytest.raises(ValueError):
            ShellySimulator(plant, model, role)
