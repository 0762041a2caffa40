"""dtu_poller logic without a server: parsing both firmware shapes, freshness, the writer state machine."""
import copy

import pytest

from common import messages as m
from services.dtu_poller.client import (DtuAuthError, DtuConnectionError, DtuInvalidResponse, DtuRejected,
                                        LimitStatus, base_url, check_command_answer, decode_json,
                                        parse_limit_status, parse_livedata_inverter, parse_livedata_summary)
from services.dtu_poller.reader import PollResult, Reader, limit_fields, max_power_w
from services.dtu_poller.service import backoff_s
from services.dtu_poller.client import DtuRateLimited
from services.dtu_poller.writer import STATUS_POLL_S, Command, WriterMachine, WriterParams

SERIAL = "112182345678"

MODERN = {"inverters": [{
    "serial": SERIAL, "name": "HM-400 Keller", "order": 0, "data_age": 3, "data_age_ms": 3120,
    "poll_enabled": True, "reachable": True, "producing": True, "limit_relative": 48, "limit_absolute": 192,
    "AC": {"0": {"Power": {"v": 186.3, "u": "W", "d": 1}, "Voltage": {"v": 232.9, "u": "V", "d": 1}}},
    "DC": {"0": {"name": {"u": "Pytes"}, "Power": {"v": 196.4, "u": "W", "d": 1},
                 "Voltage": {"v": 52.3, "u": "V", "d": 1}, "Current": {"v": 3.76, "u": "A", "d": 2},
                 "YieldTotal": {"v": 423.87, "u": "kWh", "d": 3}}},
    "INV": {"0": {"Power DC": {"v": 196.4, "u": "W", "d": 1}, "YieldTotal": {"v": 402.116, "u": "kWh", "d": 3},
                  "Temperature": {"v": 31.6, "u": "°C", "d": 1}}},
    "events": 2}], "total": {}, "hints": {}}

LEGACY = {"inverters": [{
    "serial": SERIAL, "name": "HM-400 Keller", "order": 0, "data_age": 4, "poll_enabled": True,
    "reachable": True, "producing": True, "limit_relative": 50, "limit_absolute": 200,
    "AC": {"0": {"Power": {"v": 150.5, "u": "W", "d": 1}, "Voltage": {"v": 231.0, "u": "V", "d": 1},
                 "YieldTotal": {"v": 12.5, "u": "kWh", "d": 3}, "Power DC": {"v": 160, "u": "W", "d": 1}}},
    "DC": {"0": {"name": {"u": ""}, "Power": {"v": 80, "u": "W", "d": 1}, "Voltage": {"v": 51.0, "u": "V", "d": 1},
                 "Current": {"v": 1.5, "u": "A", "d": 2}},
           "1": {"name": {"u": ""}, "Power": {"v": 80, "u": "W", "d": 1}, "Voltage": {"v": 51.2, "u": "V", "d": 1},
                 "Current": {"v": 1.6, "u": "A", "d": 2}}},
    "INV": {"0": {"Temperature": {"v": 28.0, "u": "°C", "d": 1}}}, "events": 0}]}


def test_both_firmware_shapes_parse_to_the_same_fields():
    modern = parse_livedata_inverter(MODERN, SERIAL)
    assert (modern.ac_power_w, modern.ac_voltage_v, modern.temperature_c) == (186.3, 232.9, 31.6)
    assert modern.yield_total_kwh == 402.116            # from INV."0", not DC
    assert modern.data_age_s == pytest.approx(3.12) and modern.age_resolution_s == 0.001
    legacy = parse_livedata_inverter(LEGACY, SERIAL)
    assert legacy.yield_total_kwh == 12.5               # fallback AC."0" before v24.2.12
    assert legacy.data_age_s == 4 and legacy.age_resolution_s == 1.0
    assert [d.voltage_v for d in legacy.dc_inputs] == [51.0, 51.2]
    assert parse_livedata_inverter(MODERN, "999999999999") is None
    assert [s.serial for s in parse_livedata_summary(MODERN)] == [SERIAL]
    two = copy.deepcopy(MODERN)
    other = dict(two["inverters"][0], serial="1164a00a6340", order=0)
    two["inverters"][0]["order"] = 1
    two["inverters"].append(other)
    assert [s.serial for s in parse_livedata_summary(two)] == ["1164a00a6340", SERIAL]   # by `order`


def test_null_and_missing_values_are_none_never_zero():
    doc = copy.deepcopy(MODERN)
    inv = doc["inverters"][0]
    inv["AC"]["0"]["Power"]["v"] = None                  # NaN prints as null
    del inv["INV"]["0"]["Temperature"]
    live = parse_livedata_inverter(doc, SERIAL)
    assert live.ac_power_w is None and live.temperature_c is None
    assert live.ac_voltage_v == 232.9


@pytest.mark.parametrize("mutate", [
    lambda d: d["inverters"][0]["AC"]["0"].__setitem__("Power", 186.3),            # bare number, not {v,u,d}
    lambda d: d["inverters"][0]["AC"]["0"].__setitem__("Power", {"v": "186", "u": "W"}),
    lambda d: d["inverters"][0]["AC"]["0"].__setitem__("Power", {"u": "W"}),
    lambda d: d["inverters"][0].__delitem__("reachable"),
    lambda d: d["inverters"][0].__setitem__("serial", 112182345678),                  # number, not string
    lambda d: d["inverters"][0].__delitem__("data_age"),
    lambda d: d["inverters"][0].__setitem__("AC", []),
    lambda d: d.__setitem__("inverters", None),
    # absurd numbers (#14.5): a 400-digit integer once raised OverflowError and crash-looped dtu_poller
    lambda d: d["inverters"][0]["AC"]["0"]["Power"].__setitem__("v", 10 ** 400),
    lambda d: d["inverters"][0]["AC"]["0"]["Power"].__setitem__("v", float("inf")),
    lambda d: d["inverters"][0]["AC"]["0"]["Power"].__setitem__("v", 1e300),
    lambda d: d["inverters"][0]["INV"]["0"]["Temperature"].__setitem__("v", 900.0),
    lambda d: d["inverters"][0].__setitem__("limit_relative", 180),
    lambda d: d["inverters"][0].__setitem__("data_age", -3),
    lambda d: d["inverters"][0].__setitem__("order", 10 ** 400),
])
def test_bad_shapes_are_invalid_responses(mutate):
    doc = copy.deepcopy(MODERN)
    del doc["inverters"][0]["data_age_ms"]
    mutate(doc)
    with pytest.raises(DtuInvalidResponse):
        parse_livedata_inverter(doc, SERIAL)
        parse_livedata_summary(doc)


