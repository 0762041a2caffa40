"""The AhoyDTU client against answers recorded in the format of lumapu/ahoy 0.8.156 (tests/data/ahoy/): detection,
inventory with gaps, values by field name, freshness on the DTU's clock, the limit/power tracking that AhoyDTU
lacks, the token, clamping and validation. The fake is the gateway only (method, path, body → status, JSON)."""
import copy
import json
import os
import random

import pytest

from common.clock import ManualClock
from services.dtu_poller.ahoy import (AhoyClient, detect_gateway, limit_w_for, parse_inverter, parse_live)
from services.dtu_poller.client import DtuAuthError, DtuInvalidResponse, DtuRejected

DATA = os.path.join(os.path.dirname(__file__), "data", "ahoy")
SERIAL0, SERIAL2 = "116180000000", "1144a0b1c2d3"
PASSWORD = "s3cret-admin"
TOKEN = "K7Q2M9X4B1C8D3F6"


def load(name):
    with open(os.path.join(DATA, name)) as handle:
        return json.load(handle)


class Gateway:
    """Recorded answers by path; POST /api/ctrl answered by `ctrl` (a function of the body) or a queue."""

    def __init__(self):
        self.answers = {"/api/generic": load("generic.json"), "/api/live": load("live.json"),
                        "/api/index": load("index.json"), "/api/inverter/list": load("inverter_list_gap.json"),
                        "/api/inverter/id/0": load("inverter_id_0.json"),
                        "/api/inverter/id/2": load("inverter_id_2_stale.json")}
        self.ctrl_queue = []
        self.calls = []

    def __call__(self, method, path, json_body=None):
        self.calls.append((method, path, copy.deepcopy(json_body)))
        if method == "POST":
            assert path == "/api/ctrl"
            return 200, self.ctrl_queue.pop(0) if self.ctrl_queue else load("ctrl_success.json")
        answer = self.answers.get(path, load("avail_endpoints.json"))
        if isinstance(answer, Exception):
            raise answer
        return 200, copy.deepcopy(answer)

    def posts(self):
        return [body for method, _path, body in self.calls if method == "POST"]

    def record(self, position):
        return self.answers[f"/api/inverter/id/{position}"]


@pytest.fixture
def gw():
    return Gateway()


@pytest.fixture
def clock():
    return ManualClock(start_s=500.0)


def client(gw, clock, **kw):
    kw.setdefault("password", PASSWORD)
    return AhoyClient(gw, host="192.168.1.50", clock=clock, **kw)


# ------------------------------------------------------------------ detection

def test_detects_ahoy_by_its_generic_block(gw):
    assert detect_gateway(gw, "192.168.1.50") == "ahoy"
    assert [c[1] for c in gw.calls] == ["/api/generic"]


def test_detects_opendtu_whose_unknown_paths_answer_html():
    def opendtu(method, path, json_body=None):
        if path == "/api/system/status":
            return 200, load("opendtu_system_status.json")
        raise DtuInvalidResponse(f"{path}: Content-Type 'text/html', not JSON", "html")
    assert detect_gateway(opendtu, "192.168.1.51") == "opendtu"


def test_a_gateway_that_is_neither_is_named_with_what_it_answered():
    def router(method, path, json_body=None):
        if path == "/api/generic":
            return 404, {"message": "no such page"}
        raise DtuInvalidResponse("Content-Type 'text/html', not JSON", "html")
    with pytest.raises(DtuInvalidResponse) as err:
        detect_gateway(router, "fritz.box")
    text = str(err.value)
    assert "fritz.box" in text and "neither an OpenDTU nor an AhoyDTU" in text
    assert "HTTP 404" in text and "no such page" in text and "text/html" in text


# ------------------------------------------------------------------ inventory, values, freshness

def test_inventory_by_position_with_a_gap_and_freshness_on_the_dtu_clock(gw, clock):
    c = client(gw, clock)
    clock.advance(1e6)                      # our clock says nothing about the DTU's
    summary = c.livedata_summary()
    assert [(s.serial, s.order) for s in summary] == [(SERIAL0, 0), (SERIAL2, 2)]
    first, second = summary
    assert first.data_age_s == 12.0 and first.reachable and first.producing
    assert second.data_age_s == 512.0 and not second.reachable and not second.producing
    assert first.name == "HM600" and first.age_resolution_s == 1.0


