"""shelly_poller's pure parts: answer parsers, freshness, retry policy, relay verification (no device needed).

Bodies are the documented examples of docs/shelly-api.md and hostile variants of them.
"""
import copy
import math
import types

import pytest

from common import messages as m
from services.shelly_poller.client import (MeterReading, PhaseReading, ShellyInvalidReading, ShellyInvalidResponse,
                                           parse_device_info, parse_em, parse_em1, parse_gen1_status,
                                           parse_relay_answer, parse_switch_status, netloc_key, base_url,
                                           Credentials)
from services.shelly_poller.poller import (FreshnessTracker, check_keepalive_url, relay_credentials,
                                           retry_delay_s, stale_after_s)

H = "10.0.0.5"

EM_STATUS = {
    "time": "14:56", "unixtime": 1761310617,
    "relays": [{"ison": True, "has_timer": True, "timer_remaining": 603}],
    "emeters": [{"power": -28.97, "reactive": 2.15, "pf": -1.00, "voltage": 231.02, "is_valid": True,
                 "total": 4311237.3, "total_returned": 7102.9},
                {"power": 0.00, "reactive": 0.00, "pf": 0.00, "voltage": 231.02, "is_valid": True,
                 "total": 0.0, "total_returned": 0.0}],
}
EM3_STATUS = {
    "unixtime": 1761310617,
    "emeters": [{"power": 5.78, "pf": 0.01, "current": 1.72, "voltage": 240.24, "is_valid": True,
                 "total": 1244815.9, "total_returned": 20309.3},
                {"power": -100.0, "pf": -0.03, "current": 0.5, "voltage": 240.27, "is_valid": True,
                 "total": 10.0, "total_returned": 20.0},
                {"power": 50.0, "pf": -0.00, "current": 0.3, "voltage": 240.31, "is_valid": True,
                 "total": 0.0, "total_returned": 0.0}],
    "total_power": -44.22, "emeter_n": {"current": 0.00, "ixsum": 1.72, "mismatch": False, "is_valid": False},
}
EM1_STATUS = {"id": 0, "current": 22.780, "voltage": 224.6, "act_power": 5080.3, "aprt_power": 5142.4, "pf": 0.99,
              "freq": 50.0, "calibration": "factory"}
EM1_DATA = {"id": 0, "total_act_energy": 6644.90, "total_act_ret_energy": 2595.26}
EM_STATUS3 = {"id": 0, "a_current": 2.392, "a_voltage": 229.0, "a_act_power": 375.5, "a_aprt_power": 547.4,
              "a_pf": 0.76, "a_freq": 50.0, "b_current": 1.037, "b_voltage": 229.0, "b_act_power": 170.8,
              "b_aprt_power": 237.2, "b_pf": 0.78, "b_freq": 50.0, "c_current": 0.428, "c_voltage": 229.2,
              "c_act_power": 12.7, "c_aprt_power": 97.8, "c_pf": 0.53, "c_freq": 50.0, "n_current": None,
              "total_current": 3.856, "total_act_power": 558.965, "total_aprt_power": 882.413,
              "user_calibrated_phase": []}
EM_DATA3 = {"id": 0, "a_total_act_energy": 2034616.71, "a_total_act_ret_energy": 0.0,
            "b_total_act_energy": 185686.89, "b_total_act_ret_energy": 40.7, "c_total_act_energy": 369469.8,
            "c_total_act_ret_energy": 985.91, "total_act": 2589773.39, "total_act_ret": 1026.61}


def body_of(values, device="X", t=1.0):
    reading = MeterReading(device, values.power_w, values.phases, t, values.energy_import_kwh,
                           values.energy_export_kwh, values.device_time, values.values)
    return m.check_body(m.METER_GRID, reading.to_body())


# ---------------------------------------------------------------- Gen1

def test_gen1_em_uses_the_configured_channel_signed():
    v = parse_gen1_status(H, EM_STATUS, three_phase=False, channel=0)
    assert v.power_w == pytest.approx(-28.97)          # negative = export, as the device says
    assert v.device_time == 1761310617
    assert len(v.phases) == 1
    assert v.energy_import_kwh == pytest.approx(4311.2373)
    assert v.energy_export_kwh == pytest.approx(7.1029)
    assert v.phases[0].current_a == pytest.approx(-28.97 / 231.02)   # EM has no current: P / V
    body = body_of(v)
    assert body["sign"] == "positive_is_import"
    v1 = parse_gen1_status(H, EM_STATUS, three_phase=False, channel=1)
    assert v1.power_w == 0.0


