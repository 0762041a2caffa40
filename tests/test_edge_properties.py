"""Property tests of the device parsers over mutated real-format answers (#14): whatever a device sends, a parser
returns a valid reading (every number finite and in its declared range) or raises its named error (kind
"invalid", or the device's own "invalid_reading"); nothing else, in bounded time.

Mutations: any value anywhere replaced by an absurd one (a 400-digit integer, inf, NaN, 1.8e308 as text, wrong
types, nested garbage), keys deleted or added, the whole answer replaced. Both OpenDTU live data formats (v24.2.12+
with data_age_ms, and the legacy one with channel data in AC."0"), limit and power status, Shelly Gen1 (EM, 3EM),
Gen2 (EM1, EM) status and their energy counters, /shelly, relay answers.
"""
import copy
import json
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common import http, plausible
from services.dtu_poller import client as dtu
from services.shelly_poller import client as shelly
from tests.test_dtu_poller_units import LEGACY, MODERN, SERIAL
from tests.test_shelly_poller_parse import (EM1_DATA, EM1_STATUS, EM3_STATUS, EM_DATA3, EM_STATUS, EM_STATUS3, H)

LIMIT_STATUS = {SERIAL: {"limit_relative": 48, "max_power": 400, "limit_set_status": "Ok"},
                "1164a00a6340": {"limit_relative": 100, "max_power": 2000, "limit_set_status": "Pending"}}
POWER_STATUS = {SERIAL: {"power_set_status": "Ok"}, "1164a00a6340": {"power_set_status": "Pending"}}
SHELLY_INFO = {"id": "shellypro3em-c8f09e8a1b2c", "model": "SPEM-003CEBEU", "gen": 2, "app": "Pro3EM",
               "auth_en": True, "profile": "triphase"}
RELAY_GEN1 = {"ison": True, "has_timer": True, "timer_started": 1761310617, "timer_duration": 900,
              "timer_remaining": 900, "overpower": False, "is_valid": True, "source": "http"}
SWITCH_STATUS = {"id": 0, "source": "http", "output": True, "timer_started_at": 1761310617.42, "timer_duration": 900}

PROPERTY = settings(max_examples=200, deadline=1000, suppress_health_check=[HealthCheck.too_slow])

ABSURD = st.sampled_from([10 ** 400, -10 ** 400, 10 ** 30, math.inf, -math.inf, math.nan, 1.7976931348623157e308,
                          -0.0, 1e-320, 2 ** 63, -1, 0, True, False, None, "", "12.5", "NaN", "\x00", [], {}, [[[]]],
                          {"v": 10 ** 400}, {"v": math.nan}, {"0": {"Power": {"v": 1e300}}}])
LEAF = st.one_of(ABSURD, st.integers(), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
                 st.booleans(), st.none())
GARBAGE = st.recursive(LEAF, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                     st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                       max_leaves=8)


def _slots(doc, out):
    """Every (container, key) in doc, depth first."""
    if isinstance(doc, dict):
        for key in list(doc):
            out.append((doc, key))
            _slots(doc[key], out)
    elif isinstance(doc, list):
        for i in range(len(doc)):
            out.append((doc, i))
            _slots(doc[i], out)
    return out


@st.composite
def mutated(draw, base):
    """`base` with 1..4 mutations; sometimes the whole answer replaced by garbage."""
    if draw(st.integers(0, 19)) == 0:
        return copy.deepcopy(draw(GARBAGE))
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 4))):
        slots = _slots(doc, [])
        if not slots:
            break
        container, key = slots[draw(st.integers(0, len(slots) - 1))]
        action = draw(st.sampled_from(["absurd", "absurd", "garbage", "delete", "add"]))
        if action == "delete":
            del container[key]
        elif action == "add" and isinstance(container, dict):
            container[draw(st.sampled_from(["v", "0", "1", "10", "²", "٣", "Power", "data_age", "order", "x"]))] = \
                copy.deepcopy(draw(GARBAGE))      # a copy: later mutations must not change the strategy's values
        else:
            container[key] = copy.deepcopy(draw(ABSURD if action == "absurd" else GARBAGE))
    return doc