def test_values_are_looked_up_by_field_name(gw, clock):
    c = client(gw, clock)
    c.livedata_summary()
    live = c.livedata_inverter(SERIAL0)
    assert (live.ac_power_w, live.ac_voltage_v, live.temperature_c, live.yield_total_kwh) == \
        (223.7, 229.5, 34.2, 422.603)
    assert [(d.voltage_v, d.current_a, d.power_w) for d in live.dc_inputs] == [(33.3, 1.75, 58.1), (33.3, 1.77, 59.0)]
    assert live.limit_relative_pct == 80.0 and live.limit_absolute_w == 480.0 and live.has_channels
    assert c.model(SERIAL0) == "HM-600"


def shuffle_fields(gw, seed):
    """The same values in another field order (names and every value array permuted alike)."""
    live = gw.answers["/api/live"]
    rng = random.Random(seed)
    for names_key, units_key, channels in (("ch0_fld_names", "ch0_fld_units", [0]), ("fld_names", "fld_units", [1, 2])):
        order = list(range(len(live[names_key])))
        rng.shuffle(order)
        live[names_key] = [live[names_key][i] for i in order]
        live[units_key] = [live[units_key][i] for i in order]
        for position in (0, 2):
            record = gw.record(position)
            for ch in channels:
                record["ch"][ch] = [record["ch"][ch][i] for i in order]
    return live


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_shuffled_field_order_gives_the_same_values(gw, clock, seed):
    live = shuffle_fields(gw, seed)
    assert live["ch0_fld_names"] != load("live.json")["ch0_fld_names"]
    c = client(gw, clock)
    c.livedata_summary()
    inv = c.livedata_inverter(SERIAL0)
    assert (inv.ac_power_w, inv.ac_voltage_v, inv.temperature_c, inv.yield_total_kwh) == (223.7, 229.5, 34.2, 422.603)
    assert [(d.voltage_v, d.current_a, d.power_w) for d in inv.dc_inputs] == [(33.3, 1.75, 58.1), (33.3, 1.77, 59.0)]


def test_older_firmware_with_fewer_fields_and_a_leading_gap(gw, clock):
    gw.answers["/api/live"] = load("live_0.7.36_gap.json")
    record = gw.record(0)
    record["ch"][0] = record["ch"][0][:12]
    fields = parse_live(gw.answers["/api/live"])
    assert fields.refresh_s == 5 and fields.enabled[1] and not fields.enabled[0]
    assert parse_inverter(record, fields, 0).ac_power_w == 223.7


def test_a_stale_inverter_keeps_its_last_values_but_is_not_reachable(gw, clock):
    c = client(gw, clock)
    c.livedata_summary()
    live = c.livedata_inverter(SERIAL2)
    assert not live.reachable and not live.producing
    assert 511.0 <= live.data_age_s <= 513.0
    assert live.limit_relative_pct is None and c.model(SERIAL2) is None     # max_pwr 0: rating unknown


def test_a_position_that_vanished_reads_as_gone(gw, clock):
    c = client(gw, clock)
    c.livedata_summary()
    gw.answers["/api/inverter/id/2"] = load("inverter_not_found.json")
    assert c.livedata_inverter(SERIAL2) is None


@pytest.mark.parametrize("path,mutate", [
    ("/api/inverter/id/0", lambda d: d["ch"][0].__setitem__(2, float("nan"))),
    ("/api/inverter/id/0", lambda d: d["ch"][0].__setitem__(2, 10 ** 400)),
    ("/api/inverter/id/0", lambda d: d["ch"][0].__setitem__(2, 1.8e308)),
    ("/api/inverter/id/0", lambda d: d["ch"][1].__setitem__(0, "33.3")),
    ("/api/inverter/id/0", lambda d: d.__setitem__("power_limit_read", -5)),
    ("/api/inverter/id/0", lambda d: d.__setitem__("max_pwr", True)),
    ("/api/inverter/id/0", lambda d: d.__setitem__("ts_last_success", 2 ** 40)),
    ("/api/inverter/id/0", lambda d: d.__setitem__("id", 1)),
    ("/api/inverter/id/0", lambda d: d["ch"][0].__setitem__(0, 5000.0)),       # 5000 V AC
    ("/api/live", lambda d: d.__setitem__("ch0_fld_names", ["U_AC", "I_AC"])),   # no P_AC
    ("/api/live", lambda d: d.__setitem__("refresh", float("inf"))),
])
def test_absurd_numbers_and_shapes_are_named_errors(gw, clock, path, mutate):
    mutate(gw.answers[path])
    c = client(gw, clock)
    c.livedata_summary()
    with pytest.raises(DtuInvalidResponse):
        c.livedata_inverter(SERIAL0)


