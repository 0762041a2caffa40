"""AhoyDTU (lumapu/ahoy 0.8.156) simulator on the same plant as the OpenDTU simulator.

`AhoySimulator(plant, host="127.0.0.1", port=0, password="", refresh_s=15.0, positions=None, field_order=None)`
`.start()` → self; `.port`, `.url`, `.stop()`, `.set_fault(kind or None, serial=None)`, `.expire_token()`,
`.limit_log`, `.dtu` (the radio model, an `AhoyModel`).

What it reproduces (RestApi.h, Protection.h, hmInverter.h, Communication.h of 0.8.156):
* inverters by configuration position, gaps allowed (`positions`, e.g. [0, 2]); an empty position answers
  {"error": "inverter not found!"}; unknown GET /api/* paths answer {"avail_endpoints": …}; other paths the web UI.
* every `refresh_s` (default 15 s, the firmware's SEND_INTERVAL) ALL inverters are polled; `ts_last_success` is the
  DTU time (UTC s) the exchange started; values stay at their last reading when an inverter does not answer;
  `status`/`is_avail` from the age (available < 5 min, off after 15 min).
* `/api/live` names the fields; `field_order="shuffled"` permutes names and value arrays alike (seeded).
* POST /api/ctrl: no range check (val stored as uint16(val × 10), negatives wrap); a command is sent at once (front
  of the queue); `power_limit_ack` false when the limit is transmitted, true on the inverter's reply; the limit is
  read back (`power_limit_read`, %) at the next poll after the ack, never after an inverter restart; ERR_INDEX,
  ERR_UNKNOWN_CMD, ERR_LIMIT_NOT_ACCEPT (status 0), restart_ahoy (needs a valid id) reboots the DTU.
* with a `password`: one token slot, bound to the client's IPv4 address, 20 min (`token_timeout_s`) after the last
  auth or GET carrying the generic block (/api/generic, /api/index, /api/live, /api/system); ERR_AUTH, ERR_PROTECTED.

Faults (`set_fault`): refused, hang, html (every request) ; stale (no `serial`: the DTU stops polling; with: that
inverter) ; unreachable, limit_failure (no ack, ack stays false), per inverter or all; token_reset (another client
took the token slot: one-shot). `set_fault(None)` clears everything.
"""
from __future__ import annotations

import json
import math
import random
import re
import threading
from dataclasses import dataclass
from typing import Optional

from sim.dtu import INVERTER_FAULTS, DtuModel, InverterRadio, apply_fault
from sim.httpbase import Request, Response, SimHttpServer, json_response
from sim.plant import Plant

HTTP_FAULTS = ("refused", "hang", "html")
FAULT_KINDS = HTTP_FAULTS + INVERTER_FAULTS + ("token_reset",)
VERSION = "0.8.156"
AC_FIELDS = (("U_AC", "V"), ("I_AC", "A"), ("P_AC", "W"), ("F_AC", "Hz"), ("PF_AC", ""), ("Temp", "°C"),
             ("YieldTotal", "kWh"), ("YieldDay", "Wh"), ("P_DC", "W"), ("Efficiency", "%"), ("Q_AC", "var"),
             ("MaxPower", "W"), ("MaxTemp", "°C"))
DC_FIELDS = (("U_DC", "V"), ("I_DC", "A"), ("P_DC", "W"), ("YieldDay", "Wh"), ("YieldTotal", "kWh"),
             ("Irradiation", "%"), ("MaxPower", "W"))
INACTIVE_S = 5 * 60               # INVERTER_INACT_THRES_SEC
OFF_S = 15 * 60                   # INVERTER_OFF_THRES_SEC
TOKEN_CHARS = "123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
WEB_UI = (b"<!doctype html><html><head><title>AhoyDTU</title></head><body><h2>AhoyDTU</h2>"
          b"<p>JavaScript needed</p></body></html>")


@dataclass
class DevControl:
    """One command to an inverter: limit (value = (pct, watts_or_pct, cmd)), on, off, restart."""
    kind: str
    value: object = None
    entry: Optional[dict] = None
    started_s: Optional[float] = None
    ack_at_s: Optional[float] = None
    give_up_s: float = 0.0


