"""shelly_poller's device clients against the Shelly simulators over real HTTP on 127.0.0.1.

Every meter model, each auth mode (none, right password, wrong password, missing password), each fault mode,
and the relay life signal (on, off, the flip-back timer running out when commands stop).
"""
import time

import pytest

from common import messages as m
from common.clock import SYSTEM_CLOCK
from services.shelly_poller.client import (Credentials, Gen1Meter, Gen2Meter, RelayClient, ShellyAuthError,
                                           ShellyConnectionError, ShellyHttpError, ShellyInvalidReading,
                                           ShellyInvalidResponse, ShellyRateLimited, ShellyTimeout, connect_meter,
                                           detect)
from services.shelly_poller.poller import FreshnessTracker
from sim.plant import Plant, RealtimeRunner
from sim.shelly import ShellySimulator
from tests.support import wait_for

PASSWORD = "s3cret-Pw"
METERS = {   # model -> (generation, device model prefix, phases)
    "shem": (1, "SHEM", 1),
    "shem3": (1, "SHEM-3", 3),
    "pro_em": (2, "SPEM-002", 1),
    "em_gen3": (3, "S3EM-002", 1),
    "pro_3em": (2, "SPEM-003", 3),
}


@pytest.fixture
def plant():
    p = Plant.demo(n_inverters=1, seed=1, scenario="quiet")
    runner = RealtimeRunner(p).start()
    yield p
    runner.stop()


@pytest.fixture
def shelly(plant):
    started = []

    def make(model, role="grid", password=None):
        sim = ShellySimulator(plant, model, role, password=password).start()
        started.append(sim)
        return sim

    yield make
    for sim in started:
        sim.stop()


def host_of(sim):
    return f"127.0.0.1:{sim.port}"


def read_fresh(meter, tracker=None, timeout_s=10.0):
    """The next reading whose values differ from the last one (the simulators refresh about once a second)."""
    tracker = tracker or FreshnessTracker(60.0)

    def attempt():
        reading = meter.read()
        return reading if tracker.check(reading, SYSTEM_CLOCK.monotonic())[0] == "new" else None
    return wait_for(attempt, timeout_s, interval_s=0.2, what="a fresh reading")


# ---------------------------------------------------------------- meters

@pytest.mark.parametrize("password", [None, PASSWORD], ids=["open", "password"])
@pytest.mark.parametrize("model", list(METERS))
def test_every_meter_model_reads_signed_power(plant, shelly, model, password):
    gen, prefix, n_phases = METERS[model]
    plant.set_load_override(4000.0)
    sim = shelly(model, "grid", password)
    info = detect(host_of(sim), 2.0)                     # never needs the password
    assert info.gen == gen and info.model.startswith(prefix)
    meter = connect_meter(host_of(sim), Credentials("admin", password or ""), timeout_s=2.0)
    assert isinstance(meter, Gen1Meter if gen == 1 else Gen2Meter)     # Gen2 and Gen3: the same RPC client

    # heavy load: import (+); then (with a password, to keep the run short) no load, the inverter on: export (-)
    for load_w, sign in ((4000.0, 1), (0.0, -1)) if password else ((4000.0, 1),):
        plant.set_load_override(load_w)

        def settled():
            before = SYSTEM_CLOCK.monotonic()
            reading = meter.read()
            after = SYSTEM_CLOCK.monotonic()
            assert before <= reading.sample_t_mono <= after
            return reading if reading.power_w * sign > 50 and abs(reading.power_w - plant.grid_w) < 100 else None
        reading = wait_for(settled, 15.0, interval_s=0.2, what=f"{model}: grid sign {sign:+d}")
        body = m.check_body(m.METER_GRID, reading.to_body())
        assert body["sign"] == "positive_is_import"
        assert body["device"].startswith(prefix)
        assert len(body["phases"]) == n_phases
        if n_phases == 3:
            assert abs(sum(p["power_w"] for p in body["phases"]) - body["power_w"]) < 2.0
    fresh = connect_meter(host_of(sim), Credentials("admin", password or ""), timeout_s=2.0)
    for _ in range(2):                                   # Gen2: counters read every few s, carried in between
        energy = fresh.read()
        assert energy.energy_import_kwh > 0 and energy.energy_export_kwh is not None