def test_more_values_named_than_sent_refetches_the_names_once_then_fails(gw, clock):
    c = client(gw, clock)
    c.livedata_summary()
    c.livedata_inverter(SERIAL0)
    gw.record(0)["ch"][0] = gw.record(0)["ch"][0][:2]          # P_AC is the third name
    with pytest.raises(DtuInvalidResponse, match="field list changed"):
        c.livedata_inverter(SERIAL0)
    assert [p for _m, p, _b in gw.calls].count("/api/live") == 2


def test_summary_index_errors_are_named(gw, clock):
    gw.answers["/api/index"]["inverter"][0]["is_avail"] = "yes"
    with pytest.raises(DtuInvalidResponse, match="is_avail"):
        client(gw, clock).livedata_summary()


# ------------------------------------------------------------------ limits

def started(gw, clock, **kw):
    c = client(gw, clock, **kw)
    c.livedata_summary()
    c.livedata_inverter(SERIAL0)
    c.livedata_inverter(SERIAL2)
    return c


def test_limit_is_a_nonpersistent_absolute_post_converted_from_percent(gw, clock):
    c = started(gw, clock)
    c.set_limit_relative(SERIAL0, 50.0)
    body = gw.posts()[-1]
    assert body["cmd"] == "limit_nonpersistent_absolute" and body["id"] == 0 and body["val"] == 300.0
    assert "persistent" not in body["cmd"].replace("nonpersistent", "")


@pytest.mark.parametrize("pct,watts", [(150.0, 600.0), (100.0, 600.0), (-5.0, 1.0), (0.0, 1.0), (33.333, 200.0)])
def test_limits_are_clamped_client_side(gw, clock, pct, watts):
    c = started(gw, clock)
    c.set_limit_relative(SERIAL0, pct)
    assert gw.posts()[-1]["val"] == watts


def test_limit_w_for_bounds():
    assert limit_w_for(100.0, 8000.0) == 6553.5           # what uint16(val × 10) can hold
    assert limit_w_for(0.04, 600.0) == 1.0


def test_configured_rating_stands_in_while_the_dtu_does_not_know_it(gw, clock):
    c = started(gw, clock, rating_bound=lambda serial, position: 400.0)
    c.set_limit_relative(SERIAL0, 50.0)
    assert gw.posts()[-1]["val"] == 300.0                   # the DTU's 600 W: what the read-back's % refers to
    c.set_limit_relative(SERIAL2, 50.0)
    assert gw.posts()[-1]["val"] == 200.0                   # max_pwr 0: the configured 400 W
    c2 = started(Gateway(), clock)
    with pytest.raises(DtuRejected, match="rated power not known"):
        c2.set_limit_relative(SERIAL2, 50.0)                # max_pwr 0 and nothing configured
    with pytest.raises(ValueError):
        c.set_limit_relative(SERIAL0, float("nan"))


def test_limit_ok_when_the_ack_flag_falls_and_rises_after_the_post(gw, clock):
    c = started(gw, clock)
    c.set_limit_relative(SERIAL0, 50.0)
    record = gw.record(0)
    assert c.limit_status()[SERIAL0].status == "Pending"    # old ack true, read-back 80 %: proves nothing
    record["power_limit_ack"] = False                       # transmitted
    clock.advance(0.5)
    assert c.limit_status()[SERIAL0].status == "Pending"
    record["power_limit_ack"] = True                        # the inverter acknowledged it; read-back not yet
    clock.advance(0.5)
    status = c.limit_status()[SERIAL0]
    assert status.status == "Ok" and status.limit_relative_pct == 50.0 and status.max_power_w == 600.0
    assert status.applied_t_mono == clock.monotonic()
    assert len(gw.posts()) == 1


def test_limit_ok_by_the_read_back_when_the_flag_was_not_seen_falling(gw, clock):
    c = started(gw, clock)
    c.set_limit_relative(SERIAL0, 50.0)
    record = gw.record(0)
    clock.advance(0.5)
    assert c.limit_status()[SERIAL0].status == "Pending"    # ack true all along: old or new, nobody knows
    first_read_t = clock.monotonic()
    record["power_limit_read"] = 50.0
    clock.advance(0.5)
    assert c.limit_status()[SERIAL0].status == "Pending"    # read back, but no sample started after the post
    record["ts_last_success"] = 1723450014
    clock.advance(5.0)
    status = c.limit_status()[SERIAL0]
    assert status.status == "Ok" and status.limit_relative_pct == 50.0
    assert status.applied_t_mono == first_read_t            # when the flag was first seen up


