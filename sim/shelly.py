"""Shelly meter and relay simulators (docs/shelly-api.md), fed by a `Plant`.

`ShellySimulator(plant, model, role, host="127.0.0.1", port=0, password=None, username="admin", noise_w=2.0)`
`.start()` → self; `.port`, `.url`, `.stop()`, `.set_fault(kind or None)`, `.device_id`, `.gen`.

Models: `shem` (Gen1 EM, 2 channels), `shem3` (Gen1 3EM), `shsw1` (Gen1 Shelly 1 relay), `pro_em` (Gen2 Pro EM-50,
`em1:0/1` + `switch:0`), `em_gen3` (Gen3 EM, `em1:0/1` + `switch:0`), `pro_3em` (Gen2 Pro 3EM, triphase `em:0`).
Roles: `grid` (channel 0 / the phase total = plant grid power, + import), `balcony` (channel 0 / phase A = balcony
production, positive — the CT sits the way the seed read it), `relay` (meters read 0; the relay / `switch:0` IS the
plant's life-signal relay, its flip-back timer really opens it).

Auth: Gen1 HTTP Basic on everything but `/shelly` when a password is set (401 plain text); Gen2+ Digest SHA-256
(RFC 7616, realm = device id, qop=auth, nonce valid 1 h, nc must increase per nonce) on `/rpc` except
`Shelly.GetDeviceInfo`. Readings refresh once per simulated second; energy counters integrate in the plant.
Faults: refused, hang, http500, http429, html, null, garbage, http401, stale (values and counters frozen while the
device clock runs on), invalid (Gen1 `is_valid:false`, Gen2 `errors:["power_meter_failure"]`).
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import re
from dataclasses import dataclass
from typing import Optional

from sim.httpbase import Request, Response, SimHttpServer, basic_credentials, json_response, text_response
from sim.plant import Plant

FAULT_KINDS = ("refused", "hang", "drip", "absurd", "http500", "http429", "html", "null", "garbage", "http401",
               "stale", "invalid")
ROLES = ("grid", "balcony", "relay")


@dataclass(frozen=True)
class ShellyModel:
    key: str
    gen: int
    ident: str              # Gen1 "type", Gen2 "model"
    channels: int           # emeters / em1 channels; 3 for a triphase em:0
    relay: bool
    triphase: bool = False
    app: str = ""
    id_prefix: str = ""
    fw: str = ""


MODELS: dict[str, ShellyModel] = {
    "shem": ShellyModel("shem", 1, "SHEM", 2, True, fw="20230913-114150/v1.14.0-gcb84623", id_prefix="shellyem"),
    "shem3": ShellyModel("shem3", 1, "SHEM-3", 3, True, triphase=True, fw="20230913-114244/v1.14.0-gcb84623",
                         id_prefix="shellyem3"),
    "shsw1": ShellyModel("shsw1", 1, "SHSW-1", 0, True, fw="20230913-112003/v1.14.0-gcb84623",
                         id_prefix="shelly1"),
    "pro_em": ShellyModel("pro_em", 2, "SPEM-002CEBEU50", 2, True, app="ProEM", id_prefix="shellyproem50",
                          fw="20241011-114455/1.4.4-g6d2a586"),
    "em_gen3": ShellyModel("em_gen3", 3, "S3EM-002CXCEU", 2, True, app="EMG3", id_prefix="shellyemg3",
                           fw="20241011-114449/1.4.4-g6d2a586"),
    "pro_3em": ShellyModel("pro_3em", 2, "SPEM-003CEBEU", 3, False, triphase=True, app="Pro3EM",
                           id_prefix="shellypro3em", fw="20241011-114455/1.4.4-g6d2a586"),
}


class _LocalRelay:
    """A relay that switches nothing in the plant (e.g. the contactor output of a grid meter)."""

    def __init__(self, plant: Plant):
        self.plant = plant
        self.on = False
        self.flip_at_s: Optional[float] = None
        self.started_s: Optional[float] = None
        self.duration_s: Optional[float] = None
        self.source = "init"

    def _tick(self) -> None:
        if self.flip_at_s is not None and self.plant.now_s >= self.flip_at_s:
            self.on = not self.on
            self.flip_at_s = self.started_s = self.duration_s = None
            self.source = "timer"

    def state(self) -> tuple[bool, Optional[float], Optional[float], Optional[float]]:
        """(on, timer_started_wall_s, duration_s, remaining_s)."""
        self._tick()
        if self.flip_at_s is None:
            return self.on, None, None, None
        return (self.on, self.plant.wall_start_s + self.started_s, self.duration_s,
                max(0.0, self.flip_at_s - self.plant.now_s))

    def set(self, on: bool, flip_after_s: Optional[float]) -> None:
        self._tick()
        self.on = on
        self.source = "http"
        if flip_after_s:
            self.started_s = self.plant.now_s
            self.duration_s = float(flip_after_s)
            self.flip_at_s = self.plant.now_s + self.duration_s
        else:
            self.flip_at_s = self.started_s = self.duration_s = None


class _PlantRelay:
    """The plant's life-signal relay."""

    def __init__(self, plant: Plant):
        self.plant = plant

    @property
    def source(self) -> str:
        return self.plant.relay_source

    def state(self):
        p = self.plant
        if p.relay_flip_at_s is None:
            return p.relay_on, None, None, None
        return (p.relay_on, p.wall_start_s + p.relay_timer_started_s, p.relay_timer_duration_s,
                max(0.0, p.relay_flip_at_s - p.now_s))

    def set(self, on: bool, flip_after_s: Optional[float]) -> None:
        self.plant.set_relay(on, flip_after_s, source="http")