def test_limit_status_numbers_are_checked_and_odd_channel_keys_ignored():
    with pytest.raises(DtuInvalidResponse):
        parse_limit_status({SERIAL: {"limit_relative": 48, "max_power": 10 ** 400, "limit_set_status": "Ok"}})
    with pytest.raises(DtuInvalidResponse):
        parse_limit_status({SERIAL: {"limit_relative": -5, "max_power": 400, "limit_set_status": "Ok"}})
    doc = copy.deepcopy(LEGACY)
    doc["inverters"][0]["DC"]["\u00b2"] = {"Power": {"v": 1}}          # "²".isdigit() is true; int("²") raises
    doc["inverters"][0]["DC"]["10"] = {}
    assert len(parse_livedata_inverter(doc, SERIAL).dc_inputs) == 3     # 0, 1, 10 in numeric order


def test_garbage_nan_literals_and_null_bodies_are_invalid():
    for text in ("<html>", '{"a": NaN}', "{", '{"x": Infinity}', '{"x": 1.8e308}', '{"x": ' + "9" * 400 + "}"):
        with pytest.raises(DtuInvalidResponse):
            decode_json(text)
    with pytest.raises(DtuInvalidResponse):
        parse_livedata_summary(None)
    with pytest.raises(DtuInvalidResponse):
        parse_limit_status(None)


def test_command_answers_warning_and_danger_are_rejections_with_code():
    assert check_command_answer({"type": "success", "message": "Settings saved!", "code": 1001})
    with pytest.raises(DtuRejected) as err:
        check_command_answer({"type": "warning", "message": "Limit must between 0 and 2250!", "code": 5002})
    assert err.value.code == 5002
    with pytest.raises(DtuRejected):
        check_command_answer({"type": "danger", "message": "x", "code": 1007})
    with pytest.raises(DtuInvalidResponse):
        check_command_answer([])


def test_host_forms_and_backoff():
    assert base_url("192.168.1.5") == "http://192.168.1.5"
    assert base_url("dtu:8080") == "http://dtu:8080"
    assert base_url("http://dtu:8080/") == "http://dtu:8080"
    assert [backoff_s(2, n) for n in (1, 2, 3, 4, 5, 6)] == [2, 4, 8, 10, 10, 10]
    assert backoff_s(2, 1, DtuRateLimited("x", 60)) == 60


def test_max_power_from_status_or_limits_and_none_when_unknown():
    live = parse_livedata_inverter(MODERN, SERIAL)
    assert max_power_w(live, LimitStatus(48, 400, "Ok")) == 400
    assert max_power_w(live, LimitStatus(48, 0, "Ok")) == 400       # 192 W × 100 / 48 %
    assert limit_fields(live, LimitStatus(48, 400, "Ok"), 400) == (48, 192)
    assert limit_fields(live, LimitStatus(0, 400, "Ok"), 400) == (None, None)   # 0 after a DTU boot: unknown
    live.limit_absolute_w = -1
    assert max_power_w(live, LimitStatus(48, 0, "Ok")) is None
    live.limit_relative_pct = 0
    live.limit_absolute_w = 0
    assert max_power_w(live, None) is None


def _poll(doc, arrival_t, limits=None):
    summary = parse_livedata_summary(doc)
    lives = {}
    for inv in summary:
        live = parse_livedata_inverter(doc, inv.serial)
        lives[inv.serial] = (live, arrival_t, live.age_resolution_s)
    return PollResult(summary, lives, limits or {}, arrival_t)


def _with_age(doc, age_s, power=None):
    doc = copy.deepcopy(doc)
    inv = doc["inverters"][0]
    inv["data_age"] = int(age_s)
    inv.pop("data_age_ms", None)
    if power is not None:
        inv["AC"]["0"]["Power"]["v"] = power
    return doc


def test_reader_never_republishes_an_old_sample():
    reader = Reader(can_control=True)
    published = []

    def poll(t, age, power=None):
        out = reader.on_poll(_poll(_with_age(LEGACY, age, power), t))
        for topic, body in out:
            m.check_body(topic, body)
        published.extend(b for tp, b in out if tp == m.DTU_INVERTER)
        return [b for tp, b in out if tp == m.DTU_STATUS][0]

    status = poll(100.0, 1)
    assert status["ok"] and status["serials"] == [SERIAL] and status["data_age_s"] == {SERIAL: 1}
    assert len(published) == 1 and published[0]["sample_t_mono"] == pytest.approx(99.0)
    poll(102.0, 3)                  # same sample, older
    poll(104.3, 5)                  # whole-second truncation jitter
    poll(106.0, 7)
    assert len(published) == 1
    poll(108.0, 0, power=120)        # data_age went down: a new sample
    assert len(published) == 2 and published[1]["ac_power_w"] == 120
    assert published[1]["sample_t_mono"] > published[0]["sample_t_mono"]
    poll(110.0, 2)
    assert len(published) == 2
    # DC sums over all inputs; dc_voltage is input 0
    assert published[1]["dc_current_a"] == pytest.approx(3.1) and published[1]["dc_voltage_v"] == 51.0