@dataclass
class AhoySlot:
    radio: InverterRadio
    position: int
    enabled: bool = True
    ack: bool = False                 # powerLimitAck (false at boot)
    readback_pct: float = 0.0         # power_limit_read: 0 until read
    readback_due: bool = True         # actPowerLimit == 0xffff: read at the next poll
    ts_last_success: int = 0
    max_ac_w: float = 0.0
    active: Optional[DevControl] = None
    queued: Optional[DevControl] = None


class AhoyModel(DtuModel):
    """The radio side of AhoyDTU on top of the OpenDTU model's plant hook and per-inverter records (stats,
    faults, data age): polls all inverters each `refresh_s`, sends commands at once, keeps the ack flag."""

    def __init__(self, plant: Plant, refresh_s: float = 15.0, positions: Optional[list] = None,
                 ack_min_s: float = 0.1, ack_max_s: float = 1.0, give_up_s: float = 3.0, seed: int = 1):
        super().__init__(plant, poll_interval_s=refresh_s, ack_min_s=ack_min_s, ack_max_s=ack_max_s,
                         failure_timeout_s=give_up_s, seed=seed, resend_chance=0.0)
        positions = list(range(len(self.radios))) if positions is None else list(positions)
        if len(positions) != len(self.radios) or len(set(positions)) != len(positions) \
                or not all(0 <= p < 16 for p in positions):
            raise ValueError("positions: one distinct 0..15 per inverter")
        self.refresh_s = refresh_s
        self.give_up_s = give_up_s
        self.slots = {p: AhoySlot(radio, p) for p, radio in zip(positions, self.radios)}
        self.by_serial_slot = {s.radio.inv.serial: s for s in self.slots.values()}
        self._next_refresh_s = plant.now_s + min(2.0, refresh_s)

    # ----- queries (plant.lock held) -----
    def ts_now(self) -> int:
        return int(self.plant.wall_s)

    def status(self, slot: AhoySlot) -> int:
        """InverterStatus: 0 off, 1 starting, 2 producing, 4 was on (3 'was producing' folded into 1)."""
        if slot.ts_last_success == 0:
            return 0
        age = self.ts_now() - slot.ts_last_success
        if age < INACTIVE_S:
            return 2 if self.producing(slot) else 1
        return 4 if age <= OFF_S else 0

    def producing(self, slot: AhoySlot) -> bool:
        stats = slot.radio.stats
        return stats is not None and self.ts_now() - slot.ts_last_success < INACTIVE_S and stats["ac_power_w"] > 0

    def max_pwr(self, slot: AhoySlot) -> int:
        return int(slot.radio.inv.max_power_w) if slot.radio.devinfo_known else 0

    # ----- commands -----
    def submit(self, slot: AhoySlot, cmd: DevControl) -> bool:
        """setDevControlRequest: refused while the inverter's status is off. A newer command replaces one not yet
        sent; the one in the air is finished first."""
        if self.status(slot) == 0:
            return False
        if slot.active is None:
            slot.active = cmd
        else:
            if slot.queued is not None and slot.queued.entry is not None:
                slot.queued.entry["status"] = "replaced"
            slot.queued = cmd
        return True

    def reboot(self) -> None:
        super().reboot()
        with self.plant.lock:
            for slot in self.slots.values():
                slot.ack, slot.readback_pct, slot.readback_due = False, 0.0, True
                slot.ts_last_success, slot.active, slot.queued = 0, None, None
            self._next_refresh_s = self.plant.now_s + min(2.0, self.refresh_s)

    # ----- radio (plant hook, lock held) -----
    def _on_step(self, now: float) -> None:
        if not hasattr(self, "slots"):             # the hook is added by DtuModel.__init__, before the slots
            return
        for slot in self.slots.values():
            self._devcontrol(slot, now)
        if now >= self._next_refresh_s:
            self._next_refresh_s = max(self._next_refresh_s + self.refresh_s, now)
            if not self.global_stale:
                for slot in self.slots.values():
                    self._poll(slot, now)

    def _devcontrol(self, slot: AhoySlot, now: float) -> None:
        cmd = slot.active
        if cmd is None:
            return
        radio = slot.radio
        if cmd.started_s is None:
            cmd.started_s = now
            cmd.give_up_s = now + self.give_up_s
            if cmd.kind == "limit":
                slot.ack = False
            blocked = cmd.kind == "limit" and "limit_failure" in radio.faults
            cmd.ack_at_s = None if blocked or not self._link_ok(radio) \
                else now + self.rng.uniform(self.ack_min_s, self.ack_max_s)
            if cmd.kind == "limit":
                radio.limit_status = "Pending"
            else:
                radio.power_status = "Pending"
            return
        if cmd.ack_at_s is not None and now >= cmd.ack_at_s and self._link_ok(radio):
            inv = radio.inv
            if cmd.kind == "limit":
                pct, _val, name = cmd.value
                inv.apply_limit(pct, now, persistent=name.startswith("limit_persistent"))
                slot.ack, slot.readback_due = True, True
                radio.limit_status = "Ok"
            elif cmd.kind == "restart":
                inv.restart(now)
            else:
                inv.set_enabled(cmd.kind == "on")
                if cmd.kind == "off":
                    radio.events += 1
            if cmd.kind != "limit":
                radio.power_status = "Ok"
            if cmd.entry is not None:
                cmd.entry["status"], cmd.entry["ack_t_s"] = "acked", round(now, 3)
            self._next_command(slot)
        elif now >= cmd.give_up_s:
            if cmd.entry is not None:
                cmd.entry["status"] = "lost"
            if cmd.kind == "limit":                      # only in /state: AhoyDTU shows nothing but ack false
                radio.limit_status = "Failure"
            else:
                radio.power_status = "Failure"
            self._next_command(slot)

    @staticmethod
    def _next_command(slot: AhoySlot) -> None:
        slot.active, slot.queued = slot.queued, None

    def _poll(self, slot: AhoySlot, now: float) -> None:
        radio = slot.radio
        if not slot.enabled or "stale" in radio.faults:
            return
        if not self._poll_answered(radio):
            return
        if slot.readback_due:                      # SystemConfigPara before the live data
            slot.readback_pct = round(radio.inv.limit_pct, 1)
            slot.readback_due = False
        radio.stats_t_s = now
        radio.stats = self._sample(radio.inv)
        slot.max_ac_w = max(slot.max_ac_w, radio.stats["ac_power_w"])
        slot.ts_last_success = self.ts_now()