def _through_json(doc):
    """The same answer as text through the strict decoder: decoding may refuse it (then nothing to parse)."""
    try:
        text = json.dumps(doc)
    except (ValueError, TypeError):
        return None
    try:
        return http.decode_json(text.encode())
    except http.InvalidResponse:
        return None


def ok(value, rng, optional=True):
    if value is None:
        return optional
    return plausible.why_not(value, rng) is None and isinstance(value, float)


# ---------------------------------------------------------------- OpenDTU

def check_summary(s: dtu.InverterSummary):
    assert isinstance(s.serial, str) and isinstance(s.name, str)
    assert ok(s.data_age_s, plausible.AGE_S, False) and s.age_resolution_s in (1.0, 0.001)
    assert isinstance(s.reachable, bool) and isinstance(s.producing, bool)
    assert s.order is None or (isinstance(s.order, int) and 0 <= s.order <= plausible.ORDER.high)
    assert ok(s.limit_relative_pct, plausible.PERCENT) and ok(s.limit_absolute_w, plausible.POWER_W)


def check_live(live: dtu.InverterLive):
    check_summary(live)
    assert ok(live.ac_power_w, plausible.POWER_W) and ok(live.ac_voltage_v, plausible.VOLTAGE_V)
    assert ok(live.temperature_c, plausible.TEMPERATURE_C) and ok(live.yield_total_kwh, plausible.ENERGY_KWH)
    for d in live.dc_inputs:
        assert ok(d.voltage_v, plausible.VOLTAGE_V) and ok(d.current_a, plausible.CURRENT_A)
        assert ok(d.power_w, plausible.POWER_W)


def parse_or_invalid(fn, *args):
    try:
        return fn(*args)
    except dtu.DtuInvalidResponse as exc:
        assert exc.kind == "invalid" and str(exc)
        return None


@PROPERTY
@given(st.one_of(mutated(MODERN), mutated(LEGACY)))
def test_opendtu_live_data_is_valid_or_invalid(doc):
    for d in (doc, _through_json(doc)):
        summary = parse_or_invalid(dtu.parse_livedata_summary, d)
        for s in summary or ():
            check_summary(s)
        live = parse_or_invalid(dtu.parse_livedata_inverter, d, SERIAL)
        if live is not None:
            check_live(live)


@PROPERTY
@given(mutated(LIMIT_STATUS), mutated(POWER_STATUS))
def test_opendtu_limit_and_power_status_are_valid_or_invalid(limit_doc, power_doc):
    for d in (limit_doc, _through_json(limit_doc)):
        for serial, status in (parse_or_invalid(dtu.parse_limit_status, d) or {}).items():
            assert isinstance(serial, str) and isinstance(status.status, str)
            assert ok(status.limit_relative_pct, plausible.PERCENT) and ok(status.max_power_w, plausible.RATING_W)
    for d in (power_doc, _through_json(power_doc)):
        for serial, status in (parse_or_invalid(dtu.parse_power_status, d) or {}).items():
            assert isinstance(serial, str) and isinstance(status, str)


@PROPERTY
@given(mutated({"type": "success", "message": "Settings saved!", "code": 1001}))
def test_opendtu_command_answers_are_accepted_rejected_or_invalid(doc):
    try:
        assert dtu.check_command_answer(doc)["type"] == "success"
    except (dtu.DtuRejected, dtu.DtuInvalidResponse) as exc:
        assert str(exc)


# ---------------------------------------------------------------- Shelly

