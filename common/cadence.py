"""When a status message goes out: on a change, else as a heartbeat (issue 16: a footprint a GX can carry).

A status that is repeated unchanged after every poll wakes every subscriber for nothing: on a GX each wake-up of a
Python process costs far more than the work it does. `StatusGate` lets a status body out when what it says
changed (fields that only tell *when*, e.g. `last_ok_t_mono`, are left out of the comparison) or when
`heartbeat_s` passed since the last one went out; so a subscriber still sees a live source at least every
`heartbeat_s` (plus the slack a sender allows a heartbeat to ride on work it does anyway: 1-2 s) and its
staleness limit must stay above that (they are 15 s and more).
"""
from __future__ import annotations

from typing import Iterable, Optional

STATUS_HEARTBEAT_S = 5.0       # meter.status, dtu.status and ctrl.status at least this often


class StatusGate:
    """`offer(body, now)` -> True when `body` is to be published now (and then counts as sent)."""

    def __init__(self, heartbeat_s: float = STATUS_HEARTBEAT_S, volatile: Iterable[str] = ()):
        self.heartbeat_s = heartbeat_s
        self.volatile = frozenset(volatile)
        self.last_t: Optional[float] = None
        self._last_key: Optional[dict] = None

    def _key(self, body: dict) -> dict:
        return {k: v for k, v in body.items() if k not in self.volatile}

    def due(self, body: dict, now: float) -> bool:
        return self.heartbeat_due(now) or self._key(body) != self._last_key

    def heartbeat_due(self, now: float) -> bool:
        return self.last_t is None or now - self.last_t >= self.heartbeat_s

    def next_t(self) -> float:
        """When the heartbeat is due (now, if nothing went out yet)."""
        return float("-inf") if self.last_t is None else self.last_t + self.heartbeat_s

    def sent(self, body: dict, now: float) -> None:
        self._last_key, self.last_t = self._key(body), now

    def offer(self, body: dict, now: float) -> bool:
        if not self.due(body, now):
            return False
        self.sent(body, now)
        return True
