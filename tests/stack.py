"""The whole product for end-to-end tests: a private D-Bus, `python -m sim`, and supervisord running the four
services from the repository's own supervisord.conf. Everything is stopped by PID."""
from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import time
from typing import Optional

import requests

from common.bus import Subscriber
from common.dbus_private import PrivateDbus
from tests.support import PYTHON, ROOT, Processes, wait_for

SUPERVISORD = os.path.join(os.path.dirname(PYTHON), "supervisord")
SUPERVISORCTL = os.path.join(os.path.dirname(PYTHON), "supervisorctl")
SERVICES = ("dtu_poller", "shelly_poller", "controller", "venus_publisher")


def _ports_free(base: int) -> bool:
    for offset in (0, 1, 2, 3, 10):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", base + offset))
            except OSError:
                return False
    return True


def pick_port_base() -> int:
    for _ in range(50):
        base = random.randrange(20000, 40000, 20)
        if _ports_free(base):
            return base
    raise RuntimeError("no free port range")


def stack_config(port_base: int, rundir: str, state_dir: str, extra: Optional[dict] = None) -> str:
    sections = {
        "opendtu": {"host": f"127.0.0.1:{port_base}", "password": "openDTU42", "poll_interval": 1,
                    "setpoint_timeout_s": 10},
        "grid_meter": {"host": f"127.0.0.1:{port_base + 1}", "poll_interval": 1},
        "balcony_meter": {"host": f"127.0.0.1:{port_base + 2}", "poll_interval": 2},
        "relay": {"keepalive_url": f"http://127.0.0.1:{port_base + 3}/relay/0?turn=on&timer=900",
                  "switchoff_url": f"http://127.0.0.1:{port_base + 3}/relay/0?turn=off", "interval": 30},
        "control": {"state_dir": state_dir},
        "venus": {},
        "bus": {"rundir": rundir, "log_level": "INFO"},
    }
    for section, keys in (extra or {}).items():
        if keys is None:
            sections.pop(section, None)
        else:
            sections.setdefault(section, {}).update(keys)
    lines = []
    for section, keys in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {v}" for k, v in keys.items()]
        lines.append("")
    return "\n".join(lines)


class Stack:
    def __init__(self, folder: str, rundir: str, scenario: str = "quiet", sim_args=(), config_extra=None):
        self.folder, self.rundir = folder, rundir
        self.procs = Processes(folder)
        self.port_base = pick_port_base()
        self.scenario, self.sim_args = scenario, list(sim_args)
        self.config_path = os.path.join(folder, "config.ini")
        with open(self.config_path, "w") as handle:
            handle.write(stack_config(self.port_base, rundir, folder, config_extra))
        self.dbus = PrivateDbus()
        self.sim = None
        self.supervisord = None

    @property
    def control_url(self) -> str:
        return f"http://127.0.0.1:{self.port_base + 10}"

    def env(self) -> dict:
        return {"DBUS_SYSTEM_BUS_ADDRESS": self.dbus.address, "DBUS_OPENDTU_CONFIG": self.config_path,
                "DBUS_OPENDTU_PYTHON": PYTHON}

    def start(self) -> "Stack":
        self.dbus.start()
        self.sim = self.procs.python("sim", "sim", "--scenario", self.scenario, "--port-base", str(self.port_base),
                                     *self.sim_args, env=self.env())
        wait_for(self._sim_up, 30, 0.1, "simulators up")
        self.supervisord = self.procs.start("supervisord", [SUPERVISORD, "-n", "-c",
                                                            os.path.join(ROOT, "supervisord.conf")], env=self.env())
        wait_for(lambda: all(state == "RUNNING" for state, _ in self.status().values()), 60, 0.2,
                 "all services RUNNING")
        return self

    def _sim_up(self):
        try:
            return requests.get(self.control_url + "/state", timeout=1).ok
        except requests.RequestException:
            return False

    def stop(self) -> None:
        if self.supervisord is not None:
            self.procs.stop(self.supervisord, signal.SIGTERM, timeout_s=30)
        self.procs.stop_all()
        self.dbus.stop()

    # --- simulators
    def sim_state(self) -> dict:
        return requests.get(self.control_url + "/state", timeout=5).json()

    def sim_post(self, path: str, body: dict) -> dict:
        answer = requests.post(self.control_url + path, json=body, timeout=5)
        answer.raise_for_status()
        return answer.json() if answer.content else {}

    def set_load(self, load_w: Optional[float]) -> None:
        self.sim_post("/load", {"load_w": load_w})

    def fault(self, device: str, kind: Optional[str], serial: Optional[str] = None) -> None:
        self.sim_post("/fault", {"device": device, "kind": kind, "serial": serial})

    # --- supervisord
    def supervisorctl(self, *args: str) -> str:
        out = subprocess.run([SUPERVISORCTL, "-c", os.path.join(ROOT, "supervisord.conf"), *args],
                             capture_output=True, text=True, timeout=30, env={**os.environ, **self.env()})
        return out.stdout

    def status(self) -> dict[str, tuple[str, Optional[int]]]:
        """service -> (state, pid)"""
        out = {}
        for line in self.supervisorctl("status").splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] in SERVICES:
                pid = None
                if "pid" in parts:
                    pid = int(parts[parts.index("pid") + 1].rstrip(","))
                out[parts[0]] = (parts[1], pid)
        return out

    def subscriber(self, topics=("",)) -> Subscriber:
        return Subscriber(self.rundir, topics=list(topics))

    def log(self, service: str) -> str:
        path = os.path.join(ROOT, "log", f"{service}.log")
        with open(path, errors="replace") as handle:
            return handle.read()