def test_gen1_3em_prefers_total_power_and_sums_counters():
    v = parse_gen1_status(H, EM3_STATUS, three_phase=True)
    assert v.power_w == pytest.approx(-44.22)
    assert [p.power_w for p in v.phases] == [5.78, -100.0, 50.0]
    assert v.energy_import_kwh == pytest.approx((1244815.9 + 10.0) / 1000)
    assert v.energy_export_kwh == pytest.approx((20309.3 + 20.0) / 1000)
    old_fw = copy.deepcopy(EM3_STATUS)
    del old_fw["total_power"]                           # before fw 1.10.5
    assert parse_gen1_status(H, old_fw, three_phase=True).power_w == pytest.approx(-44.22)
    body_of(v)


def test_gen1_neutral_is_valid_false_is_normal_but_phase_invalid_is_not():
    bad = copy.deepcopy(EM3_STATUS)
    bad["emeters"][1]["is_valid"] = False
    with pytest.raises(ShellyInvalidReading, match=H):
        parse_gen1_status(H, bad, three_phase=True)


@pytest.mark.parametrize("mutate", [
    lambda b: None,                                          # null body
    lambda b: [],                                            # a list
    lambda b: {**b, "emeters": None},
    lambda b: {**b, "emeters": []},
    lambda b: {**b, "emeters": [{**b["emeters"][0], "power": None}, b["emeters"][1]]},
    lambda b: {**b, "emeters": [{**b["emeters"][0], "power": "12"}, b["emeters"][1]]},
    lambda b: {**b, "emeters": [{**b["emeters"][0], "power": True}, b["emeters"][1]]},
    lambda b: {**b, "emeters": [{**b["emeters"][0], "power": math.nan}, b["emeters"][1]]},
    lambda b: {**b, "emeters": [{**b["emeters"][0], "power": 1e300}, b["emeters"][1]]},
    lambda b: {k: v for k, v in b.items() if k != "emeters"},
])
def test_gen1_hostile_bodies_are_invalid_responses(mutate):
    body = mutate(copy.deepcopy(EM_STATUS))
    with pytest.raises(ShellyInvalidResponse) as err:
        parse_gen1_status(H, body, three_phase=False)
    assert H in str(err.value)


def test_gen1_bad_optional_values_become_none_never_zero():
    b = copy.deepcopy(EM_STATUS)
    b["emeters"][0].update(voltage=None, total="x", total_returned=-5)
    v = parse_gen1_status(H, b, three_phase=False)
    assert v.phases[0].voltage_v is None and v.phases[0].current_a is None
    assert v.energy_import_kwh is None and v.energy_export_kwh is None
    phase = body_of(v)["phases"][0]
    assert "voltage_v" not in phase and phase["power_w"] == pytest.approx(-28.97)


# ---------------------------------------------------------------- Gen2

def test_em1_power_and_counters():
    v = parse_em1(H, EM1_STATUS, EM1_DATA)
    assert v.power_w == pytest.approx(5080.3)
    assert v.phases[0].voltage_v == 224.6 and v.phases[0].current_a == 22.78
    assert v.energy_import_kwh == pytest.approx(6.6449) and v.energy_export_kwh == pytest.approx(2.59526)
    body_of(v)
    assert parse_em1(H, EM1_STATUS).energy_import_kwh is None


@pytest.mark.parametrize("errors", [["power_meter_failure"], ["out_of_range:act_power"], ["ct_type_not_set"]])
def test_em1_errors_make_the_reading_invalid(errors):
    with pytest.raises(ShellyInvalidReading, match="power_meter_failure|out_of_range|ct_type"):
        parse_em1(H, {**EM1_STATUS, "errors": errors})
    parse_em1(H, {**EM1_STATUS, "errors": []})              # empty: fine
    parse_em1(H, {**EM1_STATUS, "flags": ["count_disabled"]})


@pytest.mark.parametrize("status", [None, "x", {}, {**EM1_STATUS, "act_power": None},
                                    {**EM1_STATUS, "act_power": math.inf}])
def test_em1_missing_power_is_invalid(status):
    with pytest.raises(ShellyInvalidResponse):
        parse_em1(H, status)


