"""`python -m sim`: every simulator on 127.0.0.1, driven by one plant in real time, plus a control endpoint.

Ports (from --port-base, default 18080): OpenDTU +0, grid Shelly +1, balcony Shelly +2, relay Shelly +3,
control +10. The battery is published on D-Bus (com.victronenergy.battery.sim) when DBUS_SYSTEM_BUS_ADDRESS is set.

Control endpoint (JSON, loopback only):
  GET  /state                                  plant state, limit log, faults, ports
  POST /fault   {"device": "opendtu"|"grid"|"balcony"|"relay"|"battery", "kind": str|null, "serial": str|null}
  POST /load    {"load_w": number|null}        null: back to the scenario's trace
  POST /balcony {"balcony_w": number|null}
  POST /battery {"soc_pct"?: number, "dcl_a"?: number|null, "present"?: bool}
  POST /relay   {"on": bool, "timer_s"?: number}
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from typing import Optional

from sim import shelly as shelly_mod
from sim.httpbase import Request, Response, SimHttpServer, json_response
from sim.opendtu import FAULT_KINDS as DTU_FAULTS
from sim.opendtu import OpenDtuSimulator
from sim.plant import Plant, RealtimeRunner
from sim.shelly import ShellySimulator

log = logging.getLogger("sim")

SCENARIOS = {
    "demo": "lively household load (kettle, hob pulses, microwave, washer heater), balcony solar with clouds",
    "quiet": "steady 200 W load with 2 W noise, no balcony system",
    "step": "150 W / 650 W load steps every 60 s, no balcony system",
    "day": "a generated 24 h household day starting at 06:00, balcony solar",
}


class ControlServer(SimHttpServer):
    def __init__(self, app: "SimApp", host: str, port: int):
        super().__init__(host, port)
        self.app = app

    def handle(self, req: Request) -> Response:
        try:
            body = json.loads(req.body) if req.body else {}
        except ValueError:
            return json_response({"error": "body is not JSON"}, 400)
        if req.method == "POST" and not isinstance(body, dict):
            return json_response({"error": "body must be a JSON object"}, 400)
        try:
            if (req.method, req.path) == ("GET", "/state"):
                return json_response(self.app.state())
            if (req.method, req.path) == ("POST", "/fault"):
                self.app.set_fault(body.get("device"), body.get("kind"), body.get("serial"))
            elif (req.method, req.path) == ("POST", "/load"):
                self.app.plant.set_load_override(_num_or_none(body, "load_w"))
            elif (req.method, req.path) == ("POST", "/balcony"):
                self.app.plant.set_balcony_override(_num_or_none(body, "balcony_w"))
            elif (req.method, req.path) == ("POST", "/battery"):
                present = body.get("present")
                if present is not None and not isinstance(present, bool):
                    raise ValueError("present must be true or false")
                self.app.plant.set_battery(soc_pct=_num_or_none(body, "soc_pct"),
                                           dcl_a=_num_or_none(body, "dcl_a"), present=present,
                                           clear_dcl="dcl_a" in body and body["dcl_a"] is None)
            elif (req.method, req.path) == ("POST", "/relay"):
                if not isinstance(body.get("on"), bool):
                    raise ValueError("on must be true or false")
                self.app.plant.set_relay(body["on"], _num_or_none(body, "timer_s"), source="control")
            else:
                return json_response({"error": f"no such endpoint {req.method} {req.path}"}, 404)
        except (ValueError, KeyError) as exc:
            return json_response({"error": str(exc)}, 400)
        log.info("control %s %s", req.path, json.dumps(body))
        return json_response({"ok": True})


def _num_or_none(body: dict, key: str) -> Optional[float]:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise ValueError(f"{key} must be a number or null")
    return float(value)


class SimApp:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.plant = Plant.demo(n_inverters=args.inverters, seed=args.seed, scenario=args.scenario,
                                load_csv=args.trace)
        if args.relay_initially == "off":
            self.plant.set_relay(False, source="init")
        self.runner = RealtimeRunner(self.plant)
        base = args.port_base
        if args.dtu == "ahoy":                  # served under the device name "opendtu" like the OpenDTU
            from sim.ahoy import AhoySimulator
            self.dtu = AhoySimulator(self.plant, port=base, password=args.dtu_password, refresh_s=args.refresh,
                                     seed=args.seed)
        else:
            self.dtu = OpenDtuSimulator(self.plant, port=base, firmware=args.firmware, password=args.dtu_password,
                                        poll_interval_s=args.poll_interval, failure_timeout_s=args.failure_timeout,
                                        limit_readback_s=args.limit_readback, seed=args.seed,
                                        retry_after_s=args.retry_after)
        self.devices: dict[str, object] = {"opendtu": self.dtu}
        if args.grid == "dbus":                 # a GX grid meter on D-Bus (needs DBUS_SYSTEM_BUS_ADDRESS)
            from sim.grid_dbus import GridMeterDbus
            self.devices["grid"] = GridMeterDbus.from_plant(self.plant, int_values=True, seed=args.seed)
        else:
            self.devices["grid"] = ShellySimulator(self.plant, args.grid_model, "grid", port=base + 1,
                                                   password=args.grid_password, seed=args.seed)
        if args.balcony:
            self.devices["balcony"] = ShellySimulator(self.plant, args.balcony_model, "balcony", port=base + 2,
                                                      password=args.balcony_password, seed=args.seed)
        self.devices["relay"] = ShellySimulator(self.plant, args.relay_model, "relay", port=base + 3,
                                                password=args.relay_password, seed=args.seed)
        self.control = ControlServer(self, "127.0.0.1", base + 10)
        self.battery = None
        self.localsettings = None     # stand-ins of com.victronenergy.settings and .platform (with the battery)
        self.platform = None

    def start(self) -> None:
        self.runner.start()
        for device in self.devices.values():
            device.start()
        if os.environ.get("DBUS_SYSTEM_BUS_ADDRESS") and not self.args.no_dbus:
            from sim.battery_dbus import BatteryDbus
            self.battery = BatteryDbus(self.plant, name=self.args.battery_name,
                                       device_instance=self.args.battery_instance).start()
            self.devices["battery"] = self.battery
            if not self.args.no_venus_services:
                from sim.venus_services import LocalSettings, Platform
                self.localsettings = LocalSettings().start()
                self.platform = Platform().start()
        self.control.start()

    def stop(self) -> None:
        self.control.stop()
        for name, device in self.devices.items():
            try:
                device.stop()
            except Exception:
                log.exception("stopping %s failed", name)
        for standin in (self.platform, self.localsettings):
            if standin is not None:
                standin.stop()
        self.runner.stop()

    def ports_line(self) -> str:
        parts = [f"{name}={dev.url}" for name, dev in self.devices.items() if name != "battery"]
        parts.append(f"control={self.control.url}")
        parts.append(f"battery={self.battery.name if self.battery else 'off'}")
        parts.append(f"serials={','.join(inv.serial for inv in self.plant.inverters)}")
        return f"sim: scenario={self.args.scenario} " + " ".join(parts)

    def set_fault(self, device, kind, serial) -> None:
        if device == "battery":                 # works with or without the D-Bus service
            if kind not in (None, "absent") or serial is not None:
                raise ValueError(f"unknown battery fault {kind!r} (known: absent)")
            self.plant.set_battery(present=kind is None)
            return
        if device not in self.devices:
            raise ValueError(f"unknown device {device!r} (running: {', '.join(self.devices)})")
        if kind is not None and not isinstance(kind, str):
            raise ValueError("kind must be a string or null")
        if serial is not None and (device != "opendtu" or serial.lower() not in self.plant.by_serial):
            raise ValueError(f"unknown serial {serial!r} for {device}")
        self.devices[device].set_fault(kind, serial)

    def state(self) -> dict:
        state = self.plant.state()
        with self.plant.lock:
            state["limit_log"] = list(self.dtu.limit_log[-200:])
            state["dtu"] = {r.inv.serial: {"limit_status": r.limit_status, "power_status": r.power_status,
                                           "reachable": r.reachable, "data_age_s": round(self.dtu.dtu.data_age_s(r), 2),
                                           "faults": sorted(r.faults)} for r in self.dtu.dtu.radios}
        state["faults"] = {name: getattr(dev, "fault", None) for name, dev in self.devices.items()}
        state["faults"]["battery"] = None if self.plant.battery.present else "absent"
        state["faults"]["opendtu_stale"] = self.dtu.dtu.global_stale
        state["ports"] = {name: dev.port for name, dev in self.devices.items() if name != "battery"}
        state["ports"]["control"] = self.control.port
        state["scenario"] = self.args.scenario
        if self.platform is not None:
            state["notifications"] = [list(n) for n in self.platform.notifications()[-50:]]
        return state


def build_parser() -> argparse.ArgumentParser:
    epilog = ("ports: opendtu = base+0, grid Shelly = base+1, balcony Shelly = base+2, relay Shelly = base+3, "
              "control = base+10 (all on 127.0.0.1).\nscenarios:\n" +
              "\n".join(f"  {k:6} {v}" for k, v in SCENARIOS.items()) +
              f"\nOpenDTU faults: {', '.join(DTU_FAULTS)}\nShelly faults: {', '.join(shelly_mod.FAULT_KINDS)}"
              "\nbattery faults: absent\n\nControl endpoint" + __doc__.split("Control endpoint", 1)[1])
    parser = argparse.ArgumentParser(prog="python -m sim", description="OpenDTU, Shelly and battery simulators",
                                     epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="demo")
    parser.add_argument("--trace", help="CSV t_s,load_w[,balcony_w] at 1 Hz (replaces the scenario's load)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--port-base", type=int, default=18080)
    parser.add_argument("--inverters", type=int, default=2, help="number of inverters (1-8)")
    parser.add_argument("--dtu", choices=("opendtu", "ahoy"), default="opendtu", help="which DTU to simulate")
    parser.add_argument("--refresh", type=float, default=15.0, help="AhoyDTU: s between polls of all inverters")
    parser.add_argument("--firmware", default="v25.9.11", help="OpenDTU git_hash, e.g. v24.1.26 (legacy live data)")
    parser.add_argument("--poll-interval", type=float, default=1.0, help="OpenDTU radio poll interval, s")
    parser.add_argument("--failure-timeout", type=float, default=10.0, help="s until an unacked limit is Failure")
    parser.add_argument("--retry-after", type=int, default=60, help="Retry-After (s) of the OpenDTU's 429 answers")
    parser.add_argument("--limit-readback", type=float, default=30.0,
                        help="s after DTU boot until limit_relative is read back (0 before)")
    parser.add_argument("--grid", choices=("shelly", "dbus"), default="shelly",
                        help="grid meter: a Shelly on base+1, or com.victronenergy.grid.sim_gridmeter on D-Bus")
    parser.add_argument("--grid-model", choices=sorted(shelly_mod.MODELS), default="shem")
    parser.add_argument("--balcony-model", choices=sorted(shelly_mod.MODELS), default="shem")
    parser.add_argument("--relay-model", choices=sorted(k for k, m in shelly_mod.MODELS.items() if m.relay),
                        default="shsw1")
    parser.add_argument("--no-balcony", dest="balcony", action="store_false", default=True,
                        help="no balcony Shelly (by default it runs; it reads 0 W in scenarios without solar)")
    parser.add_argument("--relay-initially", choices=("on", "off"), default="on")
    parser.add_argument("--dtu-password", default="openDTU42")
    parser.add_argument("--grid-password", default=None, help="none: no auth")
    parser.add_argument("--balcony-password", default=None)
    parser.add_argument("--relay-password", default=None)
    parser.add_argument("--battery-name", default="com.victronenergy.battery.sim")
    parser.add_argument("--battery-instance", type=int, default=512)
    parser.add_argument("--no-dbus", action="store_true", help="no battery on D-Bus even if a bus is set")
    parser.add_argument("--no-venus-services", action="store_true",
                        help="no stand-ins of localsettings and venus-platform beside the battery on D-Bus")
    parser.add_argument("--log-level", default="INFO")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if not 1 <= args.inverters <= 8:
        print("sim: --inverters must be 1..8", file=sys.stderr)
        return 2
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stdout,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        app = SimApp(args)
        app.start()
    except (OSError, ValueError) as exc:
        print(f"sim: cannot start: {exc}", file=sys.stderr)
        return 1
    print(app.ports_line(), flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        app.stop()
        print("sim: stopped", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