class RpcError(Exception):
    def __init__(self, code: int, message: str, http_status: int = 400):
        super().__init__(message)
        self.code, self.message, self.http_status = code, message, http_status


def _r(x: float, nd: int) -> float:
    return round(x, nd) + 0.0


class ShellySimulator(SimHttpServer):
    def __init__(self, plant: Plant, model: str, role: str, host: str = "127.0.0.1", port: int = 0,
                 password: Optional[str] = None, username: str = "admin", *, noise_w: float = 2.0, seed: int = 1,
                 hang_s: float = 30.0, nonce_lifetime_s: float = 3600.0):
        if model not in MODELS:
            raise ValueError(f"unknown Shelly model {model!r} (known: {', '.join(MODELS)})")
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r} (grid, balcony, relay)")
        self.model = MODELS[model]
        if role == "relay" and not self.model.relay:
            raise ValueError(f"{model} has no relay")
        if role in ("grid", "balcony") and self.model.channels == 0:
            raise ValueError(f"{model} has no meter")
        super().__init__(host, port, hang_s=hang_s)
        self.plant = plant
        self.role = role
        self.password = password or None
        self.username = username if self.model.gen == 1 else "admin"
        self.noise_w = noise_w
        self.rng = random.Random(seed * 31 + ROLES.index(role))
        self.mac = "C45BBE" + "".join(self.rng.choice("0123456789ABCDEF") for _ in range(6))
        self.device_id = f"{self.model.id_prefix}-{self.mac.lower()}"
        self.relay = _PlantRelay(plant) if role == "relay" else _LocalRelay(plant)
        base = self.rng.uniform(1e5, 5e6)
        self._energy_offset_wh = (base, base * 0.004)
        self._snap: Optional[dict] = None
        self._snap_t_s = -1e9
        self.nonce_lifetime_s = nonce_lifetime_s
        self._nonces: dict[str, dict] = {}

    @property
    def gen(self) -> int:
        return self.model.gen

    def set_fault(self, kind: Optional[str], serial: Optional[str] = None) -> None:
        if kind is not None and kind not in FAULT_KINDS:
            raise ValueError(f"unknown Shelly fault {kind!r} (known: {', '.join(FAULT_KINDS)})")
        self._set_transport_fault(kind)

    # ----- readings -----
    def _readings(self) -> dict:
        """Per channel: power_w, voltage_v, import_wh, export_wh. Refreshed once per simulated second."""
        p = self.plant
        if self.fault == "stale" and self._snap is not None:
            return self._snap
        if self._snap is not None and p.now_s - self._snap_t_s < 1.0:
            return self._snap
        n = max(1, self.model.channels)
        powers = [0.0] * n
        imports = [0.0] * n
        exports = [0.0] * n
        off_in, off_out = self._energy_offset_wh
        if self.role == "grid":
            if self.model.triphase:
                powers = list(p.phase_w)
                imports = [off_in / 3 + e for e in p.phase_import_wh]
                exports = [off_out / 3 + e for e in p.phase_export_wh]
            else:
                powers[0] = p.grid_w
                imports[0] = off_in + p.grid_import_wh
                exports[0] = off_out + p.grid_export_wh
        elif self.role == "balcony":
            powers[0] = p.balcony_w
            imports[0] = off_out + p.balcony_wh
        noise = self.noise_w
        if noise > 0 and self.role != "relay":
            powers = [x + self.rng.gauss(0.0, noise) if (i == 0 or self.model.triphase) else x
                      for i, x in enumerate(powers)]
        volts = [round(230.0 + self.rng.uniform(-1.5, 1.5), 2) for _ in range(n)]
        self._snap = {"power": powers, "voltage": volts, "import": imports, "export": exports}
        self._snap_t_s = p.now_s
        return self._snap

    # ----- HTTP entry -----
    def handle(self, req: Request) -> Response:
        fault = self.fault
        gen1 = self.model.gen == 1
        if fault == "http500":
            return (text_response("Internal Server Error", 500) if gen1 else
                    json_response({"code": -104, "message": "Deadline exceeded"}, 500))
        if fault == "http429":
            return (text_response("Too Many Requests", 429, headers=[("Retry-After", "10")]) if gen1 else
                    json_response({"code": 429, "message": "Too many requests"}, 429))
        if fault == "html":
            return text_response("<html><body><h1>Shelly</h1></body></html>", 200, "text/html")
        if fault == "null":
            return Response(200, b"null", "application/json")
        if fault == "garbage":
            return Response(200, b'{"emeters":[{"power":12.3,"volt', "application/json")
        if fault == "http401":
            return self._gen1_401() if gen1 else self._digest_challenge()
        with self.plant.lock:
            if req.path == "/shelly":
                return json_response(self._device_info())
            return self._gen1(req) if gen1 else self._gen2(req)

    # ----- Gen1 -----
    def _gen1_401(self) -> Response:
        return text_response("401 Unauthorized", 401,
                             headers=[("WWW-Authenticate", f'Basic realm="{self.device_id}"')])

    def _device_info(self) -> dict:
        m = self.model
        if m.gen == 1:
            info = {"type": m.ident, "mac": self.mac, "auth": self.password is not None, "fw": m.fw,
                    "discoverable": False, "longid": 1, "num_outputs": 1 if m.relay else 0, "num_meters": 0}
            if m.channels:
                info["num_emeters"] = m.channels
            return info
        info = {"name": None, "id": self.device_id, "mac": self.mac, "slot": 0, "model": m.ident, "gen": m.gen,
                "fw_id": m.fw, "ver": m.fw.split("/")[1].split("-")[0], "app": m.app,
                "auth_en": self.password is not None,
                "auth_domain": self.device_id if self.password is not None else None}
        if m.triphase:
            info["profile"] = "triphase"
        return info

    def _relay_gen1(self) -> dict:
        on, started, duration, remaining = self.relay.state()
        state = {"ison": on, "has_timer": started is not None,
                 "timer_started": int(started) if started is not None else 0,
                 "timer_duration": int(duration) if duration is not None else 0,
                 "timer_remaining": int(remaining) if remaining is not None else 0}
        if self.model.key != "shsw1":
            state.update({"overpower": False, "is_valid": True})
        state["source"] = self.relay.source
        return state

    def _emeter(self, i: int) -> dict:
        r = self._readings()
        power = r["power"][i]
        volt = r["voltage"][i]
        valid = self.fault != "invalid"
        e = {"power": _r(power, 2)}
        if self.model.key == "shem":
            e["reactive"] = _r(power * 0.05, 2)
        e["pf"] = _r((0.98 if power >= 0 else -0.98) if abs(power) > 1 else 0.0, 2)
        if self.model.key == "shem3":
            e["current"] = _r(abs(power) / volt if volt > 0 else 0.0, 2)
        e.update({"voltage": volt, "is_valid": valid, "total": _r(r["import"][i], 1),
                  "total_returned": _r(r["export"][i], 1)})
        return e

    def _gen1(self, req: Request) -> Response:
        if self.password is not None:
            creds = basic_credentials(req)
            if creds != (self.username, self.password):
                return self._gen1_401()
        m = self.model
        path = req.path.rstrip("/")
        if path == "/status":
            p = self.plant
            status = {"wifi_sta": {"connected": True, "ssid": "sim", "ip": self.host, "rssi": -55},
                      "cloud": {"enabled": False, "connected": False}, "mqtt": {"connected": False},
                      "time": "%02d:%02d" % divmod(int(p.wall_s) // 60 % 1440, 60), "unixtime": int(p.wall_s),
                      "serial": int(p.now_s) % 65536, "has_update": False, "mac": self.mac, "cfg_changed_cnt": 0,
                      "relays": [self._relay_gen1()]}
            if m.channels:
                status["emeters"] = [self._emeter(i) for i in range(m.channels)]
            if m.key == "shem3":
                status["total_power"] = _r(sum(e["power"] for e in status["emeters"]), 2)
                status["emeter_n"] = {"current": 0.0, "ixsum": _r(sum(e["current"] for e in status["emeters"]), 2),
                                      "mismatch": False, "is_valid": False}
            status["uptime"] = int(p.now_s)
            return json_response(status)
        match = re.fullmatch(r"/emeter/(\d+)", path)
        if match and int(match.group(1)) < m.channels:
            return json_response(self._emeter(int(match.group(1))))
        if path == "/relay/0":
            turn = req.query.get("turn")
            if turn is not None:
                if turn not in ("on", "off", "toggle"):
                    return text_response("Bad turn!", 400)
                on, *_ = self.relay.state()
                target = (not on) if turn == "toggle" else turn == "on"
                timer = req.query.get("timer")
                try:
                    flip_after = float(timer) if timer not in (None, "") else None
                except ValueError:
                    return text_response("Bad timer!", 400)
                self.relay.set(target, flip_after if flip_after and flip_after > 0 else None)
            return json_response(self._relay_gen1())
        return text_response("Not Found", 404)

    # ----- Gen2 digest auth -----
    def _digest_challenge(self) -> Response:
        nonce = base64.b64encode(os.urandom(12)).decode().rstrip("=")
        self._nonces[nonce] = {"expires": self.plant.now_s + self.nonce_lifetime_s, "nc": 0}
        if len(self._nonces) > 1000:
            for key in list(self._nonces)[:500]:
                del self._nonces[key]
        header = f'Digest qop="auth", realm="{self.device_id}", nonce="{nonce}", algorithm=SHA-256'
        return json_response({"code": 401, "message": "Unauthorized"}, 401, [("WWW-Authenticate", header)])

    def _digest_ok(self, req: Request) -> bool:
        value = req.headers.get("authorization", "")
        if not value.lower().startswith("digest "):
            return False
        fields = dict((k.lower(), v1 if v1 else v2)
                      for k, v1, v2 in re.findall(r'(\w+)\s*=\s*(?:"([^"]*)"|([^\s,]*))', value[7:]))
        nonce = self._nonces.get(fields.get("nonce", ""))
        if nonce is None or self.plant.now_s > nonce["expires"]:
            return False
        if (fields.get("username") != "admin" or fields.get("realm") != self.device_id
                or fields.get("qop") != "auth" or fields.get("algorithm", "SHA-256").upper() != "SHA-256"
                or fields.get("uri") != req.raw_path):
            return False
        try:
            nc = int(fields.get("nc", ""), 16)
        except ValueError:
            return False
        if nc <= nonce["nc"] or nc > 30000:
            return False
        h = lambda s: hashlib.sha256(s.encode("utf-8")).hexdigest()  # noqa: E731
        ha1 = h(f"admin:{self.device_id}:{self.password}")
        ha2 = h(f"{req.method}:{fields['uri']}")
        expected = h(f"{ha1}:{fields['nonce']}:{fields['nc']}:{fields.get('cnonce', '')}:auth:{ha2}")
        if fields.get("response") != expected:
            return False
        nonce["nc"] = nc
        return True

    # ----- Gen2 RPC -----
    def _gen2(self, req: Request) -> Response:
        if req.path == "/rpc" and req.method == "POST":
            try:
                frame = json.loads(req.body or b"null")
            except ValueError:
                return json_response({"code": -103, "message": "Invalid JSON"}, 400)
            if not isinstance(frame, dict) or not isinstance(frame.get("method"), str):
                return json_response({"code": -103, "message": "Missing required argument 'method'!"}, 400)
            method = frame["method"]
            params = frame.get("params") or {}
            if not isinstance(params, dict):
                return json_response({"code": -103, "message": "Invalid argument 'params'!"}, 400)
            if self._needs_auth(method) and not self._digest_ok(req):
                return self._digest_challenge()
            reply = {"id": frame.get("id"), "src": self.device_id}
            try:
                reply["result"] = self._call(method, params)
            except RpcError as err:
                reply["error"] = {"code": err.code, "message": err.message}
            return json_response(reply)
        match = re.fullmatch(r"/rpc/([A-Za-z0-9_.]+)", req.path)
        if not match:
            return text_response("Not Found", 404)
        method = match.group(1)
        if self._needs_auth(method) and not self._digest_ok(req):
            return self._digest_challenge()
        params = {}
        for key, raw in req.query.items():
            try:
                params[key] = json.loads(raw)
            except ValueError:
                params[key] = raw
        try:
            return json_response(self._call(method, params))
        except RpcError as err:
            return json_response({"code": err.code, "message": err.message}, err.http_status)

    def _needs_auth(self, method: str) -> bool:
        return self.password is not None and method != "Shelly.GetDeviceInfo"

    @staticmethod
    def _id(params: dict, limit: int) -> int:
        if "id" not in params:
            raise RpcError(-103, "Missing required argument 'id'!")
        cid = params["id"]
        if not isinstance(cid, int) or isinstance(cid, bool):
            raise RpcError(-103, "Invalid argument 'id'!")
        if not 0 <= cid < limit:
            raise RpcError(-105, f"Argument 'id', value {cid} not found!", 404)
        return cid

    def _call(self, method: str, params: dict):
        m = self.model
        em1 = not m.triphase
        if method == "Shelly.GetDeviceInfo":
            return self._device_info()
        if method == "Shelly.GetStatus":
            return self._full_status()
        if method == "Sys.GetStatus":
            return self._sys()
        if method == "EM1.GetStatus" and em1:
            return self._em1(self._id(params, m.channels))
        if method == "EM1Data.GetStatus" and em1:
            return self._em1data(self._id(params, m.channels))
        if method == "EM.GetStatus" and not em1:
            self._id(params, 1)
            return self._em()
        if method == "EMData.GetStatus" and not em1:
            self._id(params, 1)
            return self._emdata()
        if method.startswith("Switch.") and m.relay:
            self._id(params, 1)
            if method == "Switch.GetStatus":
                return self._switch_status()
            if method in ("Switch.Set", "Switch.Toggle"):
                was_on, *_ = self.relay.state()
                if method == "Switch.Set":
                    on = params.get("on")
                    if not isinstance(on, bool):
                        raise RpcError(-103, "Missing required argument 'on'!")
                else:
                    on = not was_on
                after = params.get("toggle_after")
                if after is not None and (not isinstance(after, (int, float)) or isinstance(after, bool)
                                          or after <= 0):
                    raise RpcError(-103, "Invalid argument 'toggle_after'!")
                self.relay.set(on, float(after) if after else None)
                return {"was_on": was_on}
        raise RpcError(404, f"No handler for {method}", 404)

    def _sys(self) -> dict:
        p = self.plant
        return {"mac": self.mac, "restart_required": False,
                "time": "%02d:%02d" % divmod(int(p.wall_s) // 60 % 1440, 60), "unixtime": int(p.wall_s),
                "uptime": int(p.now_s), "ram_size": 245000, "ram_free": 118000, "fs_size": 524288,
                "fs_free": 180224, "cfg_rev": 12, "kvs_rev": 0, "schedule_rev": 0, "webhook_rev": 0,
                "available_updates": {}}

    def _errors(self) -> Optional[list]:
        return ["power_meter_failure"] if self.fault == "invalid" else None

    def _em1(self, i: int) -> dict:
        r = self._readings()
        power = r["power"][i]
        volt = r["voltage"][i]
        current = abs(power) / volt if volt > 0 else 0.0
        status = {"id": i, "current": _r(current, 3), "voltage": volt, "act_power": _r(power, 1),
                  "aprt_power": _r(abs(power) / 0.98 if abs(power) > 1 else 0.0, 1),
                  "pf": _r(0.98 if abs(power) > 1 else 0.0, 2), "freq": 50.0, "calibration": "factory"}
        if self._errors():
            status["errors"] = self._errors()
        return status

    def _em1data(self, i: int) -> dict:
        r = self._readings()
        return {"id": i, "total_act_energy": _r(r["import"][i], 2), "total_act_ret_energy": _r(r["export"][i], 2)}

    def _em(self) -> dict:
        r = self._readings()
        status = {"id": 0}
        total_current = total_aprt = 0.0
        for i, ph in enumerate("abc"):
            power = r["power"][i]
            volt = r["voltage"][i]
            current = abs(power) / volt if volt > 0 else 0.0
            aprt = abs(power) / 0.98 if abs(power) > 1 else 0.0
            total_current += current
            total_aprt += aprt
            status.update({f"{ph}_current": _r(current, 3), f"{ph}_voltage": volt, f"{ph}_act_power": _r(power, 1),
                           f"{ph}_aprt_power": _r(aprt, 1), f"{ph}_pf": _r(0.98 if abs(power) > 1 else 0.0, 2),
                           f"{ph}_freq": 50.0})
        status.update({"n_current": None, "total_current": _r(total_current, 3),
                       "total_act_power": _r(sum(r["power"][:3]), 3), "total_aprt_power": _r(total_aprt, 3),
                       "user_calibrated_phase": []})
        if self._errors():
            status["errors"] = self._errors()
        return status

    def _emdata(self) -> dict:
        r = self._readings()
        data = {"id": 0}
        for i, ph in enumerate("abc"):
            data[f"{ph}_total_act_energy"] = _r(r["import"][i], 2)
            data[f"{ph}_total_act_ret_energy"] = _r(r["export"][i], 2)
        data["total_act"] = _r(sum(r["import"][:3]), 2)
        data["total_act_ret"] = _r(sum(r["export"][:3]), 2)
        return data

    def _switch_status(self) -> dict:
        on, started, duration, _remaining = self.relay.state()
        status = {"id": 0, "source": self.relay.source, "output": on}
        if started is not None:
            status["timer_started_at"] = round(started, 2)
            status["timer_duration"] = duration
        return status

    def _full_status(self) -> dict:
        m = self.model
        status = {}
        if m.triphase:
            status["em:0"] = self._em()
            status["emdata:0"] = self._emdata()
        else:
            for i in range(m.channels):
                status[f"em1:{i}"] = self._em1(i)
                status[f"em1data:{i}"] = self._em1data(i)
        if m.relay:
            status["switch:0"] = self._switch_status()
        status["sys"] = self._sys()
        status["wifi"] = {"sta_ip": self.host, "status": "got ip", "ssid": "sim", "rssi": -55}
        return status