@pytest.mark.parametrize("model", ["shem", "pro_3em", "em_gen3"])
def test_wrong_or_missing_password_is_a_clear_auth_error(shelly, model):
    sim = shelly(model, "grid", PASSWORD)
    for password, words in (("wrong-one", "wrong password"), ("", "requires a password")):
        meter = connect_meter(host_of(sim), Credentials("admin", password), timeout_s=2.0)
        with pytest.raises(ShellyAuthError) as err:
            meter.read()
        text = str(err.value)
        assert host_of(sim) in text and words in text
        assert PASSWORD not in text and (not password or password not in text)
        assert err.value.kind == "auth"


def test_explicit_types_skip_or_narrow_detection(shelly):
    gen1 = shelly("shem3", "grid")
    meter = connect_meter(host_of(gen1), Credentials(), type_="gen1")
    assert meter.read().device == "SHEM-3"
    gen2 = shelly("pro_em", "grid", PASSWORD)
    meter = connect_meter(host_of(gen2), Credentials("admin", PASSWORD), type_="gen2")
    assert meter.read().device.startswith("SPEM-002")


# ---------------------------------------------------------------- faults

FAULTS = {
    "refused": ShellyConnectionError,
    "hang": ShellyTimeout,
    "http500": ShellyHttpError,
    "http429": ShellyRateLimited,
    "html": ShellyInvalidResponse,
    "null": ShellyInvalidResponse,
    "garbage": ShellyInvalidResponse,
    "http401": ShellyAuthError,
    "invalid": ShellyInvalidReading,
}


@pytest.mark.parametrize("model", ["shem3", "pro_em"])
def test_each_fault_is_an_error_of_its_kind_and_clears(shelly, model):
    sim = shelly(model, "grid")
    meter = connect_meter(host_of(sim), Credentials(), timeout_s=0.5)
    meter.read()
    for kind, error in FAULTS.items():
        sim.set_fault(kind)
        started = time.monotonic()
        with pytest.raises(error) as err:
            meter.read()
        assert time.monotonic() - started < 5.0, kind
        assert host_of(sim) in str(err.value), kind
        assert err.value.kind == {"html": "html", "null": "invalid", "garbage": "invalid"}.get(kind, err.value.kind)
        sim.set_fault(None)
        assert meter.read().power_w is not None, kind


@pytest.mark.parametrize("model", ["shem", "pro_3em"])
def test_frozen_readings_are_stale_and_never_new(shelly, model):
    sim = shelly(model, "grid")
    meter = connect_meter(host_of(sim), Credentials(), timeout_s=1.0)
    tracker = FreshnessTracker(stale_after_s=1.5)
    read_fresh(meter, tracker)
    sim.set_fault("stale")
    verdicts = []

    def stale():
        verdicts.append(tracker.check(meter.read(), SYSTEM_CLOCK.monotonic())[0])
        return verdicts[-1] == "stale"
    wait_for(stale, 10.0, interval_s=0.25, what="stale verdict")
    assert verdicts.count("new") <= 1            # at most the last refresh before the freeze
    assert verdicts.index("stale") >= 3          # only after stale_after_s of identical readings
    sim.set_fault(None)
    read_fresh(meter, tracker)


# ---------------------------------------------------------------- relay

def relay_urls(sim, gen, timer_s=2):
    if gen == 1:
        return (f"{sim.url}/relay/0?turn=on&timer={timer_s}", f"{sim.url}/relay/0?turn=off")
    return (f"{sim.url}/rpc/Switch.Set?id=0&on=true&toggle_after={timer_s}", f"{sim.url}/rpc/Switch.Set?id=0&on=false")


@pytest.mark.parametrize("model,gen", [("shsw1", 1), ("pro_em", 2)])
@pytest.mark.parametrize("password", [None, PASSWORD], ids=["open", "password"])
def test_relay_on_off_and_timer_expiry(plant, shelly, model, gen, password):
    sim = shelly(model, "relay", password)
    on_url, off_url = relay_urls(sim, gen, timer_s=2)
    creds = Credentials("admin", password or "")
    on, off = RelayClient(on_url, 2.0, creds), RelayClient(off_url, 2.0, creds)

    result = off.switch(False)
    assert (result.ok, result.on) == (True, False), result
    assert not plant.relay_on
    result = on.switch(True)
    assert (result.ok, result.on) == (True, True), result
    assert 0 < result.timer_remaining_s <= 2
    assert plant.relay_on
    # no more commands: the flip-back timer opens the relay by itself
    wait_for(lambda: not plant.relay_on, 10.0, what="relay timer expiry")
    result = on.switch(True)
    assert result.ok and plant.relay_on
    result = off.switch(False)
    assert (result.ok, result.on) == (True, False) and not plant.relay_on


