"""`make demo`: a private D-Bus, the simulators, the battery service and the four services under supervisord,
with a live status line once a second. Ctrl-C (or --seconds) stops everything by PID.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import time

from common import messages as m
from scripts.stack import Stack

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_DIR = "/tmp/dbus-opendtu-demo"


class StatusLine:
    """Keeps the latest of each topic and renders one line."""

    def __init__(self):
        self.grid = None
        self.ctrl = None
        self.battery = None
        self.relay = None
        self.inverters: dict[str, dict] = {}

    def take(self, msg) -> None:
        if msg.topic == m.METER_GRID:
            self.grid = msg.body
        elif msg.topic == m.CTRL_STATUS:
            self.ctrl = msg.body
        elif msg.topic == m.VENUS_BATTERY:
            self.battery = msg.body
        elif msg.topic == m.RELAY_STATE:
            self.relay = msg.body
        elif msg.topic == m.DTU_INVERTER:
            self.inverters[msg.body["serial"]] = msg.body

    def render(self) -> str:
        def num(value, fmt="{:.0f}"):
            return "--" if value is None else fmt.format(value)

        grid = num(self.grid["power_w"]) if self.grid else "--"
        target = num(self.ctrl["target_w"]) if self.ctrl else "--"
        budget = num(self.ctrl["budget_w"]) if self.ctrl else "--"
        invs = []
        for serial, inv in sorted(self.inverters.items(), key=lambda kv: kv[1]["index"]):
            invs.append(f"{inv['name'][:10]} {num(inv['limit_pct'])}%/{num(inv['ac_power_w'])}W")
        soc = num(self.battery["soc_pct"]) if self.battery else "--"
        relay = "--" if not self.relay else ("on" if self.relay.get("on") else "off")
        reason = ""
        if self.ctrl and self.ctrl.get("reasons"):
            reason = self.ctrl["reasons"][0][:60]
        return (f"grid {grid:>5} W  target {target:>4} W  budget {budget:>4} W | " + " | ".join(invs)
                + f" | SOC {soc}%  relay {relay} | {reason}")


STARTUP_REPORT_S = 15      # the demo says once how much was exported before control took over


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0, help="stop after this many seconds (0: run until Ctrl-C)")
    parser.add_argument("--port-base", type=int, default=18080)
    parser.add_argument("--scenario", default="demo")
    parser.add_argument("--grid", choices=("shelly", "dbus"), default="shelly",
                        help="grid meter: a simulated Shelly, or a simulated GX grid meter on D-Bus ([grid_meter] "
                             "source = dbus)")
    parser.add_argument("--dtu", choices=("opendtu", "ahoy"), default="opendtu",
                        help="gateway: a simulated OpenDTU, or a simulated AhoyDTU (15 s refresh; the config says "
                             "type = auto, so dtu_poller finds out which it is)")
    args = parser.parse_args(argv)

    shutil.rmtree(DEMO_DIR, ignore_errors=True)
    os.makedirs(DEMO_DIR, mode=0o700)
    rundir = os.path.join(DEMO_DIR, "bus")
    sim_args, config_extra = ["--grid", args.grid, "--dtu", args.dtu], {"opendtu": {"type": "auto"}}
    if args.grid == "dbus":
        config_extra["grid_meter"] = {"source": "dbus", "host": ""}
    stack = Stack(DEMO_DIR, rundir, scenario=args.scenario, port_base=args.port_base,
                  dbus_folder=os.path.join(DEMO_DIR, "dbus"), sim_args=sim_args, config_extra=config_extra)

    stopping = False

    def _stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        print(f"demo: starting a private D-Bus, the simulators (ports {args.port_base}..{args.port_base + 10}) "
              f"and supervisord; logs in {DEMO_DIR}/")
        stack.start()
        print(f"demo: private D-Bus at {stack.dbus.address} (pid {stack.dbus.pid}), simulators pid {stack.sim.pid}, "
              f"supervisord pid {stack.supervisord.pid}, config {stack.config_path}")
        print(f"demo: tap the bus:  .venv/bin/python -m common.busmon --rundir {rundir}")
        print(f"demo: D-Bus:        DBUS_SYSTEM_BUS_ADDRESS={stack.dbus.address} dbus-send --system --print-reply "
              "--dest=com.victronenergy.acload.http_59 /MaxFeedIn com.victronenergy.BusItem.SetValue variant:int32:600")
        status = StatusLine()
        sub = stack.subscriber([m.METER_GRID, m.CTRL_STATUS, m.VENUS_BATTERY, m.RELAY_STATE, m.DTU_INVERTER])
        start = time.monotonic()
        next_line = start + 1
        startup_reported = False
        while not stopping:
            if args.seconds and time.monotonic() - start >= args.seconds:
                break
            for proc in (stack.sim, stack.supervisord):
                if proc.poll() is not None:
                    print(f"\ndemo: {proc.name} exited with code {proc.returncode}; stopping. Its last lines:\n"
                          + stack.tail(proc.name), file=sys.stderr)
                    stopping = True
            msg = sub.recv(timeout_s=0.1)
            if msg is not None:
                status.take(msg)
            if time.monotonic() >= next_line:
                next_line += 1
                print(f"{time.monotonic() - start:6.0f}s {status.render()}", flush=True)
                if not startup_reported and time.monotonic() - start >= STARTUP_REPORT_S:
                    startup_reported = True
                    # the simulated inverters start at their persistent limit (100 %) until the first command
                    exported = stack.sim_state()["energy_wh"]["grid_export"]
                    print(f"demo: start-up export: {exported:.2f} Wh since the simulators started", flush=True)
        sub.close()
    except TimeoutError as exc:
        print(f"demo: {exc}; see the logs in {DEMO_DIR}/", file=sys.stderr)
        for proc in stack.procs.procs:
            if proc.poll() is not None:
                print(f"demo: {proc.name} exited with code {proc.returncode}:\n{stack.tail(proc.name)}", file=sys.stderr)
        return 1
    finally:
        print("\ndemo: stopping every process by PID")
        stack.stop()
        shutil.rmtree(rundir, ignore_errors=True)
        print("demo: stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
