"""OpenDTU Web API simulator (docs/opendtu-api.md), driven by a `Plant` through a `DtuModel`.

`OpenDtuSimulator(plant, host="127.0.0.1", port=0, firmware="v25.9.11", password="openDTU42", poll_interval_s=1.0)`
`.start()` → self; `.port`, `.url`, `.stop()`, `.set_fault(kind or None, serial=None)`, `.limit_log`, `.dtu`.

Firmware eras (by `firmware`): < v24.2.12 legacy live data (all channel data in the plain call, `?inv=` ignored,
yields in `AC."0"`); ≥ v24.2.12 summary + `?inv=`; `data_age_ms` ≥ v25.4.2; `radio_stats` ≥ v24.9.22; strict JSON
types (numeric serial → 1005) ≥ v24.9.21; persistent limit types 256/257 ≤ v25.5.10, 2/3 ≥ v25.9.11.

Faults (`set_fault`): refused, hang, drip, absurd (httpbase), http500, http429, html, null, garbage, http401
(every request); stale (no `serial`: the DTU stops polling; with `serial`: that inverter only); unreachable,
limit_failure, power_ignored (per inverter,
all inverters when `serial` is None). `set_fault(None)` clears everything, `set_fault(None, serial)` that inverter.
"""
from __future__ import annotations

import json
import math
import re
import struct
import threading
from email.parser import BytesParser
from email.policy import HTTP
from typing import Optional
from urllib.parse import parse_qs

from sim.dtu import INVERTER_FAULTS, DtuModel, InverterRadio, apply_fault
from sim.httpbase import (WEBAPP_HTML, Request, Response, SimHttpServer, basic_credentials, json_response,
                          text_response)
from sim.plant import Plant

HTTP_FAULTS = ("refused", "hang", "drip", "absurd", "http500", "http429", "html", "null", "garbage", "http401")
FAULT_KINDS = HTTP_FAULTS + ("stale",) + tuple(k for k in INVERTER_FAULTS if k != "stale")


def parse_firmware(version: str) -> tuple[int, int, int]:
    """Lenient: "v25.9.11", "v25.9.11-12-gabcdef0", OnBattery "2025.09.16" → (25, 9, 16)."""
    numbers = [int(n) for n in re.findall(r"\d+", version)[:3]]
    while len(numbers) < 3:
        numbers.append(0)
    if numbers[0] >= 2000:
        numbers[0] -= 2000
    return numbers[0], numbers[1], numbers[2]