def test_reader_unreachable_once_without_values_and_errors_publish_no_values():
    reader = Reader(can_control=False)
    out = reader.on_poll(_poll(_with_age(LEGACY, 1), 10.0))
    first = [b for t, b in out if t == m.DTU_INVERTER][0]
    doc = _with_age(LEGACY, 3)
    doc["inverters"][0]["reachable"] = False
    out = reader.on_poll(_poll(doc, 12.0))
    bodies = [b for t, b in out if t == m.DTU_INVERTER]
    assert len(bodies) == 1 and bodies[0]["reachable"] is False
    assert bodies[0]["ac_power_w"] is None and bodies[0]["sample_t_mono"] == first["sample_t_mono"]
    status = [b for t, b in out if t == m.DTU_STATUS][0]
    assert status["unreachable"] == [SERIAL] and status["can_control"] is False
    doc = _with_age(LEGACY, 5)
    doc["inverters"][0]["reachable"] = False
    assert not [b for t, b in reader.on_poll(_poll(doc, 14.0)) if t == m.DTU_INVERTER]
    out = reader.on_error("html", "Content-Type text/html", 16.0)
    assert out == [(m.DTU_STATUS, out[0][1])] and out[0][1]["ok"] is False
    assert out[0][1]["error_kind"] == "html" and out[0][1]["error_count"] == 1
    m.check_body(m.DTU_STATUS, out[0][1])


def test_inverter_appearing_and_disappearing_keeps_dtu_order():
    reader = Reader(can_control=True)
    two = copy.deepcopy(LEGACY)
    second = copy.deepcopy(two["inverters"][0])
    second["serial"], second["name"] = "1164a00a6340", "HMS-2000"
    two["inverters"].append(second)
    out = reader.on_poll(_poll(two, 10.0))
    assert [b["index"] for t, b in out if t == m.DTU_INVERTER] == [0, 1]
    assert out[-1][1]["serials"] == [SERIAL, "1164a00a6340"]
    out = reader.on_poll(_poll(_with_age(LEGACY, 0), 13.0))
    assert out[-1][1]["serials"] == [SERIAL]


# ------------------------------------------------------------------ writer machine

def machine(**kw):
    params = WriterParams(**{"min_pct": 2.0, "setpoint_timeout_s": 10.0, "ack_timeout_s": 15.0, **kw})
    w = WriterMachine(params, start_t=0.0)
    w.on_inventory([SERIAL, "b"], {SERIAL, "b"}, {}, None)
    for slot in w.slots.values():        # the first-seen minimum (test_first_seen_...) is not what these test
        slot.desired_pct = None
    return w


def setpoint(*limits, restart=(), reboot=False):
    body = {"limits": [{"serial": s, "limit_pct": p} for s, p in limits]}
    if restart:
        body["restart"] = list(restart)
    if reboot:
        body["dtu_reboot"] = True
    return m.check_body(m.CTRL_SETPOINT, body)


def acks(out):
    return [b for t, b in out if t == m.DTU_ACK]


def test_writer_sends_clamped_follows_status_and_reports_latency():
    w = machine()
    w.on_setpoint(setpoint((SERIAL, 0.5), ("b", 140)), seq=7, msg_t=1.0, now=1.0)
    cmd = w.next_command(1.0)
    assert (cmd.kind, cmd.serial, cmd.limit_pct, cmd.setpoint_seq) == ("limit", SERIAL, 2.0, 7)  # min clamp
    assert w.on_sent(cmd, 1.0, None, 1.05) == []
    cmd_b = w.next_command(1.05)
    assert (cmd_b.serial, cmd_b.limit_pct) == ("b", 100.0)
    w.on_sent(cmd_b, 1.05, None, 1.1)
    assert w.next_command(1.1) is None                  # one in flight per inverter
    assert w.status_poll_due(1.1) == "limit"
    assert w.status_poll_due(1.1 + STATUS_POLL_S - 0.05) is None    # not faster than every STATUS_POLL_S
    out = w.on_limit_status({SERIAL: LimitStatus(2.0, 400, "Pending"), "b": LimitStatus(100, 400, "Failure")}, 1.3)
    [fail] = acks(out)
    assert fail["serial"] == "b" and fail["outcome"] == "failure" and fail["latency_s"] == pytest.approx(0.25)
    out = w.on_limit_status({SERIAL: LimitStatus(2.0, 400, "Ok")}, 1.6)
    [ok] = acks(out)
    assert ok["outcome"] == "ok" and ok["latency_s"] == pytest.approx(0.6) and ok["sent_t_mono"] == 1.0
    assert ok["setpoint_seq"] == 7 and ok["limit_pct"] == 2.0
    for body in (ok, fail):
        m.check_body(m.DTU_ACK, body)
    # unchanged (< 0.5 %) limit is not sent again; the failed one is retried after a pause
    w.on_setpoint(setpoint((SERIAL, 2.3), ("b", 100)), seq=8, msg_t=2.0, now=2.0)
    assert w.next_command(2.0) is None
    retry = w.next_command(7.0)
    assert (retry.serial, retry.limit_pct, retry.setpoint_seq) == ("b", 100.0, 8)


def test_writer_newer_setpoint_replaces_unsent_and_timeout_is_failure():
    w = machine(setpoint_timeout_s=60)
    w.on_setpoint(setpoint((SERIAL, 30)), seq=1, msg_t=0, now=0)
    cmd = w.next_command(0)
    w.on_sent(cmd, 0.0, None, 0.1)
    w.on_setpoint(setpoint((SERIAL, 40)), seq=2, msg_t=1, now=1)
    w.on_setpoint(setpoint((SERIAL, 50)), seq=3, msg_t=2, now=2)
    # Ok with an old value (silent no-op) is not an ack
    assert acks(w.on_limit_status({SERIAL: LimitStatus(80, 400, "Ok")}, 3.0)) == []
    [timeout] = acks(w.tick(15.5))
    assert timeout["outcome"] == "timeout" and timeout["limit_pct"] == 30
    nxt = w.next_command(21.0)
    assert (nxt.limit_pct, nxt.setpoint_seq) == (50, 3)      # 40 was never sent


def test_writer_post_errors_are_reported_never_applied():
    w = machine()
    w.on_setpoint(setpoint((SERIAL, 30)), seq=1, msg_t=0, now=0)
    cmd = w.next_command(0)
    [ack] = acks(w.on_sent(cmd, 0.0, DtuRejected("warning 5004", 5004), 0.1))
    assert ack["outcome"] == "rejected"
    cmd = w.next_command(6)
    [ack] = acks(w.on_sent(cmd, 6.0, DtuConnectionError("refused"), 6.1))
    assert ack["outcome"] == "error"
    cmd = w.next_command(12)
    [ack] = acks(w.on_sent(cmd, 12.0, DtuAuthError("401"), 12.1))
    assert ack["outcome"] == "error" and "auth" in ack["detail"]
    assert w.next_command(20) is None                    # auth: longer pause
    assert w.next_command(43).limit_pct == 30