class AhoySimulator(SimHttpServer):
    def __init__(self, plant: Plant, host: str = "127.0.0.1", port: int = 0, password: str = "",
                 refresh_s: float = 15.0, positions: Optional[list] = None, field_order: Optional[str] = None, *,
                 token_timeout_s: float = 20 * 60.0, ack_min_s: float = 0.1, ack_max_s: float = 1.0,
                 reboot_s: float = 3.0, hang_s: float = 30.0, seed: int = 1, esp_type: str = "ESP32"):
        super().__init__(host, port, hang_s=hang_s)
        self.plant = plant
        self.password = password
        self.token_timeout_s = token_timeout_s
        self.reboot_s = reboot_s
        self.esp_type = esp_type
        self.dtu = AhoyModel(plant, refresh_s=refresh_s, positions=positions, ack_min_s=ack_min_s,
                             ack_max_s=ack_max_s, seed=seed)
        self.rng = random.Random(seed)
        self.ac_order = list(range(len(AC_FIELDS)))
        self.dc_order = list(range(len(DC_FIELDS)))
        if field_order == "shuffled":
            self.rng.shuffle(self.ac_order)
            self.rng.shuffle(self.dc_order)
        elif field_order is not None:
            raise ValueError(f"field_order: None or 'shuffled', not {field_order!r}")
        self.limit_log: list[dict] = []
        self.token: Optional[str] = None
        self.token_ip: Optional[str] = None
        self.logout_at_s: Optional[float] = None
        self.auth_count = 0
        self._local = threading.local()

    # ----- public API -----
    @property
    def serials(self) -> list[str]:
        return [s.radio.inv.serial for s in sorted(self.dtu.slots.values(), key=lambda s: s.position)]

    def set_fault(self, kind: Optional[str], serial: Optional[str] = None) -> None:
        if apply_fault(self.dtu, HTTP_FAULTS, self._set_transport_fault, kind, serial):
            return
        if kind == "token_reset":
            with self.plant.lock:
                self.token = "".join(self.rng.choice(TOKEN_CHARS) for _ in range(16))
                self.token_ip = "192.0.2.99"               # another client logged in
        else:
            raise ValueError(f"unknown AhoyDTU fault {kind!r} (known: {', '.join(FAULT_KINDS)})")

    def expire_token(self) -> None:
        """As if 20 min passed without an auth or a generic GET."""
        with self.plant.lock:
            self.logout_at_s = self.plant.now_s

    def stop(self) -> None:
        super().stop()
        self.dtu.close()

    # ----- HTTP -----
    def _serve(self, h) -> None:
        self._local.ip = h.client_address[0]         # the token is bound to the caller's IPv4 address
        super()._serve(h)

    def handle(self, req: Request) -> Response:
        if self.fault == "html" or not req.path.startswith("/api"):
            return Response(200, WEB_UI, "text/html; charset=UTF-8")
        path = req.path[len("/api/"):] if req.path.startswith("/api/") else ""
        with self.plant.lock:
            self._expire()
            if req.method == "POST":
                return self._post(path, req.body)
            if req.method != "GET":
                return Response(405, b"", None)
            if path == "generic":
                return json_response(self._generic())
            if path == "system":
                return json_response({"device_name": "AHOY-DTU", "pwd_set": bool(self.password),
                                      "prot_mask": 61, "generic": self._generic()})
            if path == "index":
                return json_response(self._index())
            if path == "live":
                return json_response(self._live())
            if path == "inverter/list":
                return json_response(self._inverter_list())
            for prefix, fn in (("inverter/id/", self._inverter), ("inverter/pwrack/", self._pwrack)):
                if path.startswith(prefix):
                    slot = self.dtu.slots.get(_to_int(path[len(prefix):]))
                    return json_response(fn(slot) if slot else {"error": "inverter not found!"})
            base = f"http://{req.headers.get('host', self.host)}/api/"
            return json_response({"avail_endpoints": {k: base + k for k in (
                "inverter/list", "inverter/id/0", "inverter/alarm/0", "inverter/version/0", "generic", "index",
                "setup", "setup/networks", "setup/getip", "live", "record/info")}})

    def _expire(self) -> None:
        if self.logout_at_s is not None and self.plant.now_s >= self.logout_at_s:
            self.logout_at_s = None
            self.token = self.token_ip = None

    def _generic(self) -> dict:
        if self.logout_at_s is not None:                # resetLockTimeout
            self.logout_at_s = self.plant.now_s + self.token_timeout_s
        return {"wifi_rssi": -61, "ts_uptime": int(self.dtu.uptime_s()), "ts_now": self.dtu.ts_now(),
                "version": VERSION, "modules": "MDH-de", "build": "c4fe30f", "env": "esp32-wroom32-de",
                "host": "AHOY-DTU", "menu_prot": bool(self.password), "menu_mask": 61,
                "menu_protEn": bool(self.password), "cst_lnk": "", "cst_lnk_txt": "", "region": 0, "timezone": 1,
                "esp_type": self.esp_type}

    def _ordered(self):
        return sorted(self.dtu.slots.values(), key=lambda s: s.position)

    def _index(self) -> dict:
        wall = self.dtu.ts_now()
        inverters = [{"enabled": s.enabled, "id": s.position, "name": s.radio.inv.name,
                      "cur_pwr": round(s.radio.stats["ac_power_w"], 3) if s.radio.stats else 0,
                      "is_avail": self.dtu.status(s) in (1, 2, 3), "is_producing": self.dtu.producing(s),
                      "ts_last_success": s.ts_last_success} for s in self._ordered()]
        return {"generic": self._generic(), "ts_now": wall, "ts_sunrise": wall - 6 * 3600,
                "ts_sunset": wall + 6 * 3600, "ts_offsSr": 0, "ts_offsSs": 0, "inverter": inverters,
                "disNightComm": False, "warnings": []}

    def _live(self) -> dict:
        iv = [False] * 16
        for slot in self.dtu.slots.values():
            iv[slot.position] = slot.enabled
        return {"generic": self._generic(), "refresh": int(self.dtu.refresh_s),
                "max_total_pwr": sum(self.dtu.max_pwr(s) for s in self.dtu.slots.values()),
                "ch0_fld_units": [AC_FIELDS[i][1] for i in self.ac_order],
                "ch0_fld_names": [AC_FIELDS[i][0] for i in self.ac_order],
                "fld_units": [DC_FIELDS[i][1] for i in self.dc_order],
                "fld_names": [DC_FIELDS[i][0] for i in self.dc_order], "iv": iv}

    def _inverter_list(self) -> dict:
        out = []
        for s in self._ordered():
            n = s.radio.inv.spec.n_inputs
            out.append({"enabled": s.enabled, "id": s.position, "name": s.radio.inv.name,
                        "serial": s.radio.inv.serial.upper(), "channels": n, "freq": 12, "disnightcom": False,
                        "pa": 1, "ch_yield_cor": [0] * n, "ch_name": [f"Battery {i + 1}" for i in range(n)],
                        "ch_max_pwr": [0] * n})
        return {"inverter": out, "interval": str(int(self.dtu.refresh_s)), "max_num_inverters": 16,
                "rstMid": False, "rstNotAvail": False, "rstComStop": False, "rstComStart": False,
                "strtWthtTm": False, "rdGrid": False, "rstMaxMid": False}

    def _inverter(self, slot: AhoySlot) -> dict:
        radio = slot.radio
        inv = radio.inv
        s = radio.stats
        n = inv.spec.n_inputs
        if s is None:
            ac = [0.0] * len(AC_FIELDS)
            dcs = [[0.0] * len(DC_FIELDS) for _ in range(n)]
        else:
            ac = [s["ac_voltage_v"], s["ac_current_a"], s["ac_power_w"], s["frequency_hz"], s["power_factor"],
                  s["temperature_c"], s["yield_total_kwh"], s["yield_day_wh"], s["dc_power_w"], s["efficiency_pct"],
                  s["reactive_power_var"], slot.max_ac_w, s["temperature_c"]]
            dcs = [[ch["voltage_v"], ch["current_a"], ch["power_w"], ch["yield_day_wh"], ch["yield_total_kwh"],
                    0.0, ch["power_w"]] for ch in s["inputs"]]
        channels = [[_r3(ac[i]) for i in self.ac_order]] + [[_r3(dc[i]) for i in self.dc_order] for dc in dcs]
        return {"id": slot.position, "enabled": slot.enabled, "name": inv.name, "serial": inv.serial.upper(),
                "version": "10018" if radio.devinfo_known else "0", "power_limit_read": round(slot.readback_pct, 1),
                "power_limit_ack": slot.ack, "max_pwr": self.dtu.max_pwr(slot),
                "ts_last_success": slot.ts_last_success, "generation": 2 if inv.spec.hms else 1,
                "status": self.dtu.status(slot), "alarm_cnt": radio.events, "rssi": -62 if radio.reachable else -127,
                "ts_max_ac_pwr": 0, "ts_max_temp": 0, "ch": channels,
                "ch_name": ["AC"] + [f"Battery {i + 1}" for i in range(n)], "ch_max_pwr": [None] + [0] * n}

    @staticmethod
    def _pwrack(slot: AhoySlot) -> dict:
        return {"ack": slot.ack}

    # ----- commands -----
    def _post(self, path: str, raw: bytes) -> Response:
        try:
            doc = json.loads(raw.decode("utf-8")) if len(raw) <= 1000 else None
        except (UnicodeDecodeError, ValueError):
            doc = None
        if not isinstance(doc, dict):
            return json_response({"error": "deserialization failed"})
        out = {"success": True}
        if path == "ctrl":
            out["success"] = self._ctrl(doc, out)
        elif path == "setup":
            out["success"] = self._setup(doc, out)
        else:
            out.update(success=False, error=f"Path not found: {path}")
        return json_response(out)

    def _protected(self, doc: dict, out: dict) -> bool:
        if not self.password:
            return False
        token = doc.get("token")
        if isinstance(token, str) and self.token is not None and token[:16] == self.token \
                and self._local.ip == self.token_ip:
            return False
        out["error"] = "ERR_PROTECTED"
        return True

    def _ctrl(self, doc: dict, out: dict) -> bool:
        if "auth" in doc:
            if str(doc["auth"]) != self.password:
                out["error"] = "ERR_AUTH"
                return False
            self.token = "".join(self.rng.choice(TOKEN_CHARS) for _ in range(16))
            self.token_ip = self._local.ip
            self.logout_at_s = self.plant.now_s + self.token_timeout_s
            self.auth_count += 1
            out["token"] = doc["token"] = self.token
            if "cmd" not in doc:
                return True
        if self._protected(doc, out):
            return False
        slot = self.dtu.slots.get(_json_int(doc.get("id")))
        if slot is None:
            out["error"] = "ERR_INDEX"
            return False
        out["id"] = doc.get("id")
        cmd = doc.get("cmd")
        cmd = cmd if isinstance(cmd, str) else ""
        if cmd == "power":
            accepted = self.dtu.submit(slot, DevControl("on" if doc.get("val") == 1 else "off"))
        elif cmd == "restart":
            accepted = self.dtu.submit(slot, DevControl("restart"))
        elif cmd.startswith("limit_"):
            accepted = self._limit(slot, cmd, doc.get("val"))
        elif cmd == "restart_ahoy":
            threading.Timer(0.2, self._do_reboot).start()
            return True
        else:
            out["error"] = "ERR_UNKNOWN_CMD"
            return False
        if not accepted:
            out["error"] = "ERR_LIMIT_NOT_ACCEPT"
        return accepted

    def _limit(self, slot: AhoySlot, cmd: str, val) -> bool:
        """uint16(val × 10), no range check; a relative value above 100 % or a wrapped negative reaches the
        inverter as it is (the plant clamps what an inverter can do to 0 … 100 %)."""
        number = float(val) if isinstance(val, (int, float)) and not isinstance(val, bool) \
            and math.isfinite(float(val)) else 0.0
        stored = (int(number * 10.0) & 0xFFFF) / 10.0
        rating = slot.radio.inv.max_power_w
        pct = stored if cmd.endswith("relative") else stored * 100.0 / rating
        entry = {"t_s": round(self.plant.now_s, 3), "serial": slot.radio.inv.serial, "position": slot.position,
                 "cmd": cmd, "value": val, "pct": round(min(100.0, pct), 3),
                 "w": round(min(100.0, pct) * rating / 100.0, 2), "status": "sent"}
        if not self.dtu.submit(slot, DevControl("limit", (min(100.0, pct), stored, cmd), entry)):
            entry["status"] = "refused"
            self._log(entry)
            return False
        self._log(entry)
        return True

    def _log(self, entry: dict) -> None:
        self.limit_log.append(entry)
        if len(self.limit_log) > 10000:
            del self.limit_log[:5000]

    def _setup(self, doc: dict, out: dict) -> bool:
        if self._protected(doc, out):
            return False
        if doc.get("cmd") in ("set_time", "sync_ntp", "serial_utc_offset"):
            return True
        out["error"] = "ERR_UNKNOWN_CMD"
        return False

    def _do_reboot(self) -> None:
        if self.fault is not None or self._stopped:
            return
        self._set_transport_fault("refused")
        with self.plant.lock:
            self.dtu.reboot()
            self.token = self.token_ip = self.logout_at_s = None
        timer = threading.Timer(self.reboot_s, self._end_reboot)
        timer.daemon = True
        timer.start()

    def _end_reboot(self) -> None:
        if self.fault == "refused" and not self._stopped:
            self._set_transport_fault(None)


def _r3(value: float) -> float:
    return round(float(value), 3)


def _to_int(text: str) -> int:
    """Arduino String.toInt(): the leading integer, 0 when there is none."""
    match = re.match(r"\s*([+-]?\d+)", text)
    return int(match.group(1)) if match else 0


def _json_int(value) -> int:
    """ArduinoJson's conversion of a JSON value to an integer id (null, text → 0)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)) and math.isfinite(value):
        return int(value)
    return 0