def f32(value: Optional[float]):
    """A number as the ESP prints it (float32, NaN → null)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    f = struct.unpack("f", struct.pack("f", float(value)))[0]
    r = round(f, 7)
    return int(r) if r == int(r) and abs(r) < 1e15 else r


def _v(value, unit: str, decimals: int) -> dict:
    return {"v": f32(value), "u": unit, "d": decimals}


def _msg(type_: str, message: str, code: int, param: Optional[dict] = None) -> Response:
    body = {"type": type_, "message": message, "code": code}
    if param is not None:
        body["param"] = param
    return json_response(body)


class OpenDtuSimulator(SimHttpServer):
    def __init__(self, plant: Plant, host: str = "127.0.0.1", port: int = 0, firmware: str = "v25.9.11",
                 password: str = "openDTU42", poll_interval_s: float = 1.0, *, ack_min_s: float = 0.2,
                 ack_max_s: float = 2.0, failure_timeout_s: float = 10.0, limit_readback_s: float = 30.0,
                 reboot_s: float = 3.0, hang_s: float = 30.0, seed: int = 1, hostname: str = "OpenDTU-1A2B3C",
                 retry_after_s: int = 60):
        super().__init__(host, port, hang_s=hang_s)
        self.plant = plant
        self.retry_after_s = retry_after_s     # what a real OpenDTU sends with 429 (out of memory) is 60
        self.firmware = firmware
        self.fw = parse_firmware(firmware)
        self.password = password
        self.hostname = hostname
        self.reboot_s = reboot_s
        self.dtu = DtuModel(plant, poll_interval_s=poll_interval_s, ack_min_s=ack_min_s, ack_max_s=ack_max_s,
                            failure_timeout_s=failure_timeout_s, limit_readback_s=limit_readback_s, seed=seed)
        self._rebooting = False

    # ----- public API -----
    @property
    def limit_log(self) -> list[dict]:
        """Each accepted limit command: t_s, serial, type, value, pct, w (resulting W), status (Pending → Ok/Failure)."""
        return self.dtu.limit_log

    @property
    def legacy(self) -> bool:
        return self.fw < (24, 2, 12)

    @property
    def serials(self) -> list[str]:
        return [r.inv.serial for r in self.dtu.radios]

    def set_fault(self, kind: Optional[str], serial: Optional[str] = None) -> None:
        if apply_fault(self.dtu, HTTP_FAULTS, self._set_transport_fault, kind, serial):
            return
        raise ValueError(f"unknown OpenDTU fault {kind!r} (known: {', '.join(FAULT_KINDS)})")

    def stop(self) -> None:
        super().stop()
        self.dtu.close()

    # ----- HTTP -----
    def handle(self, req: Request) -> Response:
        fault = self.fault
        if fault == "http500":
            return json_response({"message": "500 Internal Server Error: handleRequest, 131", "code": 1007,
                                  "type": "danger"}, 500)
        if fault == "http429":
            return text_response("Too Many Requests", 429, headers=[("Retry-After", str(self.retry_after_s))])
        if fault == "html":
            return self._webapp()
        if fault == "null":
            return Response(200, b"null", "application/json")
        if fault == "garbage":
            return Response(200, b'{"inverters":[{"serial":"1161\x00\xff', "application/json")
        if fault == "http401":
            return self._unauthorized(req)
        route = (req.method, req.path)
        with self.plant.lock:
            if route == ("GET", "/api/livedata/status"):
                return self._livedata(req)
            if route == ("GET", "/api/limit/status"):
                return self._limit_status()
            if route == ("POST", "/api/limit/config"):
                return self._admin(req) or self._limit_config(req)
            if route == ("GET", "/api/power/status"):
                return json_response({r.inv.serial: {"power_set_status": r.power_status} for r in self.dtu.radios})
            if route == ("POST", "/api/power/config"):
                return self._admin(req) or self._power_config(req)
            if route == ("GET", "/api/inverter/list"):
                return self._admin(req) or self._inverter_list()
            if route == ("GET", "/api/devinfo/status"):
                return self._devinfo(req)
            if route == ("GET", "/api/system/status"):
                return self._system_status()
            if route == ("GET", "/api/security/authenticate"):
                return self._admin(req) or _msg("success", "Authentication successful!", 10002)
            if route == ("GET", "/api/dtu/config"):
                return self._admin(req) or json_response({"serial": "199980123456", "pollinterval":
                                                          int(self.dtu.poll_interval_s), "nrf_enabled": True,
                                                          "cmt_enabled": False})
            if route == ("POST", "/api/maintenance/reboot"):
                return self._admin(req) or self._reboot(req)
        return self._webapp()

    @staticmethod
    def _webapp() -> Response:
        return Response(200, WEBAPP_HTML, "text/html", [("Content-Encoding", "gzip")])

    def _unauthorized(self, req: Request) -> Response:
        headers = [] if "x-requested-with" in req.headers else [("WWW-Authenticate", 'Basic realm="Login Required"')]
        return Response(401, b"", None, headers)

    def _admin(self, req: Request) -> Optional[Response]:
        creds = basic_credentials(req)
        if creds is not None and creds[0] == "admin" and creds[1] == self.password:
            return None
        return self._unauthorized(req)

    # ----- live data -----
    def _inverter_common(self, radio: InverterRadio) -> dict:
        dtu = self.dtu
        stats = radio.stats
        age_s = dtu.data_age_s(radio)
        limit_rel = dtu.limit_relative(radio)
        max_w = dtu.max_power_w(radio)
        entry = {"serial": radio.inv.serial, "name": radio.inv.name}
        if self.fw >= (23, 5, 31):
            entry["order"] = radio.order
        entry["data_age"] = int(age_s)
        if self.fw >= (25, 4, 2):
            entry["data_age_ms"] = int(age_s * 1000)
        entry["poll_enabled"] = radio.poll_enabled
        entry["reachable"] = radio.reachable
        entry["producing"] = bool(radio.poll_enabled and stats is not None and stats["ac_power_w"] > 0)
        entry["limit_relative"] = f32(limit_rel)
        entry["limit_absolute"] = f32(limit_rel * max_w / 100.0) if max_w > 0 else -1
        if self.fw >= (24, 9, 22):
            entry["radio_stats"] = {"tx_request": radio.tx_request, "tx_re_request": radio.tx_re_request,
                                    "rx_success": radio.rx_success, "rx_fail_nothing": radio.rx_fail_nothing,
                                    "rx_fail_partial": 0, "rx_fail_corrupt": 0,
                                    "rssi": -30 if radio.reachable else -100}
        return entry

    def _channels(self, radio: InverterRadio, entry: dict) -> None:
        s = radio.stats
        n = radio.inv.spec.n_inputs
        if s is None:
            s = {"ac_power_w": 0, "ac_voltage_v": 0, "ac_current_a": 0, "frequency_hz": 0, "power_factor": 0,
                 "reactive_power_var": 0, "dc_power_w": 0, "yield_day_wh": 0, "yield_total_kwh": 0,
                 "temperature_c": 0, "efficiency_pct": 0,
                 "inputs": [{"power_w": 0, "voltage_v": 0, "current_a": 0, "yield_day_wh": 0,
                             "yield_total_kwh": 0}] * n}
        ac = {"Power": _v(s["ac_power_w"], "W", 1), "Voltage": _v(s["ac_voltage_v"], "V", 1),
              "Current": _v(s["ac_current_a"], "A", 2)}
        inv = {}
        moved = {"Power DC": _v(s["dc_power_w"], "W", 1), "YieldDay": _v(s["yield_day_wh"], "Wh", 0),
                 "YieldTotal": _v(s["yield_total_kwh"], "kWh", 3)}
        if self.legacy:
            ac.update({"Power DC": moved["Power DC"], "YieldDay": moved["YieldDay"],
                       "YieldTotal": moved["YieldTotal"]})
        else:
            inv.update(moved)
        ac.update({"Frequency": _v(s["frequency_hz"], "Hz", 2), "PowerFactor": _v(s["power_factor"], "", 3),
                   "ReactivePower": _v(s["reactive_power_var"], "var", 1)})
        if self.legacy:
            ac["Efficiency"] = _v(s["efficiency_pct"], "%", 3)
        inv["Temperature"] = _v(s["temperature_c"], "°C", 1)
        if not self.legacy:
            inv["Efficiency"] = _v(s["efficiency_pct"], "%", 3)
        dc = {}
        for i, ch in enumerate(s["inputs"]):
            dc[str(i)] = {"name": {"u": "Battery" if i == 0 else f"Battery {i + 1}"},
                          "Power": _v(ch["power_w"], "W", 1), "Voltage": _v(ch["voltage_v"], "V", 1),
                          "Current": _v(ch["current_a"], "A", 2), "YieldDay": _v(ch["yield_day_wh"], "Wh", 0),
                          "YieldTotal": _v(ch["yield_total_kwh"], "kWh", 3)}
        entry["AC"] = {"0": ac}
        entry["DC"] = dc
        entry["INV"] = {"0": inv}
        entry["events"] = radio.events

    def _totals_hints(self) -> dict:
        power = yday = ytotal = 0.0
        for radio in self.dtu.radios:
            if radio.stats is not None and radio.poll_enabled:
                power += radio.stats["ac_power_w"]
                yday += radio.stats["yield_day_wh"]
                ytotal += radio.stats["yield_total_kwh"]
        hints = {"time_sync": False, "radio_problem": False, "default_password": self.password == "openDTU42"}
        if not self.legacy:
            hints["pin_mapping_issue"] = False
        return {"total": {"Power": _v(power, "W", 1), "YieldDay": _v(yday, "Wh", 0),
                          "YieldTotal": _v(ytotal, "kWh", 3)}, "hints": hints}

    def _livedata(self, req: Request) -> Response:
        radios = self.dtu.radios
        inverters = []
        if self.legacy:
            for radio in radios:
                entry = self._inverter_common(radio)
                self._channels(radio, entry)
                inverters.append(entry)
        elif "inv" in req.query:
            radio = self.dtu.by_serial.get(req.query["inv"].lower())
            if radio is not None:
                entry = self._inverter_common(radio)
                self._channels(radio, entry)
                inverters.append(entry)
        else:
            inverters = [self._inverter_common(radio) for radio in radios]
        return json_response({"inverters": inverters, **self._totals_hints()})

    # ----- limits and power -----
    def _limit_status(self) -> Response:
        return json_response({r.inv.serial: {"limit_relative": f32(self.dtu.limit_relative(r)),
                                             "max_power": int(self.dtu.max_power_w(r)),
                                             "limit_set_status": r.limit_status} for r in self.dtu.radios})

    def _form_data(self, req: Request) -> Optional[str]:
        ctype = req.headers.get("content-type", "")
        if ctype.startswith("multipart/form-data"):
            msg = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + req.body)
            for part in msg.iter_parts():
                if part.get_param("name", header="content-disposition") == "data":
                    return part.get_payload(decode=True).decode("utf-8", "replace")
            return None
        fields = parse_qs(req.body.decode("utf-8", "replace"), keep_blank_values=True)
        return fields["data"][0] if "data" in fields else None

    def _parse_post(self, req: Request):
        """→ (dict, None) or (None, warning Response)."""
        raw = self._form_data(req)
        if raw is None:
            return None, _msg("warning", "No values found!", 1002)
        try:
            doc = json.loads(raw)
        except ValueError:
            return None, _msg("warning", "Failed to parse data!", 1004)
        if not isinstance(doc, dict):
            return None, _msg("warning", "Values are missing!", 1005)
        return doc, None

    def _serial_of(self, doc: dict) -> Optional[str]:
        serial = doc.get("serial")
        if isinstance(serial, str):
            return serial
        if self.fw < (24, 9, 21) and isinstance(serial, int) and not isinstance(serial, bool):
            return str(serial)
        return None

    @staticmethod
    def _hex_value(serial: str) -> int:
        match = re.match(r"\s*([0-9a-fA-F]+)", serial)
        return int(match.group(1), 16) if match else 0

    def _limit_config(self, req: Request) -> Response:
        doc, error = self._parse_post(req)
        if error:
            return error
        serial = self._serial_of(doc)
        value = doc.get("limit_value")
        ltype = doc.get("limit_type")
        if (serial is None or not isinstance(value, (int, float)) or isinstance(value, bool)
                or not isinstance(ltype, int) or isinstance(ltype, bool) or not 0 <= ltype <= 65535):
            return _msg("warning", "Values are missing!", 1005)
        if self._hex_value(serial) == 0:
            return _msg("warning", "Serial must be a number > 0!", 5001)
        if value > 2250 or (value == 0 and self.fw < (23, 12, 16)):
            return _msg("warning", "Limit must between 0 and 2250!", 5002, {"max": 2250})
        persistent_types = (2, 3) if self.fw >= (25, 9, 11) else (256, 257)
        if ltype not in (0, 1) + persistent_types:
            return _msg("warning", "Invalid type specified!", 5003)
        radio = self.dtu.by_serial.get(format(self._hex_value(serial), "x"))
        if radio is None:
            return _msg("warning", "Invalid inverter specified!", 5004)
        relative = ltype in (1, persistent_types[1])
        self.dtu.submit_limit(radio.inv.serial, ltype, float(value), persistent=ltype in persistent_types,
                              relative=relative)
        return _msg("success", "Settings saved!", 1001)

    def _power_config(self, req: Request) -> Response:
        doc, error = self._parse_post(req)
        if error:
            return error
        serial = self._serial_of(doc)
        power = doc.get("power")
        restart = doc.get("restart")
        if serial is None or not (isinstance(power, bool) or isinstance(restart, bool)):
            return _msg("warning", "Values are missing!", 1005)
        if self._hex_value(serial) == 0:
            return _msg("warning", "Serial must be a number > 0!", 11001)
        radio = self.dtu.by_serial.get(format(self._hex_value(serial), "x"))
        if radio is None:
            return _msg("warning", "Invalid inverter specified!", 11002)
        if isinstance(power, bool):
            self.dtu.submit_power(radio.inv.serial, "on" if power else "off")
        elif restart:
            self.dtu.submit_power(radio.inv.serial, "restart")
        return _msg("success", "Settings saved!", 1001)

    # ----- other endpoints -----
    def _inverter_list(self) -> Response:
        items = []
        for i, radio in enumerate(self.dtu.radios):
            inv = radio.inv
            items.append({"id": i, "name": inv.name, "order": radio.order, "serial": inv.serial,
                          "poll_enable": radio.poll_enabled, "poll_enable_night": True,
                          "command_enable": radio.command_enable, "command_enable_night": True,
                          "reachable_threshold": radio.reachable_threshold, "zero_runtime": False,
                          "zero_day": False, "clear_eventlog": False, "yieldday_correction": False,
                          "type": inv.spec.dtu_type,
                          "channel": [{"name": "Battery" if c == 0 else f"Battery {c + 1}", "max_power": 0,
                                       "yield_total_offset": 0} for c in range(inv.spec.n_inputs)]})
        return json_response({"inverter": items})

    def _devinfo(self, req: Request) -> Response:
        radio = self.dtu.by_serial.get(req.query.get("inv", "").lower())
        if radio is None:
            return json_response({})
        known = radio.devinfo_known
        return json_response({"valid_data": known, "fw_bootloader_version": 1 if known else 0,
                              "fw_build_version": 10112 if known else 0,
                              "hw_part_number": 269553669 if known else 0, "hw_version": "01.00" if known else "",
                              "hw_model_name": radio.inv.spec.model if known else "",
                              "max_power": int(self.dtu.max_power_w(radio)),
                              "fw_build_datetime": "2022-09-21 13:57:00" if known else "",
                              "pdl_supported": False})

    def _system_status(self) -> Response:
        return json_response({"hostname": self.hostname, "sdkversion": "v4.4.7-dirty", "cpufreq": 240, "cputemp": 47,
                              "heap_total": 282824, "heap_used": 131984, "chipmodel": "ESP32-D0WDQ6",
                              "config_version": "0.1.29", "git_hash": self.firmware, "git_branch": "master",
                              "pioenv": "generic_esp32", "uptime": int(self.dtu.uptime_s()),
                              "nrf_configured": True, "nrf_connected": True, "cmt_configured": False,
                              "cmt_connected": False})

    def _reboot(self, req: Request) -> Response:
        doc, error = self._parse_post(req)
        if error:
            return error
        if not isinstance(doc.get("reboot"), bool):
            return _msg("warning", "Values are missing!", 1005)
        if not doc["reboot"]:
            return _msg("success", "Reboot cancled!", 6002)
        threading.Timer(0.2, self._do_reboot).start()
        return _msg("success", "Reboot triggered!", 6001)

    def _do_reboot(self) -> None:
        if self.fault is not None or self._stopped:
            return
        self._rebooting = True
        self._set_transport_fault("refused")
        self.dtu.reboot()
        timer = threading.Timer(self.reboot_s, self._end_reboot)
        timer.daemon = True
        timer.start()

    def _end_reboot(self) -> None:
        if self._rebooting and self.fault == "refused" and not self._stopped:
            self.dtu.reboot()
            self._set_transport_fault(None)
        self._rebooting = False