def test_em_three_phase_total_and_counters():
    v = parse_em(H, EM_STATUS3, EM_DATA3)
    assert v.power_w == pytest.approx(558.965)
    assert [p.power_w for p in v.phases] == [375.5, 170.8, 12.7]
    assert v.energy_import_kwh == pytest.approx(2589.77339)
    assert v.phases[2].energy_export_kwh == pytest.approx(0.98591)
    body_of(v)
    no_total = {k: val for k, val in EM_STATUS3.items() if k != "total_act_power"}
    assert parse_em(H, no_total).power_w == pytest.approx(375.5 + 170.8 + 12.7)
    with pytest.raises(ShellyInvalidResponse):
        parse_em(H, {**no_total, "b_act_power": None})
    with pytest.raises(ShellyInvalidReading):
        parse_em(H, {**EM_STATUS3, "errors": ["phase_sequence"]})
    with pytest.raises(ShellyInvalidReading):
        parse_em(H, {**EM_STATUS3, "b_errors": ["out_of_range:voltage"]})
    parse_em(H, {**EM_STATUS3, "a_flags": ["overcurrent"]})


# ---------------------------------------------------------------- detection

def test_device_info_and_component_choice():
    gen1 = parse_device_info(H, {"type": "SHEM", "mac": "C4", "auth": True, "num_emeters": 2})
    assert (gen1.gen, gen1.model, gen1.meter_component, gen1.auth_required) == (1, "SHEM", "gen1", True)
    assert parse_device_info(H, {"type": "SHEM-3"}).meter_component == "gen1_3phase"
    assert parse_device_info(H, {"type": "SHSW-1"}).meter_component is None
    pro3 = parse_device_info(H, {"id": "shellypro3em-aabb", "model": "SPEM-003CEBEU", "gen": 2,
                                 "app": "Pro3EM", "auth_en": False, "auth_domain": None, "profile": "triphase"})
    assert (pro3.gen, pro3.meter_component) == (2, "em")
    mono = parse_device_info(H, {"model": "SPEM-003CEBEU", "gen": 2, "profile": "monophase"})
    assert mono.meter_component == "em1"
    assert parse_device_info(H, {"model": "SPEM-002CEBEU50", "gen": 2, "app": "ProEM"}).meter_component == "em1"
    assert parse_device_info(H, {"model": "S3EM-002CXCEU", "gen": 3}).meter_component == "em1"
    assert parse_device_info(H, {"model": "SNSW-001X16EU", "gen": 2}).meter_component is None
    for bad in (None, [], {"gen": "2", "model": "x"}, {"gen": 2}, {"gen": True, "model": "x"}):
        with pytest.raises(ShellyInvalidResponse):
            parse_device_info(H, bad)


# ---------------------------------------------------------------- freshness and retry

def reading(power, t, device_time=None, extra=(1.0,)):
    return MeterReading("X", power, (PhaseReading(power),), t, device_time=device_time, values=extra + (power,))


def test_freshness_repeat_then_stale_then_new():
    f = FreshnessTracker(stale_after_s=5.0)
    assert f.check(reading(10.0, 0), 0.0)[0] == "new"
    assert f.check(reading(10.0, 1), 1.0)[0] == "repeat"   # the same value is not a new sample
    assert f.check(reading(10.0, 2, device_time=5), 4.9)[0] == "repeat"
    verdict, age = f.check(reading(10.0, 6), 6.0)
    assert verdict == "stale" and age == pytest.approx(6.0)
    assert f.check(reading(11.0, 7), 7.0)[0] == "new"


def test_freshness_device_reboot_counts_as_change():
    f = FreshnessTracker(stale_after_s=5.0)
    assert f.check(reading(0.0, 0, device_time=1000), 0.0)[0] == "new"
    assert f.check(reading(0.0, 1, device_time=1001), 1.0)[0] == "repeat"
    assert f.check(reading(0.0, 2, device_time=3), 2.0)[0] == "new"


def test_retry_policy():
    assert stale_after_s(1.0) == 5.0 and stale_after_s(5.0) == 12.5
    for n in range(1, 50):
        assert retry_delay_s("grid", 1.0, n, "timeout") == 1.0
        assert retry_delay_s("grid", 1.0, n, "rate_limited") <= 5.0
        assert retry_delay_s("grid", 1.0, n, "auth") <= 5.0
        assert retry_delay_s("balcony", 5.0, n, "timeout") <= 30.0
    assert retry_delay_s("balcony", 5.0, 1, "timeout") == 5.0
    assert retry_delay_s("balcony", 5.0, 3, "timeout") == 20.0
    assert retry_delay_s("grid", 10.0, 3, "auth") == 10.0


