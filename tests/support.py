"""Shared test helpers: real processes cleaned up by PID, config files, bounded waits, free ports."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from typing import Callable, Optional

from scripts.stack import wait_for as stack_wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate: Callable[[], object], timeout_s: float = 10.0, interval_s: float = 0.02,
             what: str = "condition"):
    """Poll `predicate` until it returns something truthy; fail the test after `timeout_s`. Returns that value."""
    try:
        return stack_wait_for(predicate, timeout_s, interval_s, what)
    except TimeoutError as exc:
        raise AssertionError(str(exc)) from None


def write_config(folder: str, sections: dict[str, dict[str, object]], name: str = "config.ini") -> str:
    """Write an ini file from {section: {key: value}}; a value of None leaves the key out."""
    lines = []
    for section, keys in sections.items():
        if keys is None:
            continue
        lines.append(f"[{section}]")
        for key, value in keys.items():
            if value is not None:
                lines.append(f"{key} = {value}")
        lines.append("")
    path = os.path.join(folder, name)
    with open(path, "w") as handle:
        handle.write("\n".join(lines))
    return path


def base_sections(rundir: str, **overrides: dict) -> dict[str, dict]:
    """A minimal valid config; pass section=dict to update keys, or section=None to drop a section."""
    sections: dict[str, Optional[dict]] = {
        "opendtu": {"host": "127.0.0.1:9", "password": "openDTU42"},
        "grid_meter": {"host": "127.0.0.1:9"},
        "control": {"state_dir": rundir},
        "venus": {},
        "bus": {"rundir": rundir, "log_level": "DEBUG"},
    }
    for section, keys in overrides.items():
        if keys is None:
            sections[section] = None
        else:
            sections.setdefault(section, {})
            sections[section] = {**(sections[section] or {}), **keys}
    return sections


class Proc:
    def __init__(self, name: str, popen: subprocess.Popen, log_path: str):
        self.name, self.popen, self.log_path = name, popen, log_path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        with open(self.log_path, errors="replace") as handle:
            return handle.read()

    def alive(self) -> bool:
        return self.popen.poll() is None


class Processes:
    """Starts real processes (each in its own process group) and stops every one of them by PID."""

    def __init__(self, log_dir: str):
        self.log_dir = log_dir
        self.procs: list[Proc] = []

    def start(self, name: str, args: list[str], env: Optional[dict] = None, cwd: str = ROOT) -> Proc:
        log_path = os.path.join(self.log_dir, f"{name}-{len(self.procs)}.log")
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        full_env["PYTHONPATH"] = ROOT + os.pathsep + full_env.get("PYTHONPATH", "")
        with open(log_path, "wb") as log_file:
            popen = subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT, env=full_env, cwd=cwd,
                                     start_new_session=True)
        proc = Proc(name, popen, log_path)
        self.procs.append(proc)
        return proc

    def python(self, name: str, module: str, *args: str, env: Optional[dict] = None) -> Proc:
        return self.start(name, [PYTHON, "-m", module, *args], env=env)

    def stop(self, proc: Proc, sig: int = signal.SIGTERM, timeout_s: float = 10.0) -> Optional[int]:
        if proc.popen.poll() is None:
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                proc.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.popen.wait(5)
        else:  # the leader is gone; children of its group may still be there
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        return proc.popen.returncode

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            self.stop(proc)