def check_values(v: shelly.MeterValues, n_phases):
    assert ok(v.power_w, plausible.POWER_W, False)
    assert len(v.phases) == n_phases
    for p in v.phases:
        assert ok(p.power_w, plausible.POWER_W) and ok(p.voltage_v, plausible.VOLTAGE_V)
        assert p.current_a is None or math.isfinite(p.current_a)
        assert ok(p.energy_import_kwh, plausible.ENERGY_KWH) and ok(p.energy_export_kwh, plausible.ENERGY_KWH)
    for e in (v.energy_import_kwh, v.energy_export_kwh):
        assert e is None or (math.isfinite(e) and e >= 0)
    assert ok(v.device_time, plausible.UNIX_TIME_S)
    assert isinstance(v.values, tuple)
    shelly.MeterReading("m", v.power_w, v.phases, 1.0, v.energy_import_kwh, v.energy_export_kwh,
                        v.device_time, v.values).to_body()


def shelly_named(fn, *args):
    try:
        return fn(*args)
    except (shelly.ShellyInvalidResponse, shelly.ShellyInvalidReading, shelly.ShellyUnsupportedDevice) as exc:
        assert H in str(exc) and exc.kind in ("invalid", "invalid_reading", "unsupported")
        return None


@PROPERTY
@given(mutated(EM_STATUS), mutated(EM3_STATUS), st.integers(0, 2))
def test_shelly_gen1_status_is_valid_or_invalid(em, em3, channel):
    for d in (em, _through_json(em)):
        values = shelly_named(shelly.parse_gen1_status, H, d, False, channel)
        if values is not None:
            check_values(values, 1)
    for d in (em3, _through_json(em3)):
        values = shelly_named(shelly.parse_gen1_status, H, d, True)
        if values is not None:
            check_values(values, 3)


@PROPERTY
@given(mutated(EM1_STATUS), mutated(EM1_DATA), mutated(EM_STATUS3), mutated(EM_DATA3))
def test_shelly_gen2_status_is_valid_or_invalid(em1, em1_data, em, em_data):
    for status, data in ((em1, em1_data), (_through_json(em1), _through_json(em1_data))):
        values = shelly_named(shelly.parse_em1, H, status, data)
        if values is not None:
            check_values(values, 1)
    for status, data in ((em, em_data), (_through_json(em), _through_json(em_data))):
        values = shelly_named(shelly.parse_em, H, status, data)
        if values is not None:
            check_values(values, 3)


@PROPERTY
@given(mutated(SHELLY_INFO), mutated(RELAY_GEN1), mutated(SWITCH_STATUS), st.booleans())
def test_shelly_detection_and_relay_answers_are_valid_or_named(info, relay, switch, want_on):
    device = shelly_named(shelly.parse_device_info, H, info)
    if device is not None:
        assert 1 <= device.gen <= 9 and isinstance(device.model, str)
        assert device.meter_component in (None, "gen1", "gen1_3phase", "em", "em1")
        component = shelly_named(shelly.gen2_component_from_status, H, info, 0)
        assert component in (None, "em", "em1")
    for result in (shelly.parse_relay_answer(relay, want_on), shelly.parse_switch_status(switch, want_on)):
        assert isinstance(result.ok, bool) and result.on in (None, True, False)
        assert ok(result.timer_remaining_s, plausible.TIMER_S)
        assert result.ok or result.error_kind in ("invalid", "unconfirmed", "no_timer")


JSON_BITS = st.sampled_from(['{', '}', '[', ']', ',', ':', '"a"', '"v"', "1", "-0", "1e999", "1.8e308", "9" * 400,
                             "NaN", "Infinity", "null", "true", "\\u0000", '"\\ud800"', " ", "\xff", "1" * 5000])


@PROPERTY
@given(st.one_of(st.binary(max_size=300), st.lists(JSON_BITS, max_size=40).map("".join)))
def test_strict_json_decodes_or_names_the_answer_invalid(raw):
    try:
        value = http.decode_json(raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogatepass"))
    except http.InvalidResponse as exc:
        assert exc.kind == "invalid"
        return
    for number in _numbers(value):
        assert math.isfinite(number) and abs(number) < 10 ** 31


def _numbers(value):
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        for item in value:
            yield from _numbers(item)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield value