# ---------------------------------------------------------------- relay

def test_relay_gen1_answer_is_verified():
    on = {"ison": True, "has_timer": True, "timer_started": 1, "timer_duration": 900, "timer_remaining": 900,
          "overpower": False, "is_valid": True, "source": "http"}
    r = parse_relay_answer(on, True)
    assert (r.ok, r.on, r.timer_remaining_s) == (True, True, 900)
    r = parse_relay_answer({**on, "has_timer": False, "timer_remaining": 0}, True)
    assert (r.ok, r.on, r.error_kind) == (False, True, "no_timer")
    r = parse_relay_answer({**on, "ison": False}, True)
    assert (r.ok, r.on, r.error_kind) == (False, False, "unconfirmed")
    r = parse_relay_answer({"ison": False, "has_timer": False}, False)
    assert (r.ok, r.on) == (True, False)
    r = parse_relay_answer({"ison": True}, False)
    assert (r.ok, r.on) == (False, True)
    for bad in (None, [], {"ison": "true"}, {"foo": 1}):
        assert parse_relay_answer(bad, True).ok is False


def test_relay_gen2_answer_needs_switch_status():
    r = parse_relay_answer({"was_on": False}, True)
    assert r.ok and r.on is None
    assert parse_relay_answer({"id": 1, "result": {"was_on": True}}, True).ok
    assert not parse_relay_answer({"was_on": "no"}, True).ok
    s = parse_switch_status({"id": 0, "output": True, "timer_started_at": 1.0, "timer_duration": 900}, True)
    assert (s.ok, s.on, s.timer_remaining_s) == (True, True, 900)
    s = parse_switch_status({"id": 0, "output": True}, True)
    assert (s.ok, s.error_kind) == (False, "no_timer")
    s = parse_switch_status({"id": 0, "output": False}, False)
    assert (s.ok, s.on) == (True, False)


def test_relay_credentials_follow_the_meter_with_the_same_host():
    grid = types.SimpleNamespace(host="192.168.1.51", username="u", password="pw")
    balcony = types.SimpleNamespace(host="http://192.168.1.52:8080", username="admin", password="b")
    meters = {"grid": grid, "balcony": balcony}
    assert relay_credentials("http://192.168.1.51/relay/0?turn=on&timer=900", meters) == (Credentials("u", "pw"), "grid")
    assert relay_credentials("http://192.168.1.51:80/relay/0", meters)[1] == "grid"
    assert relay_credentials("http://192.168.1.52:8080/rpc/Switch.Set?id=0&on=true", meters)[1] == "balcony"
    assert relay_credentials("http://192.168.1.52/rpc/Switch.Set", meters) == (Credentials(), None)
    assert relay_credentials("http://192.168.1.60/relay/0", {"grid": grid, "balcony": None})[1] is None
    assert "pw" not in repr(Credentials("u", "pw"))


def test_url_helpers_and_keepalive_check():
    assert base_url("10.0.0.1:81/") == "http://10.0.0.1:81"
    assert netloc_key("10.0.0.1") == netloc_key("http://10.0.0.1:80/x") == "10.0.0.1:80"
    assert check_keepalive_url("http://h/relay/0?turn=on&timer=900") is None
    assert check_keepalive_url("http://h/rpc/Switch.Set?id=0&on=true&toggle_after=900") is None
    assert "timer" in check_keepalive_url("http://h/relay/0?turn=on")


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_poll_that_keeps_failing_with_a_bug_ends_the_thread_after_the_step_guard_limit():
    """A bug (not a ShellyError) in a poll is logged and retried; MAX_FAILED_STEPS in a row end the worker thread,
    which makes the main thread exit 1 for a restart (see services/shelly_poller/__main__.py)."""
    import threading

    from common.clock import ManualClock
    from services.shelly_poller.poller import MAX_FAILED_STEPS, MeterPoller

    calls = []

    def broken_connect(*_args, **_kwargs):
        calls.append(1)
        raise KeyError("a bug, not a device error")

    section = types.SimpleNamespace(host="127.0.0.1:9", username="admin", password="", type="gen1", channel=0,
                                    poll_interval=0.001, timeout=0.1)
    stop = threading.Event()
    poller = MeterPoller("grid", section, lambda t, b: None, stop, clock=ManualClock(0.0), connect=broken_connect)
    poller.thread.start()
    poller.thread.join(10.0)
    stop.set()
    assert not poller.thread.is_alive()
    assert len(calls) == MAX_FAILED_STEPS
