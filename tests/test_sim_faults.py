"""The simulators' `drip` and `absurd` fault modes do what sim/README.md says, for OpenDTU and Shelly, and the
device clients turn them into their named errors (timeout within the request's deadline; invalid)."""
import json
import math
import socket
import time

import pytest

from common.http import HttpTimeout, InvalidResponse
from services.dtu_poller.client import DtuInvalidResponse, DtuTimeout, OpenDtuClient
from services.shelly_poller.client import Credentials, ShellyInvalidResponse, ShellyTimeout, connect_meter
from sim.httpbase import ABSURD_INT
from sim.opendtu import OpenDtuSimulator
from sim.plant import Plant, RealtimeRunner
from sim.shelly import ShellySimulator
from tests.support import wait_for

DTU_PATH = "/api/livedata/status"


@pytest.fixture(params=["opendtu", "shelly_gen1", "shelly_gen2"])
def device(request):
    plant = Plant.demo(n_inverters=1, seed=1, scenario="quiet")
    runner = RealtimeRunner(plant).start()
    if request.param == "opendtu":
        sim = OpenDtuSimulator(plant, poll_interval_s=0.2).start()
        path = f"{DTU_PATH}?inv={sim.serials[0]}"
        client = OpenDtuClient(sim.url)        # the channel data once polled holds floats as well as integers
        wait_for(lambda: client.livedata_inverter(sim.serials[0]).ac_voltage_v, 10.0, what="a polled inverter")
    else:
        sim = ShellySimulator(plant, "shem" if request.param == "shelly_gen1" else "pro_3em", "grid").start()
        path = "/status" if request.param == "shelly_gen1" else "/rpc/EM.GetStatus?id=0"
    yield request.param, sim, path
    sim.stop()
    runner.stop()


def raw_get(sim, path: str, read_s: float) -> tuple[bytes, list[float]]:
    """GET over a bare socket; the bytes read within `read_s` and when each arrived (s after the request)."""
    with socket.create_connection(("127.0.0.1", sim.port), timeout=read_s) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        started = time.monotonic()
        data, times = b"", []
        while time.monotonic() - started < read_s:
            sock.settimeout(max(0.01, read_s - (time.monotonic() - started)))
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            data += chunk
            times += [time.monotonic() - started] * len(chunk)
    return data, times


def client_for(kind, sim, timeout_s):
    if kind == "opendtu":
        client = OpenDtuClient(sim.url, timeout_s=timeout_s)
        return client.livedata_summary
    meter = connect_meter(f"127.0.0.1:{sim.port}", Credentials(), timeout_s=timeout_s)
    return meter.read


def test_drip_sends_one_byte_every_0_3_s_and_the_clients_give_up_at_their_deadline(device):
    kind, sim, path = device
    read = client_for(kind, sim, 0.5)          # detection before the fault
    sim.set_fault("drip")
    data, times = raw_get(sim, path, 1.5)
    assert data.startswith(b"HTTP/1.1 200") or data == b"HTTP/1.1 200"[:len(data)]
    assert 3 <= len(data) <= 6, (data, times)                     # about 1.5 s / 0.3 s
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert min(gaps) > 0.2 and max(gaps) < 0.6, gaps
    started = time.monotonic()
    with pytest.raises(HttpTimeout) as err:
        read()
    elapsed = time.monotonic() - started
    assert isinstance(err.value, DtuTimeout if kind == "opendtu" else ShellyTimeout)
    assert err.value.kind == "timeout"
    assert elapsed < 0.5 + 0.25, elapsed                           # the deadline, not 0.5 s per byte
    sim.set_fault(None)
    assert read()                                                  # and back at once


def _numbers(obj):
    if isinstance(obj, dict):
        for value in obj.values():
            yield from _numbers(value)
    elif isinstance(obj, list):
        for value in obj:
            yield from _numbers(value)
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield obj


def test_absurd_replaces_every_number_and_the_clients_call_it_invalid(device):
    kind, sim, path = device
    read = client_for(kind, sim, 2.0)
    sim.set_fault("absurd")
    data, _ = raw_get(sim, path, 3.0)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    numbers = list(_numbers(json.loads(body)))            # the literal 1.8e308 reads as inf
    assert numbers and set(numbers) <= {ABSURD_INT, math.inf}
    assert b"1.8e308" in body and str(ABSURD_INT).encode() in body and len(str(ABSURD_INT)) == 400
    with pytest.raises(InvalidResponse) as err:
        read()
    assert isinstance(err.value, DtuInvalidResponse if kind == "opendtu" else ShellyInvalidResponse)
    assert err.value.kind == "invalid"
    sim.set_fault(None)
    assert read()
