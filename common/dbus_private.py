"""A private dbus-daemon for tests and the demo (a permissive policy like Venus's system bus).

    with PrivateDbus() as bus:      # sets DBUS_SYSTEM_BUS_ADDRESS for this process and its children
        ...
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time

_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
  </policy>
</busconfig>
"""


class PrivateDbus:
    def __init__(self, folder: str | None = None, set_env: bool = True):
        self._own_folder = folder is None
        self.folder = folder or tempfile.mkdtemp(prefix="dbus-opendtu-bus-")
        self.socket = os.path.join(self.folder, "bus.sock")
        self.address = f"unix:path={self.socket}"
        self.pid: int | None = None
        self._set_env = set_env
        self._saved_env: dict[str, str | None] = {}

    def start(self, timeout_s: float = 10.0) -> "PrivateDbus":
        conf = os.path.join(self.folder, "bus.conf")
        with open(conf, "w") as handle:
            handle.write(_CONFIG.format(socket=self.socket))
        out = subprocess.run(["dbus-daemon", f"--config-file={conf}", "--fork", "--print-pid=1"],
                             capture_output=True, text=True, timeout=timeout_s, check=True)
        self.pid = int(out.stdout.split()[0])
        deadline = time.monotonic() + timeout_s
        while not os.path.exists(self.socket):
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("dbus-daemon did not create its socket")
            time.sleep(0.01)
        if self._set_env:
            for key, value in (("DBUS_SYSTEM_BUS_ADDRESS", self.address), ("DBUS_SESSION_BUS_ADDRESS", None)):
                self._saved_env[key] = os.environ.get(key)
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        return self

    def stop(self) -> None:
        if self.pid is not None:
            try:
                os.kill(self.pid, signal.SIGTERM)
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline:
                    try:
                        os.kill(self.pid, 0)
                    except ProcessLookupError:
                        break
                    time.sleep(0.01)
                else:
                    os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.pid = None
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_env.clear()
        if self._own_folder:
            shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> "PrivateDbus":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main() -> int:
    """`python -m common.dbus_private`: start a daemon, print its address and PID (for shell scripts)."""
    bus = PrivateDbus(set_env=False).start()
    print(f"DBUS_SYSTEM_BUS_ADDRESS={bus.address}")
    print(f"DBUS_DAEMON_PID={bus.pid}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
