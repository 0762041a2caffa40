"""Bodies and a tiny driver for the controller core tests (bodies exactly as on the bus)."""
from __future__ import annotations

from common import messages as m
from services.controller import core


def grid(power_w, t):
    return (m.METER_GRID, {"device": "SHEM", "power_w": power_w, "sign": "positive_is_import",
                           "phases": [{"power_w": power_w}], "sample_t_mono": t})


def balcony(power_w, t):
    return (m.METER_BALCONY, {"device": "SHEM", "power_w": power_w, "sign": "positive_is_import",
                              "phases": [{"power_w": power_w}], "sample_t_mono": t})


def meter_status(role, ok):
    return (m.METER_STATUS, {"role": role, "ok": ok, "error_kind": None if ok else "timeout",
                             "error_count": 0 if ok else 1})


def inverter(serial, t, limit_pct=10.0, ac_power_w=None, max_power_w=400.0, index=0, reachable=True,
             producing=True, ac_voltage_v=230.0, temperature_c=30.0, dc_current_a=1.0):
    if ac_power_w is None and max_power_w is not None:
        ac_power_w = limit_pct * max_power_w / 100.0 if producing else 0.0
    return (m.DTU_INVERTER, {
        "serial": serial, "name": f"HM {serial}", "index": index, "model": "HM-400", "reachable": reachable,
        "producing": producing, "data_age_s": 0.5, "sample_t_mono": t, "ac_power_w": ac_power_w,
        "ac_voltage_v": ac_voltage_v, "dc_voltage_v": 52.0, "dc_current_a": dc_current_a, "dc_power_w": 50.0,
        "temperature_c": temperature_c, "yield_total_kwh": 12.5, "limit_pct": limit_pct,
        "limit_w": limit_pct * max_power_w / 100.0 if max_power_w is not None else None,
        "max_power_w": max_power_w})


def dtu_status(serials, ok=True, can_control=True):
    return (m.DTU_STATUS, {"ok": ok, "error_kind": None if ok else "timeout", "error_count": 0 if ok else 1,
                           "serials": list(serials), "can_control": can_control})


def ack(serial, limit_pct, outcome="ok", sent_t=None, latency_s=None):
    body = {"serial": serial, "command": "limit", "outcome": outcome, "limit_pct": limit_pct}
    if sent_t is not None:
        body["sent_t_mono"] = sent_t
    if latency_s is not None:
        body["latency_s"] = latency_s
    return (m.DTU_ACK, body)


def battery(soc_pct=80.0, voltage_v=52.0, dcl_a=12.5, current_a=0.0, present=True, ccl_a=20.0):
    return (m.VENUS_BATTERY, {"present": present, "service": "com.victronenergy.battery.ttyO1" if present else None,
                              "soc_pct": soc_pct, "voltage_v": voltage_v, "current_a": current_a, "ccl_a": ccl_a,
                              "dcl_a": dcl_a, "temperature_c": 20.0, "age_s": 1.0})


def setting(request_id, name, value):
    return (m.VENUS_SETTING, {"request_id": request_id, "name": name, "value": value})


def checked(outputs):
    """Every output body validates against common/messages.py; returns {topic: [bodies]}."""
    by_topic: dict[str, list] = {}
    for topic, body in outputs:
        assert m.check_body(topic, body) == body, (topic, body)
        by_topic.setdefault(topic, []).append(body)
    return by_topic


class Driver:
    """Feeds events to core.step and keeps what came out."""

    def __init__(self, params=None, persisted=None, t0=1000.0, **changes):
        self.params = (params or core.Params.defaults()).with_(**changes) if changes else \
            (params or core.Params.defaults())
        self.state = core.initial_state(self.params, persisted)
        self.now = t0
        self.out: dict[str, list] = {}

    def step(self, events=(), dt=0.0):
        self.now += dt
        self.state, outputs = core.step(self.state, list(events), self.now, self.params)
        got = checked(outputs)
        for topic, bodies in got.items():
            self.out.setdefault(topic, []).extend(bodies)
        return got

    def last(self, topic):
        bodies = self.out.get(topic)
        return bodies[-1] if bodies else None

    def limits(self):
        body = self.last(m.CTRL_SETPOINT)
        return {item["serial"]: item["limit_pct"] for item in body["limits"]} if body else {}

    def inv(self, serial):
        return self.state.inverters[serial]