def test_an_unchanged_limit_is_proven_by_a_sample_started_after_the_post(gw, clock):
    c = started(gw, clock)
    c.set_limit_relative(SERIAL0, 80.0)                     # the read-back already says 80 %
    record = gw.record(0)
    assert c.limit_status()[SERIAL0].status == "Pending"
    record["ts_last_success"] = 1723450012                 # started before the post: no proof
    clock.advance(1.0)
    assert c.limit_status()[SERIAL0].status == "Pending"
    record["ts_last_success"] = 1723450014                 # started after it
    clock.advance(1.0)
    assert c.limit_status()[SERIAL0].status == "Ok"


def test_a_lost_ack_times_out_is_resent_once_then_fails(gw, clock):
    c = started(gw, clock)
    assert c.ack_timeout_s == 15 + 8                        # refresh from /api/live plus a margin
    c.set_limit_relative(SERIAL0, 50.0)
    gw.record(0)["power_limit_ack"] = False                 # transmitted, never accepted
    clock.advance(c.ack_timeout_s - 1)
    assert c.limit_status()[SERIAL0].status == "Pending" and len(gw.posts()) == 1
    clock.advance(2)
    assert c.limit_status()[SERIAL0].status == "Pending"
    assert len(gw.posts()) == 2 and gw.posts()[1] == gw.posts()[0]   # the same limit again
    clock.advance(c.ack_timeout_s + 1)
    assert c.limit_status()[SERIAL0].status == "Failure"
    assert len(gw.posts()) == 2
    assert c.limit_ack_budget_s > 2 * c.ack_timeout_s
    clock.advance(10)
    assert c.limit_status()[SERIAL0].status == "Failure"    # stays until the next command


def test_limit_status_reads_only_inverters_in_flight(gw, clock):
    c = started(gw, clock)
    assert set(c.limit_status()) == {SERIAL0, SERIAL2}      # nothing in flight: every inverter
    c.set_limit_relative(SERIAL0, 50.0)
    gw.calls.clear()
    assert set(c.limit_status()) == {SERIAL0}
    assert [p for _m, p, _b in gw.calls] == ["/api/inverter/id/0"]


def test_a_refused_limit_is_rejected(gw, clock):
    c = started(gw, clock)
    gw.ctrl_queue.append(load("ctrl_err_limit_not_accept.json"))
    with pytest.raises(DtuRejected, match="ERR_LIMIT_NOT_ACCEPT"):
        c.set_limit_relative(SERIAL0, 50.0)


# ------------------------------------------------------------------ token

def test_token_flow_logs_in_once_then_carries_the_token(gw, clock):
    c = started(gw, clock)
    gw.ctrl_queue += [load("ctrl_err_protected.json"), load("ctrl_auth_ok.json")]
    c.set_limit_relative(SERIAL0, 50.0)
    first, second = gw.posts()
    assert "auth" not in first and "token" not in first
    assert second["auth"] == PASSWORD and second["cmd"] == "limit_nonpersistent_absolute"   # command rides along
    c.set_power(SERIAL0, False)
    third = gw.posts()[2]
    assert third["token"] == TOKEN and "auth" not in third and third == {"id": 0, "cmd": "power", "val": 0,
                                                                         "token": TOKEN}


def test_an_expired_token_is_renewed_once(gw, clock):
    c = started(gw, clock)
    gw.ctrl_queue += [load("ctrl_err_protected.json"), load("ctrl_auth_ok.json")]
    c.set_limit_relative(SERIAL0, 50.0)
    gw.ctrl_queue += [load("ctrl_err_protected.json"), dict(load("ctrl_auth_ok.json"), token="ABCDEFGH12345678")]
    c.set_limit_relative(SERIAL0, 60.0)
    assert [("token" in b, "auth" in b) for b in gw.posts()] == [(False, False), (False, True), (True, False),
                                                                  (False, True)]
    assert c.auth_count == 2
    gw.ctrl_queue += [load("ctrl_err_protected.json"), load("ctrl_err_protected.json")]
    with pytest.raises(DtuAuthError) as err:
        c.set_limit_relative(SERIAL0, 70.0)
    assert len(gw.posts()) == 6 and PASSWORD not in str(err.value)


def test_a_wrong_password_is_an_auth_error_without_the_password(gw, clock):
    c = started(gw, clock)
    gw.ctrl_queue += [load("ctrl_err_protected.json"), load("ctrl_err_auth.json")]
    with pytest.raises(DtuAuthError, match="ERR_AUTH") as err:
        c.set_limit_relative(SERIAL0, 50.0)
    assert PASSWORD not in str(err.value)


