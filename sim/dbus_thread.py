"""A simulated D-Bus device in its own GLib main loop thread (shared by the battery and grid meter simulators).

Subclasses implement `_open()` (called once in the loop thread at start), `_tick()` (every `interval_s`) and
`_close()` (at stop). `call(fn)` runs fn in the loop thread and returns its result (for faults and tests).
"""
from __future__ import annotations

import threading
from typing import Any, Callable, Optional


class DbusSimThread:
    thread_name = "dbus-sim"

    def __init__(self, interval_s: float = 1.0):
        self.interval_s = interval_s
        self._loop = None
        self._thread: Optional[threading.Thread] = None
        self._ready = threading.Event()
        self._error: Optional[BaseException] = None

    def start(self, timeout_s: float = 10.0):
        from gi.repository import GLib
        from common import vedbus
        vedbus.ensure_mainloop()
        self._loop = GLib.MainLoop()
        GLib.idle_add(self._first)
        self._thread = threading.Thread(target=self._loop.run, name=self.thread_name, daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise TimeoutError(f"{self.thread_name}: D-Bus service did not come up")
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        from gi.repository import GLib
        done = threading.Event()

        def _quit():
            self._close()
            self._loop.quit()
            done.set()
            return False
        GLib.idle_add(_quit)
        done.wait(5)
        if self._thread is not None:
            self._thread.join(5)
        self._loop = None

    def call(self, fn: Callable[[], Any], timeout_s: float = 5.0) -> Any:
        """Run fn() inside the loop thread; its exception is raised here."""
        from gi.repository import GLib
        done = threading.Event()
        result: dict = {}

        def run():
            try:
                result["value"] = fn()
            except BaseException as exc:
                result["error"] = exc
            done.set()
            return False
        GLib.idle_add(run)
        if not done.wait(timeout_s):
            raise TimeoutError(f"{self.thread_name}: call did not run")
        if "error" in result:
            raise result["error"]
        return result.get("value")

    # ----- inside the GLib thread -----
    def _first(self) -> bool:
        from gi.repository import GLib
        try:
            self._open()
        except BaseException as exc:  # reported to start()
            self._error = exc
        self._ready.set()
        GLib.timeout_add(int(self.interval_s * 1000), self._tick)
        return False

    def _open(self) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

    def _tick(self) -> bool:
        raise NotImplementedError