def test_watchdog_sends_reachable_inverters_to_minimum_and_releases():
    w = machine()
    w.on_inventory([SERIAL, "b"], {SERIAL}, {}, None)    # b unreachable
    assert acks(w.tick(5)) == [] and w.next_command(5) is None
    out = w.tick(10.5)
    alarms = [b for t, b in out if t == m.DTU_ALARM]
    assert alarms and alarms[0]["active"] is True and alarms[0]["kind"] == "setpoint_watchdog"
    cmd = w.next_command(10.5)
    assert (cmd.serial, cmd.limit_pct, cmd.reason) == (SERIAL, 2.0, "watchdog")
    assert w.next_command(10.5) is None
    assert not [b for t, b in w.tick(12) if t == m.DTU_ALARM]
    assert [b for t, b in w.tick(16) if t == m.DTU_ALARM]      # repeated while active
    # a setpoint that is itself old does not count
    assert w.on_setpoint(setpoint((SERIAL, 60)), seq=9, msg_t=1.0, now=17) == []
    out = w.on_setpoint(setpoint((SERIAL, 60)), seq=10, msg_t=17, now=17)
    assert [b["active"] for t, b in out if t == m.DTU_ALARM] == [False]
    assert w.slots[SERIAL].desired_pct == 60


def test_restart_and_reboot_are_rate_limited():
    w = machine(restart_min_interval_s=600, reboot_min_interval_s=3600)
    w.on_setpoint(setpoint((SERIAL, 30), restart=[SERIAL], reboot=True), seq=1, msg_t=0, now=0)
    reboot = w.next_command(0)
    assert reboot.kind == "dtu_reboot"
    [ack] = acks(w.on_sent(reboot, 0.0, None, 0.1))
    assert ack["outcome"] == "ok" and ack["serial"] is None
    restart = w.next_command(0.1)
    assert (restart.kind, restart.serial) == ("restart", SERIAL)
    w.on_sent(restart, 0.1, None, 0.2)
    [ack] = acks(w.on_power_status({SERIAL: "Ok"}, 0.5))
    assert ack["command"] == "restart" and ack["outcome"] == "ok"
    out = w.on_setpoint(setpoint((SERIAL, 30), restart=[SERIAL], reboot=True), seq=2, msg_t=100, now=100)
    refused = acks(out)
    assert {(a["command"], a["outcome"]) for a in refused} == {("restart", "rate_limited"),
                                                               ("dtu_reboot", "rate_limited")}
    for a in refused:
        m.check_body(m.DTU_ACK, a)
    # repeated refusals are not published every cycle
    assert acks(w.on_setpoint(setpoint(restart=[SERIAL]), seq=3, msg_t=102, now=102)) == []
    assert w.next_command(102).kind == "limit"
    w.on_setpoint(setpoint(restart=[SERIAL]), seq=4, msg_t=601, now=601)
    w.slots[SERIAL].in_flight = None
    assert w.next_command(601).kind == "restart"


def test_read_only_refuses_and_sends_nothing():
    w = machine(can_control=False)
    out = w.on_setpoint(setpoint((SERIAL, 30), restart=[SERIAL]), seq=1, msg_t=0, now=0)
    assert {a["outcome"] for a in acks(out)} == {"read_only"}
    assert w.next_command(0) is None
    assert acks(w.on_setpoint(setpoint((SERIAL, 30)), seq=2, msg_t=1, now=1)) == []


def test_read_back_limit_that_differs_from_the_ack_is_sent_again():
    w = machine(limit_refresh_s=60)
    w.on_setpoint(setpoint((SERIAL, 30)), seq=1, msg_t=0, now=0)
    w.on_sent(w.next_command(0), 0.0, None, 0.1)
    w.on_limit_status({SERIAL: LimitStatus(30, 400, "Ok")}, 0.5)
    w.on_setpoint(setpoint((SERIAL, 30)), seq=2, msg_t=2, now=2)
    assert w.next_command(2) is None
    w.on_inventory([SERIAL], {SERIAL}, {SERIAL: 100.0}, 5.0)      # inverter restarted: 100 %
    resend = w.next_command(5)
    assert resend.limit_pct == 30 and not (resend.reason or "").startswith("refresh")
    w2 = machine(limit_refresh_s=60)
    w2.on_setpoint(setpoint((SERIAL, 30)), seq=1, msg_t=0, now=0)
    w2.on_sent(w2.next_command(0), 0.0, None, 0.1)
    w2.on_limit_status({SERIAL: LimitStatus(30, 400, "Ok")}, 0.5)
    w2.on_setpoint(setpoint((SERIAL, 30)), seq=2, msg_t=61, now=61)
    refresh = w2.next_command(61)
    assert refresh.limit_pct == 30 and refresh.reason.startswith("refresh")   # periodic refresh, said so


def test_limits_only_to_listed_and_reachable_inverters():
    w = machine()
    w.on_inventory([SERIAL, "b"], {SERIAL}, {}, None)                 # b listed but not reachable
    out = w.on_setpoint(setpoint((SERIAL, 30), ("b", 30), ("c0ffee", 30)), seq=1, msg_t=0, now=0)
    refused = {a["serial"]: a for a in acks(out)}
    assert refused["c0ffee"]["outcome"] == "rejected" and refused["b"]["outcome"] == "error"
    assert "not reachable" in refused["b"]["detail"]
    assert w.next_command(0).serial == SERIAL
    assert w.next_command(0) is None                                # b held, c0ffee never sent
    w.on_inventory([SERIAL, "b"], {SERIAL, "b"}, {}, None)          # b is back: its limit goes out
    assert (w.next_command(1).serial, w.slots["b"].desired_pct) == ("b", 30)


