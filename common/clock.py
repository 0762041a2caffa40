"""Injectable time: real clocks for the services, a manual one for tests and simulated days."""
from __future__ import annotations

import time


class SystemClock:
    """CLOCK_MONOTONIC (system-wide on Linux, so ages compare across processes) and wall time."""

    def monotonic(self) -> float:
        return time.clock_gettime(time.CLOCK_MONOTONIC)

    def wall(self) -> float:
        return time.time()


class ManualClock:
    """A clock that only moves when told to. `wall` keeps a fixed offset from `monotonic`."""

    def __init__(self, start_s: float = 1000.0, wall_offset_s: float = 1.7e9):
        self._now_s = float(start_s)
        self._wall_offset_s = float(wall_offset_s)

    def monotonic(self) -> float:
        return self._now_s

    def wall(self) -> float:
        return self._now_s + self._wall_offset_s

    def advance(self, dt_s: float) -> float:
        if dt_s < 0:
            raise ValueError(f"a clock cannot go back ({dt_s} s)")
        self._now_s += dt_s
        return self._now_s

    def set(self, now_s: float) -> None:
        if now_s < self._now_s:
            raise ValueError(f"a clock cannot go back ({now_s} < {self._now_s})")
        self._now_s = float(now_s)


SYSTEM_CLOCK = SystemClock()