@pytest.mark.parametrize("model,gen", [("shsw1", 1), ("pro_em", 2)])
def test_relay_answers_are_verified(plant, shelly, model, gen):
    sim = shelly(model, "relay", PASSWORD)
    on_url, _ = relay_urls(sim, gen)
    no_timer = on_url.split("&timer=")[0].split("&toggle_after=")[0]
    result = RelayClient(no_timer, 2.0, Credentials("admin", PASSWORD)).switch(True)
    assert (result.ok, result.error_kind) == (False, "no_timer")      # would never open by itself
    result = RelayClient(on_url, 2.0, Credentials()).switch(True)
    assert (result.ok, result.error_kind) == (False, "auth") and host_of(sim) in result.detail
    result = RelayClient(on_url, 2.0, Credentials("admin", "Xyzzy-9")).switch(True)
    assert (result.ok, result.error_kind) == (False, "auth") and "Xyzzy-9" not in result.detail
    sim.set_fault("hang")
    started = time.monotonic()
    result = RelayClient(on_url, 0.5, Credentials("admin", PASSWORD)).switch(True)
    assert (result.ok, result.error_kind) == (False, "timeout") and time.monotonic() - started < 5
    sim.set_fault(None)


@pytest.mark.parametrize("model", ["shem", "pro_em"])
def test_the_configured_channel_is_read(plant, shelly, model):
    plant.set_load_override(3000.0)
    sim = shelly(model, "grid")
    assert connect_meter(host_of(sim), Credentials(), channel=0).read().power_w > 1000
    assert connect_meter(host_of(sim), Credentials(), channel=1).read().power_w == 0.0   # nothing on CT 2


def test_relay_worker_dedupes_supersedes_and_refuses_old_commands(plant, shelly):
    import threading
    import types

    from common.bus import Message
    from services.shelly_poller.poller import RelayWorker

    sim = shelly("shsw1", "relay")
    section = types.SimpleNamespace(keepalive_url=f"{sim.url}/relay/0?turn=on&timer=60",
                                    switchoff_url=f"{sim.url}/relay/0?turn=off", timeout=2.0)
    sent = []
    worker = RelayWorker(section, {"grid": None, "balcony": None}, lambda t, b: sent.append(m.check_body(t, b)),
                         threading.Event(), rundir="/nonexistent")
    now = SYSTEM_CLOCK.monotonic()

    def cmd(seq, on, age_s=0.0):
        return Message(m.CTRL_RELAY, "controller", seq, now - age_s, 0.0, {"on": on, "reason": "t"})

    worker.handle([cmd(1, True)])
    assert sent[-1]["ok"] and sent[-1]["command_seq"] == 1 and plant.relay_on
    served = sim.requests_served
    worker.handle([cmd(1, True)])                            # the same envelope again: nothing happens
    assert len(sent) == 1 and sim.requests_served == served
    worker.handle([cmd(2, True), cmd(3, False)])             # only the newest is carried out
    assert [(b["command_seq"], b["ok"], b.get("error_kind")) for b in sent[1:]] == [(2, False, "superseded"),
                                                                                    (3, True, None)]
    assert not plant.relay_on and sim.requests_served == served + 1
    worker.handle([cmd(4, True, age_s=120)])                 # a stale decision is not carried out
    assert (sent[-1]["command_seq"], sent[-1]["ok"], sent[-1]["error_kind"]) == (4, False, "expired")
    assert not plant.relay_on and sim.requests_served == served + 1
    worker.handle([Message(m.CTRL_RELAY, "controller", 1, now + 1, 0.0, {"on": True, "reason": "restarted"})])
    assert sent[-1]["command_seq"] == 1 and sent[-1]["ok"] and plant.relay_on   # a restarted controller counts


def test_gen2_digest_survives_nonce_expiry(plant):
    sim = ShellySimulator(plant, "pro_3em", "grid", password=PASSWORD, nonce_lifetime_s=1.0).start()
    try:
        meter = connect_meter(host_of(sim), Credentials("admin", PASSWORD), timeout_s=2.0)
        tracker = FreshnessTracker(60.0)
        for _ in range(3):                      # each fresh reading is > 1 s apart: a new nonce every time
            assert read_fresh(meter, tracker).power_w is not None
    finally:
        sim.stop()