def test_inverter_with_commands_disabled_gets_no_limit():
    w = machine()
    w.on_command_flags({SERIAL: (True, True), "b": (False, True)})
    out = w.on_setpoint(setpoint((SERIAL, 30), ("b", 30)), seq=1, msg_t=0, now=0)
    [refused] = acks(out)
    assert refused["serial"] == "b" and refused["outcome"] == "rejected" and "disabled" in refused["detail"]
    assert w.next_command(0).serial == SERIAL
    assert w.next_command(0) is None
    w.on_command_flags({SERIAL: (True, True), "b": (True, True)})
    assert w.next_command(1).serial == "b"


# ------------------------------------------------------------------ stopping, power state, start-up (#14, #15)

def _ok(w, cmd, t):
    """Send `cmd` at t and see its status Ok at t + 0.5."""
    w.on_sent(cmd, t, None, t)
    if cmd.kind == "limit":
        return w.on_limit_status({cmd.serial: LimitStatus(cmd.limit_pct, 400, "Ok")}, t + 0.5)
    return w.on_power_status({cmd.serial: "Ok"}, t + 0.5)


def stop_setpoint(serial, on=False):
    return m.check_body(m.CTRL_SETPOINT, {"limits": [{"serial": serial, "limit_pct": 2.0, "on": on}]})


def test_first_seen_inverter_gets_the_minimum_before_any_setpoint():
    w = WriterMachine(WriterParams(min_pct=2.0), start_t=0.0)
    w.on_inventory([SERIAL], {SERIAL}, {}, None)
    cmd = w.next_command(0.0)
    assert (cmd.kind, cmd.serial, cmd.limit_pct) == ("limit", SERIAL, 2.0) and "first seen" in cmd.reason


def test_a_rejected_stop_sends_the_minimum_first_retries_rate_limited_and_alarms():
    w = machine()
    w.on_inventory([SERIAL], {SERIAL}, {}, None, {SERIAL: (320.0, 0.0)}, 0.0)     # runs at 80 %
    w.slots[SERIAL].acked_pct, w.slots[SERIAL].acked_t = 80.0, 0.0
    w.on_setpoint(stop_setpoint(SERIAL), seq=1, msg_t=1, now=1)
    first = w.next_command(1)
    assert (first.kind, first.limit_pct) == ("limit", 2.0)            # the minimum before the power off
    _ok(w, first, 1)
    off = w.next_command(2)
    assert off.kind == "power_off"
    [ack] = acks(w.on_sent(off, 2, DtuRejected("danger 11002"), 2))
    assert ack["outcome"] == "rejected" and w.power_states()[SERIAL] == "stopping"
    sent = []
    alarms = []
    for t in range(3, 61):
        w.on_setpoint(stop_setpoint(SERIAL), seq=t, msg_t=t, now=t)
        alarms += [b for topic, b in w.tick(t) if topic == m.DTU_ALARM and b["kind"] == "stop_unconfirmed"]
        cmd = w.next_command(t)
        if cmd is not None:
            sent.append((t, cmd.kind))
            w.on_sent(cmd, t, DtuRejected("danger 11002"), t)
    offs = [t for t, kind in sent if kind == "power_off"]
    # rate-limited rounds (each its minimum limit again, then power off), the pause doubling: 15 s, 30 s, ...
    assert offs == [22, 57] and [t for t, kind in sent if kind == "limit"] == [17, 52]
    assert [a["active"] for a in alarms] == [True] and w.power_states()[SERIAL] == "stop_failed"


def test_a_stop_is_confirmed_only_by_a_newer_sample_near_zero_and_repeated_if_output_returns():
    w = machine()
    w.on_inventory([SERIAL], {SERIAL}, {}, None, {SERIAL: (320.0, 0.0)}, 0.0)
    w.on_setpoint(stop_setpoint(SERIAL), seq=1, msg_t=1, now=1)
    _ok(w, w.next_command(1), 1)                       # minimum
    off = w.next_command(2)
    _ok(w, off, 2)                                     # power off acknowledged at 2.5
    assert w.power_states()[SERIAL] == "stopping"
    w.on_inventory([SERIAL], {SERIAL}, {}, 2.0, {SERIAL: (0.0, 2.2)}, 3)       # older than the ack
    assert w.power_states()[SERIAL] == "stopping"
    w.on_inventory([SERIAL], {SERIAL}, {}, 4.0, {SERIAL: (1.0, 4.0)}, 4)
    assert w.power_states()[SERIAL] == "off"
    w.on_setpoint(stop_setpoint(SERIAL), seq=2, msg_t=5, now=5)
    assert w.next_command(5) is None                    # confirmed: nothing more
    w.on_inventory([SERIAL], {SERIAL}, {}, 30.0, {SERIAL: (150.0, 30.0)}, 30)  # it delivers again
    assert w.power_states()[SERIAL] == "stopping"
    again = w.next_command(30)
    assert again.kind == "power_off"                    # the minimum is still acknowledged: straight power off
    # wanted on again: started (the limit is in force)
    _ok(w, again, 30)
    w.on_setpoint(stop_setpoint(SERIAL, on=True), seq=3, msg_t=40, now=40)
    start = w.next_command(40)
    assert start.kind == "power_on"
    _ok(w, start, 40)
    assert w.power_states()[SERIAL] == "on"


def test_a_restarted_writer_assumes_no_power_state_and_starts_one_that_shows_no_output():
    w = machine()
    assert w.power_states() == {SERIAL: "unknown", "b": "unknown"}
    w.on_inventory([SERIAL, "b"], {SERIAL, "b"}, {}, 1.0, {SERIAL: (120.0, 1.0), "b": (0.0, 1.0)}, 1)
    assert w.power_states() == {SERIAL: "on", "b": "unknown"}
    w.on_setpoint(setpoint((SERIAL, 30), ("b", 30)), seq=1, msg_t=1, now=1)   # "on" absent: may run
    w.on_setpoint(m.check_body(m.CTRL_SETPOINT, {"limits": [{"serial": SERIAL, "limit_pct": 30, "on": True},
                                                           {"serial": "b", "limit_pct": 30, "on": True}]}),
                  seq=2, msg_t=1, now=1)
    kinds = []
    for t in range(1, 5):
        cmd = w.next_command(t)
        while cmd is not None:
            kinds.append((cmd.serial, cmd.kind))
            _ok(w, cmd, t)
            cmd = w.next_command(t)
    assert (("b", "power_on") in kinds) and ((SERIAL, "power_on") not in kinds)
    assert kinds.count(("b", "power_on")) == 1


