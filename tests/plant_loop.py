"""An in-process closed loop for safety tests: a simple plant and DTU, the real Reader, WriterMachine and
controller core (tests/test_controller_support.Driver), all on one manual time line (1 step = `dt_s`).

The DTU fake applies an acknowledged limit one step after the POST and can lie or disobey: `dtu_rating_w` (the
rating it reports), `reject` / `ignore` (per command kind: "limit", "power": refused with a warning, or "success"
and nothing happens). An inverter's output is limit x its true rating (0 when switched off), one step late.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from common import messages as m
from services.controller import core
from services.dtu_poller.client import DtuRejected, InverterLive, InverterSummary, LimitStatus
from services.dtu_poller.rating import ProvenRatings
from services.dtu_poller.reader import PollResult, Reader
from services.dtu_poller.writer import WriterMachine, WriterParams
from tests.test_controller_support import Driver, battery, dtu_status, grid


@dataclass
class PlantInverter:
    serial: str
    true_w: float                    # what it can really deliver at 100 %
    dtu_rating_w: float              # what the DTU says it is rated
    limit_pct: float = 100.0         # in force (it starts at its persistent limit)
    on: bool = True
    ac_w: float = 0.0
    pending: list = field(default_factory=list)     # (apply_at_t, kind, value)


class Loop:
    def __init__(self, inverters, load_w=3000.0, max_feed_in=700, dcl_a=20.0, voltage_v=52.0, dt_s=1.0,
                 min_pct=1.0, switch_off=(), t0=1000.0, **params):
        self.invs = {inv.serial: inv for inv in inverters}
        self.load_w, self.dt_s = load_w, dt_s
        self.voltage_v, self.dcl_a = voltage_v, dcl_a
        self.driver = Driver(t0=t0, balcony_configured=False, relay_first_decision_s=1e6, max_feed_in=max_feed_in,
                             min_percent=min_pct, switch_off=switch_off, **params)
        self.writer = WriterMachine(WriterParams(min_pct=min_pct, switch_off=switch_off), start_t=t0)
        self.proven = ProvenRatings()                   # stands for the state file across a restart
        self.reader = Reader(can_control=True, proven=self.proven)
        self.reject: set = set()
        self.ignore: set = set()
        self.grid_stale = False
        self.grid_override: Optional[float] = None     # the next grid sample says this (an absurd value)
        self.last_grid_w: Optional[float] = None
        self.delivered: list = []          # (t, total AC W)

    @property
    def now(self) -> float:
        return self.driver.now

    def cap_w(self) -> float:
        return min(self.driver.state.settings.max_feed_in, self.voltage_v * self.dcl_a)

    def restart_writer(self) -> None:
        self.writer = WriterMachine(self.writer.params, start_t=self.now)
        self.reader = Reader(can_control=True, proven=self.proven)   # the same process: the reader restarts

    def restart_controller(self) -> None:
        self.driver.state = core.initial_state(self.driver.params)

    # ---------------------------------------------------------------- the DTU
    def _dtu_send(self, cmd) -> Optional[DtuRejected]:
        kind = "limit" if cmd.kind == "limit" else "power"
        if kind in self.reject:
            return DtuRejected("warning 1005", 1005)
        if kind not in self.ignore:
            value = cmd.limit_pct if cmd.kind == "limit" else cmd.kind == "power_on"
            self.invs[cmd.serial].pending.append((self.now + self.dt_s, cmd.kind, value))
        return None

    def _writer_io(self) -> None:
        w, now = self.writer, self.now
        w.tick(now)
        for _ in range(10):
            cmd = w.next_command(now)
            if cmd is None:
                break
            if cmd.kind in ("limit", "power_on", "power_off"):
                w.on_sent(cmd, now, self._dtu_send(cmd), now)
            else:
                w.on_sent(cmd, now, DtuRejected("not simulated"), now)
        if w.status_poll_due(now):
            limits = {s: LimitStatus(inv.limit_pct, inv.dtu_rating_w, "Pending" if inv.pending else "Ok")
                      for s, inv in self.invs.items()}
            powers = {s: "Pending" if inv.pending else "Ok" for s, inv in self.invs.items()}
            self._emit(w.on_limit_status(limits, now) + w.on_power_status(powers, now))

    def _emit(self, messages) -> list:
        return [(t, b) for t, b in messages if t == m.DTU_ACK]

    # ---------------------------------------------------------------- one step
    def step(self) -> float:
        now = self.now + self.dt_s
        for inv in self.invs.values():
            inv.ac_w = inv.limit_pct * inv.true_w / 100.0 if inv.on else 0.0   # what the last step set
            due = [p for p in inv.pending if p[0] <= now]
            inv.pending = [p for p in inv.pending if p[0] > now]
            for _t, kind, value in due:
                if kind == "limit":
                    inv.limit_pct = value
                else:
                    inv.on = value
        total_w = sum(inv.ac_w for inv in self.invs.values())
        self.delivered.append((now, total_w))
        serials = list(self.invs)
        lives, limits = {}, {}
        for i, inv in enumerate(self.invs.values()):
            live = InverterLive(serial=inv.serial, name=inv.serial, order=i, data_age_s=0.0, reachable=True,
                                producing=inv.ac_w > 0, poll_enabled=True, limit_relative_pct=inv.limit_pct,
                                limit_absolute_w=inv.limit_pct * inv.dtu_rating_w / 100.0,
                                age_resolution_s=0.001, ac_power_w=inv.ac_w, ac_voltage_v=230.0,
                                temperature_c=30.0, yield_total_kwh=1.0, has_channels=True)
            lives[inv.serial] = (live, now, 0.001)
            limits[inv.serial] = LimitStatus(inv.limit_pct, inv.dtu_rating_w, "Ok")
        summary = [InverterSummary(serial=s, name=s, order=i, data_age_s=0.0, reachable=True, producing=True,
                                   poll_enabled=True, limit_relative_pct=None, limit_absolute_w=None)
                   for i, s in enumerate(serials)]
        self.writer.on_inventory(serials, set(serials), {s: st.limit_relative_pct for s, st in limits.items()},
                                 now, {s: (lives[s][0].ac_power_w, now) for s in serials}, now)
        self.reader.power_states = self.writer.power_states()
        events = list(self.reader.on_poll(PollResult(summary, lives, limits, now)))
        events.append(dtu_status(serials))
        events.append(battery(voltage_v=self.voltage_v, dcl_a=self.dcl_a))
        if not self.grid_stale:
            self.last_grid_w = self.load_w - total_w if self.grid_override is None else self.grid_override
            self.grid_override = None
            events.append(grid(self.last_grid_w, now))
        got = self.driver.step(events, dt=self.dt_s)
        for body in got.get(m.CTRL_SETPOINT, []):
            self.writer.on_setpoint(body, None, now, now)
        self._writer_io()
        return total_w