def test_without_a_password_a_protected_dtu_says_what_to_set(gw, clock):
    c = started(gw, clock, password="")
    gw.ctrl_queue.append(load("ctrl_err_protected.json"))
    with pytest.raises(DtuAuthError, match=r"set \[opendtu\] password"):
        c.set_limit_relative(SERIAL0, 50.0)
    assert len(gw.posts()) == 1


# ------------------------------------------------------------------ power, restart, reboot

def test_power_off_is_ok_only_with_near_zero_output_in_a_later_sample(gw, clock):
    c = started(gw, clock)
    c.set_power(SERIAL0, False)
    assert gw.posts()[-1] == {"id": 0, "cmd": "power", "val": 0}
    record = gw.record(0)
    assert c.power_status()[SERIAL0] == "Pending"
    record["ts_last_success"] = 1723450030                  # a later sample, still producing
    clock.advance(1)
    assert c.power_status()[SERIAL0] == "Pending"
    record["ch"][0][2] = 0.0
    clock.advance(1)
    assert c.power_status() == {SERIAL0: "Ok", SERIAL2: "Ok"}


def test_power_on_is_ok_after_a_later_sample_and_fails_without_one(gw, clock):
    c = started(gw, clock)
    c.set_power(SERIAL0, True)
    assert gw.posts()[-1]["val"] == 1
    assert c.power_status()[SERIAL0] == "Pending"
    clock.advance(2 * c.ack_timeout_s + 2)
    c.power_status()
    clock.advance(c.ack_timeout_s + 1)
    assert c.power_status()[SERIAL0] == "Failure" and len(gw.posts()) == 2
    c.set_power(SERIAL0, True)
    gw.record(0)["ts_last_success"] = 1723450012 + int(3 * c.ack_timeout_s) + 10
    assert c.power_status()[SERIAL0] == "Ok"


def test_restart_and_reboot_go_through_ctrl(gw, clock):
    c = started(gw, clock)
    c.restart_inverter(SERIAL2)
    assert gw.posts()[-1] == {"id": 2, "cmd": "restart"} and c.power_status()[SERIAL2] == "Ok"
    c.reboot_dtu()
    assert gw.posts()[-1] == {"id": 0, "cmd": "restart_ahoy"}   # the firmware wants a valid position
    assert c.command_flags() == {SERIAL0: (True, True), SERIAL2: (True, True)}
    assert c.firmware() == "AhoyDTU 0.8.156"


def test_an_unknown_serial_is_rejected(gw, clock):
    c = started(gw, clock)
    with pytest.raises(DtuRejected, match="no inverter with serial"):
        c.set_power("116199999999", False)


# ------------------------------------------------------------------ property: mutated answers

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from services.dtu_poller.ahoy import parse_index, parse_inverter_list  # noqa: E402
from services.dtu_poller.client import DtuError  # noqa: E402

HOSTILE = st.one_of(st.none(), st.booleans(), st.integers(-10 ** 400, 10 ** 400),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=5),
                    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


def _paths(doc, prefix=()):
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield prefix + (key,)
            yield from _paths(value, prefix + (key,))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            yield prefix + (i,)
            yield from _paths(value, prefix + (i,))


def _mutate(doc, data):
    for _ in range(data.draw(st.integers(1, 3))):
        paths = list(_paths(doc))
        if not paths:
            break
        path = data.draw(st.sampled_from(paths))
        target = doc
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = data.draw(HOSTILE)
    return doc


@settings(max_examples=300, deadline=None)
@given(data=st.data(), name=st.sampled_from(["inverter_id_0.json", "live.json", "index.json",
                                             "inverter_list_gap.json"]))
def test_mutated_answers_parse_or_raise_a_named_error(data, name):
    doc = _mutate(load(name), data)
    fields = parse_live(load("live.json"))
    parse = {"inverter_id_0.json": lambda d: parse_inverter(d, fields, 0), "live.json": parse_live,
             "index.json": parse_index, "inverter_list_gap.json": parse_inverter_list}[name]
    try:
        result = parse(doc)
    except DtuError:
        return
    if name == "inverter_id_0.json":
        for value in (result.ac_power_w, result.ac_voltage_v, result.temperature_c, result.max_power_w,
                      result.power_limit_read_pct):
            assert value is None or (isinstance(value, float) and value == value and abs(value) < 1e9)