def test_an_inverter_with_switch_off_disabled_is_never_sent_power_off():
    w = WriterMachine(WriterParams(min_pct=2.0, switch_off=(("1", False),)), start_t=0.0)
    w.on_inventory([SERIAL, "b"], {SERIAL, "b"}, {}, None, {SERIAL: (100.0, 0.0), "b": (100.0, 0.0)}, 0)
    kinds = []
    for t in range(0, 40):
        body = {"limits": [{"serial": s, "limit_pct": 2.0, "on": False} for s in (SERIAL, "b")]}
        w.on_setpoint(m.check_body(m.CTRL_SETPOINT, body), seq=t, msg_t=t, now=t)
        cmd = w.next_command(t)
        while cmd is not None:
            kinds.append((cmd.serial, cmd.kind, cmd.limit_pct))
            _ok(w, cmd, t)
            cmd = w.next_command(t)
    assert ("b", "limit", 2.0) in kinds and not [k for k in kinds if k[0] == "b" and k[1] != "limit"]
    assert (SERIAL, "power_off", None) in kinds


def test_a_stuck_writer_thread_is_noticed_and_the_process_ends_non_zero():
    import threading
    from common.clock import ManualClock
    from services.dtu_poller.service import supervise
    from services.dtu_poller.writer import Inventory, WriterLoop
    from tests.support import wait_for

    entered, release = threading.Event(), threading.Event()

    class BlockingClient:                       # a DTU whose answer never comes (the socket deadline failed)
        def set_limit_relative(self, serial, pct):
            entered.set()
            release.wait(30)

        def command_flags(self):
            return {}

        limit_status = power_status = command_flags

    class QuietBus:
        calls = 0

        def recv(self, timeout_s):
            QuietBus.calls += 1
            assert QuietBus.calls < 200, "the stuck writer was not noticed"
            clock.advance(1.0)
            return None

    clock = ManualClock()
    inventory = Inventory()
    writer = WriterLoop(BlockingClient(), WriterParams(min_pct=2.0), lambda t, b: None, inventory, clock=clock)
    inventory.update([SERIAL], {SERIAL}, {}, clock.monotonic())      # first seen: the minimum goes out and blocks
    thread = threading.Thread(target=writer.run, daemon=True)
    thread.start()
    try:
        wait_for(entered.is_set, 10, what="the writer to block in the client")
        assert supervise(QuietBus(), writer, threading.Event(), stuck_after_s=30.0, clock=clock) == 1
        assert 30 <= QuietBus.calls <= 32
    finally:
        writer.stop_event.set()
        release.set()
        thread.join(5)


def test_the_persistent_limit_type_follows_the_firmware_and_unknown_is_refused():
    from services.dtu_poller.persistent import persistent_relative_type
    assert [persistent_relative_type(v) for v in ("v25.5.10", "v25.9.11", "v25.9.11-12-gabcdef0", "2025.09.16",
                                                  "2025.05.01", "v24.2.12", "", None, "dev")] == \
        [257, 3, 3, 3, 257, 257, None, None, None]


def test_a_poll_that_keeps_failing_with_a_bug_ends_the_poll_thread_after_the_step_guard_limit():
    """A bug (not a DtuError) in a poll is logged and the poll retried; MAX_FAILED_STEPS in a row end the poll
    loop with TooManyFailures (the thread dies, and the process exits 1 for supervisord to restart it)."""
    import threading

    from common.service import MAX_FAILED_STEPS, TooManyFailures
    from services.dtu_poller.reader import Reader
    from services.dtu_poller.service import PollLoop
    from services.dtu_poller.writer import Inventory

    calls = []

    class BuggyClient:
        def __getattr__(self, name):
            def broken(*_args, **_kwargs):
                calls.append(name)
                raise KeyError(f"a bug in {name}")
            return broken

    loop = PollLoop(BuggyClient(), Reader(can_control=True), lambda t, b: None, Inventory(), 0.001)
    bound = threading.Timer(10.0, loop.stop_event.set)      # ends the test if the loop never gives up
    bound.start()
    try:
        with pytest.raises(TooManyFailures):
            loop.run()
    finally:
        bound.cancel()
    assert len(calls) == MAX_FAILED_STEPS


def test_a_raise_waits_until_the_other_inverters_reduction_is_acknowledged():
    """The setpoint moves 300 W from one inverter to the other: sent in DTU order, the raise would land first and the
    sum on the wire would exceed the cap for an ack's latency. The reduction goes first; the raise follows its ack."""
    w = machine()
    w.on_setpoint(setpoint((SERIAL, 50.0), ("b", 50.0)), seq=1, msg_t=1.0, now=1.0)
    _ok(w, w.next_command(1.0), 1.0)
    _ok(w, w.next_command(1.6), 1.6)                     # both at 50 %, acknowledged
    w.on_setpoint(setpoint((SERIAL, 80.0), ("b", 20.0)), seq=2, msg_t=3.0, now=3.0)
    first = w.next_command(3.0)
    assert (first.serial, first.limit_pct) == ("b", 20.0)        # the reduction, though b comes second
    w.on_sent(first, 3.0, None, 3.0)
    assert w.next_command(3.1) is None                           # the raise waits while it is in flight
    w.on_limit_status({"b": LimitStatus(20.0, 400, "Ok")}, 3.5)
    second = w.next_command(3.5)
    assert (second.serial, second.limit_pct) == (SERIAL, 80.0)
    # a failed reduction keeps holding the raise back: the old, higher limit is still in force
    w.on_sent(second, 3.5, None, 3.5)
    w.on_limit_status({SERIAL: LimitStatus(80.0, 400, "Ok")}, 4.0)
    w.on_setpoint(setpoint((SERIAL, 90.0), ("b", 10.0)), seq=3, msg_t=5.0, now=5.0)
    down = w.next_command(5.0)
    assert (down.serial, down.limit_pct) == ("b", 10.0)
    w.on_sent(down, 5.0, None, 5.0)
    w.on_limit_status({"b": LimitStatus(20.0, 400, "Failure")}, 5.5)
    assert all(cmd.serial != SERIAL for cmd in iter(lambda: w.next_command(6.0), None))


