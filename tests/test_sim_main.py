"""`python -m sim` as a real process: ports, control endpoint, faults through it, the battery on a private D-Bus,
clean stop on SIGTERM."""
import random
import signal
import socket
import subprocess

import dbus
import pytest
import requests
from requests.auth import HTTPDigestAuth

from tests.support import PYTHON, ROOT, wait_for


def free_base() -> int:
    for _ in range(100):
        base = random.randrange(21000, 39000, 20)
        ok = True
        for offset in (0, 1, 2, 3, 10):
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", base + offset))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no free port range")


def start_sim(procs, *args, env=None):
    base = free_base()
    proc = procs.python("sim", "sim", "--port-base", str(base), *args, env=env)
    control = f"http://127.0.0.1:{base + 10}"

    def up():
        assert proc.alive(), proc.output()
        try:
            return requests.get(control + "/state", timeout=1).ok
        except requests.RequestException:
            return False
    wait_for(up, 20, 0.1, "simulator control endpoint")
    return proc, base, control


def post(control, path, body):
    return requests.post(control + path, json=body, timeout=5)


def test_help_lists_options_and_ports():
    out = subprocess.run([PYTHON, "-m", "sim", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0
    for word in ("--scenario", "--port-base", "--inverters", "--firmware", "--grid-model", "--dtu-password",
                 "base+10", "POST /fault", "refused", "invalid"):
        assert word in out.stdout


def test_all_simulators_and_the_control_endpoint(procs, private_dbus):
    proc, base, control = start_sim(procs, "--scenario", "quiet", "--inverters", "3")
    line = wait_for(lambda: [l for l in proc.output().splitlines() if l.startswith("sim: scenario=")], 10)[0]
    for port in (base, base + 1, base + 2, base + 3, base + 10):
        assert f"127.0.0.1:{port}" in line
    assert "battery=com.victronenergy.battery.sim" in line
    state = requests.get(control + "/state", timeout=5).json()
    assert {"load_w", "grid_w", "balcony_w", "relay_on", "battery", "inverters", "limit_log", "ports"} <= set(state)
    assert len(state["inverters"]) == 3 and {"serial", "limit_pct", "ac_power_w"} <= set(state["inverters"][0])
    serial = state["inverters"][0]["serial"]

    # load override shows in the meter
    assert post(control, "/load", {"load_w": 1500}).json() == {"ok": True}
    wait_for(lambda: requests.get(f"http://127.0.0.1:{base + 1}/emeter/0", timeout=2).json()["power"] > 500, 10)
    assert post(control, "/load", {"load_w": "lots"}).status_code == 400
    assert post(control, "/fault", {"device": "toaster", "kind": "refused"}).status_code == 400
    assert post(control, "/fault", {"device": "opendtu", "kind": "melt"}).status_code == 400

    # faults through the control endpoint
    post(control, "/fault", {"device": "opendtu", "kind": "refused"})
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{base}/api/livedata/status", timeout=2)
    post(control, "/fault", {"device": "opendtu", "kind": None})
    assert requests.get(f"http://127.0.0.1:{base}/api/livedata/status", timeout=5).ok
    post(control, "/fault", {"device": "grid", "kind": "invalid"})
    assert requests.get(f"http://127.0.0.1:{base + 1}/emeter/0", timeout=5).json()["is_valid"] is False
    assert post(control, "/fault", {"device": "opendtu", "kind": "unreachable", "serial": serial}).ok
    wait_for(lambda: requests.get(control + "/state", timeout=2).json()["dtu"][serial]["reachable"] is False, 15)

    # a limit through the DTU shows in the limit log
    other = state["inverters"][1]["serial"]
    r = requests.post(f"http://127.0.0.1:{base}/api/limit/config", auth=("admin", "openDTU42"), timeout=5,
                      data={"data": '{"serial":"%s","limit_type":1,"limit_value":12.5}' % other})
    assert r.json()["code"] == 1001
    log = wait_for(lambda: [e for e in requests.get(control + "/state", timeout=2).json()["limit_log"]
                            if e["status"] == "Ok"], 10)
    assert log[0]["serial"] == other and log[0]["pct"] == 12.5

    # the relay Shelly's timer opens the plant relay
    requests.get(f"http://127.0.0.1:{base + 3}/relay/0?turn=on&timer=1", timeout=5)
    wait_for(lambda: requests.get(control + "/state", timeout=2).json()["relay_on"] is False, 10)

    # the battery on D-Bus follows the plant
    bus = dbus.bus.BusConnection(private_dbus.address)

    def value(path):
        try:
            return bus.get_object("com.victronenergy.battery.sim", path).GetValue(
                dbus_interface="com.victronenergy.BusItem", timeout=2)
        except dbus.DBusException:
            return None
    assert value("/DeviceInstance") == 512 and value("/Info/MaxChargeVoltage") is not None
    assert 40 < value("/Dc/0/Voltage") < 56
    post(control, "/battery", {"soc_pct": 42.0, "dcl_a": 20})
    wait_for(lambda: value("/Info/MaxDischargeCurrent") == 20 and 41.5 < value("/Soc") <= 42.0, 10)
    post(control, "/battery", {"present": False})
    wait_for(lambda: "com.victronenergy.battery.sim" not in bus.list_names(), 10)
    post(control, "/fault", {"device": "battery", "kind": None})
    wait_for(lambda: value("/Soc") is not None, 10)
    bus.close()

    # clean stop
    procs.stop(proc, signal.SIGTERM)
    assert proc.popen.returncode == 0 and "sim: stopped" in proc.output()


def test_options_firmware_and_gen2_grid_with_password(procs):
    proc, base, control = start_sim(procs, "--scenario", "step", "--firmware", "v24.1.26", "--grid-model", "pro_3em",
                                    "--grid-password", "gridpw", "--no-balcony", "--no-dbus")
    doc = requests.get(f"http://127.0.0.1:{base}/api/livedata/status", timeout=5).json()
    assert "Power DC" in doc["inverters"][0]["AC"]["0"], "legacy live data"
    assert requests.get(f"http://127.0.0.1:{base + 1}/shelly", timeout=5).json()["auth_en"] is True
    assert requests.get(f"http://127.0.0.1:{base + 1}/rpc/EM.GetStatus?id=0", timeout=5).status_code == 401
    em = requests.get(f"http://127.0.0.1:{base + 1}/rpc/EM.GetStatus?id=0", timeout=5,
                      auth=HTTPDigestAuth("admin", "gridpw")).json()
    assert "total_act_power" in em
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{base + 2}/shelly", timeout=2)
    assert "battery=off" in proc.output()
    procs.stop(proc, signal.SIGINT)
    assert proc.popen.returncode == 0


def test_port_in_use_is_an_error(procs):
    base = free_base()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", base + 1))
        sock.listen(1)
        proc = procs.python("sim", "sim", "--port-base", str(base), "--no-dbus")
        wait_for(lambda: not proc.alive(), 20, what="sim exits")
    assert proc.popen.returncode == 1 and "cannot start" in proc.output()
