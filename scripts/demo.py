"""`make demo`: a private D-Bus, the simulators, the battery service and the four services under supervisord,
with a live status line once a second. Ctrl-C (or --seconds) stops everything by PID.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time

from common import messages as m
from common.bus import Subscriber
from common.dbus_private import PrivateDbus

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV_BIN = os.path.join(ROOT, ".venv", "bin")
DEMO_DIR = "/tmp/dbus-opendtu-demo"


def demo_config(port_base: int, rundir: str) -> str:
    return f"""; written by scripts/demo.py for the simulators
[opendtu]
host = 127.0.0.1:{port_base}
password = openDTU42
poll_interval = 1

[grid_meter]
host = 127.0.0.1:{port_base + 1}
poll_interval = 1

[balcony_meter]
host = 127.0.0.1:{port_base + 2}
poll_interval = 2

[relay]
keepalive_url = http://127.0.0.1:{port_base + 3}/relay/0?turn=on&timer=900
switchoff_url = http://127.0.0.1:{port_base + 3}/relay/0?turn=off
interval = 60

[control]
state_dir = {DEMO_DIR}

[venus]

[bus]
rundir = {rundir}
log_level = INFO
"""


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


def stop_proc(proc: subprocess.Popen, name: str, timeout_s: float = 15) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        print(f"demo: {name} (pid {proc.pid}) did not stop, killing it", file=sys.stderr)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
    except ProcessLookupError:
        pass


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0, help="stop after this many seconds (0: run until Ctrl-C)")
    parser.add_argument("--port-base", type=int, default=18080)
    parser.add_argument("--scenario", default="demo")
    args = parser.parse_args(argv)

    shutil.rmtree(DEMO_DIR, ignore_errors=True)
    os.makedirs(DEMO_DIR, mode=0o700)
    rundir = os.path.join(DEMO_DIR, "bus")
    config_path = os.path.join(DEMO_DIR, "config.ini")
    with open(config_path, "w") as handle:
        handle.write(demo_config(args.port_base, rundir))

    stopping = False

    def _stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)

    procs: list[tuple[str, subprocess.Popen]] = []
    dbus_dir = os.path.join(DEMO_DIR, "dbus")
    os.makedirs(dbus_dir)
    dbus = PrivateDbus(folder=dbus_dir, set_env=False)
    env = {**os.environ, "PYTHONPATH": ROOT, "PYTHONUNBUFFERED": "1", "DBUS_OPENDTU_CONFIG": config_path}
    try:
        dbus.start()
        env["DBUS_SYSTEM_BUS_ADDRESS"] = dbus.address
        env.pop("DBUS_SESSION_BUS_ADDRESS", None)
        print(f"demo: private D-Bus at {dbus.address} (pid {dbus.pid})")
        sim_log = open(os.path.join(DEMO_DIR, "sim.log"), "wb")
        sim = subprocess.Popen([sys.executable, "-m", "sim", "--scenario", args.scenario,
                                "--port-base", str(args.port_base)], cwd=ROOT, env=env, stdout=sim_log,
                               stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(("simulators", sim))
        print(f"demo: simulators (pid {sim.pid}), ports {args.port_base}..{args.port_base + 10}, "
              f"log {DEMO_DIR}/sim.log")
        sup = subprocess.Popen([os.path.join(VENV_BIN, "supervisord"), "-n", "-c", os.path.join(ROOT, "supervisord.conf")],
                               cwd=ROOT, env=env, start_new_session=True)
        procs.append(("supervisord", sup))
        print(f"demo: supervisord (pid {sup.pid}) with config {config_path}; logs in {ROOT}/log/")
        print(f"demo: tap the bus:  .venv/bin/python -m common.busmon --rundir {rundir}")
        print(f"demo: D-Bus:        DBUS_SYSTEM_BUS_ADDRESS={dbus.address} dbus-send --system --print-reply "
              f"--dest=com.victronenergy.acload.http_59 /MaxFeedIn com.victronenergy.BusItem.SetValue variant:int32:600")
        status = StatusLine()
        sub = Subscriber(rundir, topics=[m.METER_GRID, m.CTRL_STATUS, m.VENUS_BATTERY, m.RELAY_STATE, m.DTU_INVERTER])
        start = time.monotonic()
        next_line = start + 1
        while not stopping:
            if args.seconds and time.monotonic() - start >= args.seconds:
                break
            for name, proc in procs:
                if proc.poll() is not None:
                    print(f"\ndemo: {name} exited with code {proc.returncode}; stopping", file=sys.stderr)
                    stopping = True
            msg = sub.recv(timeout_s=0.1)
            if msg is not None:
                status.take(msg)
            if time.monotonic() >= next_line:
                next_line += 1
                print(f"{time.monotonic() - start:6.0f}s {status.render()}", flush=True)
        sub.close()
    finally:
        print("\ndemo: stopping")
        for name, proc in reversed(procs):
            stop_proc(proc, name)
            print(f"demo: stopped {name} (pid {proc.pid})")
        dbus.stop()
        print("demo: stopped D-Bus")
        shutil.rmtree(rundir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