def test_a_raise_that_fits_under_the_setpoints_cap_goes_at_once():
    """With the cap and each inverter's rating in the setpoint, the writer counts the limits that may be in force
    (the higher of acknowledged and in flight): a raise that fits beside the other's not yet acknowledged, higher
    limit goes at once; one that would not fit waits for the reduction's ack."""
    def sp(a_pct, b_pct, cap_w):
        body = {"limits": [{"serial": SERIAL, "limit_pct": a_pct, "limit_w": a_pct * 4.0},
                           {"serial": "b", "limit_pct": b_pct, "limit_w": b_pct * 4.0}], "cap_w": cap_w}
        return m.check_body(m.CTRL_SETPOINT, body)

    w = machine()
    w.on_setpoint(sp(50.0, 50.0, 700.0), seq=1, msg_t=1.0, now=1.0)
    _ok(w, w.next_command(1.0), 1.0)
    _ok(w, w.next_command(1.6), 1.6)                     # 200 W + 200 W in force, cap 700 W
    w.on_setpoint(sp(80.0, 20.0, 700.0), seq=2, msg_t=3.0, now=3.0)
    sent = [w.next_command(3.0), w.next_command(3.0)]
    assert sorted((c.serial, c.limit_pct) for c in sent) == [(SERIAL, 80.0), ("b", 20.0)]   # 320 + 200 <= 700
    for cmd in sent:
        _ok(w, cmd, 3.0)
    w.on_setpoint(sp(95.0, 5.0, 400.0), seq=3, msg_t=5.0, now=5.0)      # a lower cap: 380 + 80 in force > 400
    first = w.next_command(5.0)
    assert (first.serial, first.limit_pct) == ("b", 5.0)
    w.on_sent(first, 5.0, None, 5.0)
    assert w.next_command(5.1) is None
    w.on_limit_status({"b": LimitStatus(5.0, 400, "Ok")}, 5.5)
    last = w.next_command(5.5)
    assert (last.serial, last.limit_pct) == (SERIAL, 95.0)


def test_a_setpoint_with_an_implausible_rating_does_not_release_a_raise():
    """limit_w is a bus input: a negative or absurd one gives no rating, so the raise waits as without a cap."""
    w = machine()
    body = lambda a, b, a_w: m.check_body(m.CTRL_SETPOINT, {"cap_w": 700.0, "limits": [   # noqa: E731
        {"serial": SERIAL, "limit_pct": a, "limit_w": a_w}, {"serial": "b", "limit_pct": b, "limit_w": b * 4.0}]})
    w.on_setpoint(body(50.0, 50.0, 200.0), seq=1, msg_t=1.0, now=1.0)
    _ok(w, w.next_command(1.0), 1.0)
    _ok(w, w.next_command(1.6), 1.6)
    w.on_setpoint(body(80.0, 20.0, -320.0), seq=2, msg_t=3.0, now=3.0)     # a negative W would make it "fit"
    first = w.next_command(3.0)
    assert (first.serial, first.limit_pct) == ("b", 20.0)
    w.on_sent(first, 3.0, None, 3.0)
    assert w.next_command(3.1) is None


def _capped(a_pct, b_pct, cap_w=500.0):
    """A setpoint for two 400 W inverters (SERIAL, "b") with its cap and their ratings (limit_w)."""
    return m.check_body(m.CTRL_SETPOINT, {"cap_w": cap_w, "limits": [
        {"serial": SERIAL, "limit_pct": a_pct, "limit_w": a_pct * 4.0},
        {"serial": "b", "limit_pct": b_pct, "limit_w": b_pct * 4.0}]})


def _both_acknowledged_at_25():
    """SERIAL and b at 25 % (100 W each), both acknowledged."""
    w = machine()
    w.on_setpoint(_capped(25.0, 25.0), seq=1, msg_t=1.0, now=1.0)
    _ok(w, w.next_command(1.0), 1.0)
    _ok(w, w.next_command(1.6), 1.6)
    return w


def _failed_raise_of_a():
    """Both at 25 % (100 W) acknowledged; then SERIAL's raise to 75 % fails (the DTU may still re-send and apply
    it: 300 W may be in force on SERIAL)."""
    w = _both_acknowledged_at_25()
    w.on_setpoint(_capped(75.0, 25.0), seq=2, msg_t=2.0, now=2.0)
    raise_a = w.next_command(2.0)
    assert (raise_a.serial, raise_a.limit_pct) == (SERIAL, 75.0)        # 300 + 100 W <= 500 W: at once
    w.on_sent(raise_a, 2.0, None, 2.0)
    w.on_limit_status({SERIAL: LimitStatus(25.0, 400, "Failure")}, 12.0)
    return w


def test_a_failed_raise_the_dtu_may_still_apply_holds_another_raise_back():
    """The limit that may be in force is the highest of acknowledged, in flight and failed: after SERIAL's failed
    75 %, moving the power to b (SERIAL 25 %, b 75 %) must wait for SERIAL's 25 % to be acknowledged; counting
    only the acknowledged 25 % would send b's 300 W beside a 300 W the DTU may still apply (600 W > 500 W)."""
    w = _failed_raise_of_a()
    assert w._possible_pct(w.slots[SERIAL]) == 75.0
    w.on_setpoint(_capped(25.0, 75.0), seq=3, msg_t=13.0, now=13.0)
    assert w.next_command(13.0) is None             # SERIAL waits for its retry, b for SERIAL
    down = w.next_command(17.5)                     # RETRY_AFTER_FAILURE_S after the failure
    assert (down.serial, down.limit_pct) == (SERIAL, 25.0)
    w.on_sent(down, 17.5, None, 17.5)
    assert w.next_command(17.6) is None
    w.on_limit_status({SERIAL: LimitStatus(25.0, 400, "Ok")}, 18.0)
    assert w._possible_pct(w.slots[SERIAL]) == 25.0
    up = w.next_command(18.0)
    assert (up.serial, up.limit_pct) == ("b", 75.0)


