"""The whole product against the simulators: a private D-Bus, `python -m sim` (with the battery and stand-ins of
localsettings and venus-platform on D-Bus), and supervisord running the four services from the repository's own
supervisord.conf. Everything is stopped by PID.
Used by `make demo`, the end-to-end tests and `python -m bench.footprint`."""
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
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = sys.executable

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


def local_supervisor_conf(folder: str) -> str:
    """The repository's supervisord.conf with its socket, pid file and logs moved into `folder`, so that several
    stacks (tests, demo, benchmark) can run at once. The programs are the file's own, unchanged."""
    with open(os.path.join(ROOT, "supervisord.conf")) as handle:
        text = handle.read()
    text = text.replace("%(here)s/log/supervisord.log", f"{folder}/supervisord-daemon.log")
    text = text.replace("%(here)s/run/", f"{folder}/").replace("%(here)s/log/", f"{folder}/") \
        .replace("%(here)s/log", folder).replace("%(here)s", ROOT)
    path = os.path.join(folder, "supervisord.conf")
    with open(path, "w") as handle:
        handle.write(text)
    return path


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


def wait_for(predicate, timeout_s: float, interval_s: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)


class Processes:
    """Children in their own process groups, each stopped by PID (TERM, then KILL)."""

    def __init__(self, log_dir: str):
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen] = []

    def start(self, name: str, args: list, env: Optional[dict] = None) -> subprocess.Popen:
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        full_env["PYTHONPATH"] = ROOT + os.pathsep + full_env.get("PYTHONPATH", "")
        full_env.pop("DBUS_SESSION_BUS_ADDRESS", None)
        with open(os.path.join(self.log_dir, f"{name}.log"), "ab") as log_file:
            proc = subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT, env=full_env, cwd=ROOT,
                                    start_new_session=True)
        proc.name = name
        self.procs.append(proc)
        return proc

    def python(self, name: str, module: str, *args: str, env: Optional[dict] = None) -> subprocess.Popen:
        return self.start(name, [PYTHON, "-m", module, *args], env=env)

    @staticmethod
    def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout_s: float = 15.0) -> Optional[int]:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, sig)
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
            except ProcessLookupError:
                pass
        else:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        return proc.returncode

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            self.stop(proc)


class Stack:
    def __init__(self, folder: str, rundir: str, scenario: str = "quiet", sim_args=(), config_extra=None,
                 port_base: Optional[int] = None, dbus_folder: Optional[str] = None):
        self.folder, self.rundir = folder, rundir
        self.procs = Processes(folder)
        self.port_base = port_base or pick_port_base()
        self.scenario, self.sim_args = scenario, list(sim_args)
        self.config_path = os.path.join(folder, "config.ini")
        with open(self.config_path, "w") as handle:
            handle.write(stack_config(self.port_base, rundir, folder, config_extra))
        if dbus_folder:
            os.makedirs(dbus_folder, exist_ok=True)
        self.dbus = PrivateDbus(folder=dbus_folder, set_env=False)
        self.sim = None
        self.supervisord = None
        self.supervisor_conf = local_supervisor_conf(folder)

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
        self.supervisord = self.procs.start("supervisord", [SUPERVISORD, "-n", "-c", self.supervisor_conf],
                                            env=self.env())
        wait_for(self._all_running, 60, 0.2, "all services RUNNING")
        # RUNNING is not yet on D-Bus: venus_publisher first asks localsettings for its instances and settings
        wait_for(self._acload_on_dbus, 30, 0.2, "the acload on D-Bus")
        return self

    def _acload_on_dbus(self) -> bool:
        """Whether an acload service is on the stack's D-Bus (asked of the bus itself: logs may be quiet)."""
        out = subprocess.run(["dbus-send", "--system", "--print-reply", "--dest=org.freedesktop.DBus",
                              "/org/freedesktop/DBus", "org.freedesktop.DBus.ListNames"],
                             capture_output=True, text=True, env={**os.environ, **self.env()}, timeout=10)
        return '"com.victronenergy.acload.' in out.stdout

    def _all_running(self) -> bool:
        if self.supervisord.poll() is not None:
            raise RuntimeError(f"supervisord exited with code {self.supervisord.returncode}: {self.tail('supervisord')}")
        states = self.status()
        return len(states) == len(SERVICES) and all(state == "RUNNING" for state, _ in states.values())

    def _sim_up(self):
        if self.sim.poll() is not None:
            raise RuntimeError(f"the simulators exited with code {self.sim.returncode}: {self.tail('sim')}")
        try:
            return requests.get(self.control_url + "/state", timeout=1).ok
        except requests.RequestException:
            return False

    def stop(self) -> None:
        if self.supervisord is not None:
            self.procs.stop(self.supervisord, signal.SIGTERM, timeout_s=30)
        self.procs.stop_all()
        self.dbus.stop()

    def tail(self, name: str, lines: int = 8) -> str:
        try:
            with open(os.path.join(self.folder, f"{name}.log"), errors="replace") as handle:
                return "\n".join(handle.read().splitlines()[-lines:])
        except OSError:
            return "(no log)"

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
        out = subprocess.run([SUPERVISORCTL, "-c", self.supervisor_conf, *args],
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
        path = os.path.join(self.folder, f"{service}.log")
        with open(path, errors="replace") as handle:
            return handle.read()