def test_a_raise_no_pending_reduction_makes_room_for_is_cut_to_the_cap_and_logged_once(caplog):
    """SERIAL's failed 75 % may still be applied and SERIAL is unreachable (nothing we send reduces it): b's raise
    to 75 % is cut to what fits beside 300 W under 500 W (+1 W): 50.2 %, logged once, not repeated; once SERIAL's
    reduction is acknowledged, b gets its 75 %."""
    w = _failed_raise_of_a()
    w.on_inventory([SERIAL, "b"], {"b"}, {}, None)
    w.on_setpoint(_capped(25.0, 75.0), seq=3, msg_t=13.0, now=13.0)
    with caplog.at_level("WARNING", logger="services.dtu_poller.writer"):
        cut = w.next_command(13.0)
        assert (cut.serial, cut.limit_pct) == ("b", 50.2)
        _ok(w, cut, 13.0)
        assert [w.next_command(t) for t in (14.0, 20.0, 30.0)] == [None, None, None]
    assert sum("cut to 50.2 %" in r.getMessage() for r in caplog.records) == 1
    w.on_inventory([SERIAL, "b"], {SERIAL, "b"}, {}, None)
    down = w.next_command(31.0)
    assert (down.serial, down.limit_pct) == (SERIAL, 25.0)
    _ok(w, down, 31.0)
    up = w.next_command(31.5)
    assert (up.serial, up.limit_pct) == ("b", 75.0)


def test_an_inverter_whose_acknowledged_limit_became_unknown_still_counts_its_raise_in_flight():
    """The DTU reads back 20 % where 25 % was acknowledged (the acknowledged value is then unknown and the limit
    sent again); SERIAL's raise to 75 % is in flight. Moving the power to b must wait: 'unknown' once let b's raise
    go beside SERIAL's 300 W in flight (600 W > 500 W on the wire). The read-back stands for the limit in force."""
    w = _both_acknowledged_at_25()
    w.on_inventory([SERIAL, "b"], {SERIAL, "b"}, {SERIAL: 20.0, "b": 25.0}, 5.0)
    assert w.slots[SERIAL].acked_pct is None and w._possible_pct(w.slots[SERIAL]) == 20.0
    w.on_setpoint(_capped(75.0, 25.0), seq=2, msg_t=6.0, now=6.0)
    up_a = w.next_command(6.0)
    assert (up_a.serial, up_a.limit_pct) == (SERIAL, 75.0)
    w.on_sent(up_a, 6.0, None, 6.0)
    w.on_setpoint(_capped(25.0, 75.0), seq=3, msg_t=6.2, now=6.2)
    assert w.next_command(6.2) is None                   # b waits: SERIAL may reach 75 %
    w.on_limit_status({SERIAL: LimitStatus(75.0, 400, "Ok")}, 6.5)
    down = w.next_command(6.5)
    assert (down.serial, down.limit_pct) == (SERIAL, 25.0)
    _ok(w, down, 6.5)
    up_b = w.next_command(7.0)
    assert (up_b.serial, up_b.limit_pct) == ("b", 75.0)


def test_two_inverters_lowering_from_their_read_back_do_not_wait_for_each_other():
    """After a DTU reboot nothing is acknowledged and the DTU reads back 100 % on both: 30 % on each is a reduction
    from what may be in force, and goes at once. Judged as raises (against an unknown acknowledged limit) while
    each counted as lowering for the other, they waited for each other for good."""
    w = _both_acknowledged_at_25()
    reboot = Command("dtu_reboot", None)
    w.on_sent(reboot, 2.0, None, 2.0)
    w.on_inventory([SERIAL, "b"], {SERIAL, "b"}, {SERIAL: 100.0, "b": 100.0}, 40.0)
    w.on_setpoint(_capped(30.0, 30.0), seq=2, msg_t=41.0, now=41.0)
    sent = [w.next_command(41.0), w.next_command(41.0)]
    assert sorted((c.serial, c.limit_pct) for c in sent if c is not None) == [(SERIAL, 30.0), ("b", 30.0)]


def test_a_power_on_waits_for_the_reduction_that_makes_room_for_its_limit():
    """b (50 %, 200 W acknowledged) shows no output and is wanted on: its power on adds 200 W to the sum. Beside
    SERIAL's 75 % (300 W) still in force while its reduction to 25 % is in flight, that is 500 W under a 450 W cap:
    the power on follows the reduction's ack."""
    def body(a_pct, b_pct, cap_w):
        return m.check_body(m.CTRL_SETPOINT, {"cap_w": cap_w, "limits": [
            {"serial": SERIAL, "limit_pct": a_pct, "limit_w": a_pct * 4.0},
            {"serial": "b", "limit_pct": b_pct, "limit_w": b_pct * 4.0, "on": True}]})
    w = machine()
    w.on_setpoint(body(75.0, 50.0, 600.0), seq=1, msg_t=1.0, now=1.0)
    _ok(w, w.next_command(1.0), 1.0)
    _ok(w, w.next_command(1.6), 1.6)
    w.on_inventory([SERIAL, "b"], {SERIAL, "b"}, {}, None, {"b": (0.0, 3.0)}, 3.0)
    w.on_setpoint(body(25.0, 50.0, 450.0), seq=2, msg_t=4.0, now=4.0)
    down = w.next_command(4.0)
    assert (down.kind, down.serial, down.limit_pct) == ("limit", SERIAL, 25.0)
    w.on_sent(down, 4.0, None, 4.0)
    assert w.next_command(4.1) is None
    w.on_limit_status({SERIAL: LimitStatus(25.0, 400, "Ok")}, 4.5)
    start = w.next_command(4.5)
    assert (start.kind, start.serial) == ("power_on", "b")
