"""The closed loop with AhoyDTU as the gateway: the product's own AhoyClient, Reader, PollLoop and WriterLoop, in
simulated time, against the AhoyDTU simulator's model (`sim.ahoy`) on the bench plant.

What differs from `bench.loop.ClosedLoop` (OpenDTU):
* the gateway is `sim.ahoy.AhoySimulator` without its HTTP server: `open_gateway(..., request=)` gets a transport
  that calls the simulator's `handle` in-process (no sockets, no simulated time per request). AhoyDTU polls ALL
  inverters every `refresh_s` (default 15 s, the firmware's SEND_INTERVAL), sends a command at once, and has only
  an ack flag (`power_limit_ack`) and a read-back one refresh later (`power_limit_read`), no pending/failure state;
* our side is the product's code, not a model of it: `gateway.open_gateway` picks the clients and the writer's
  ack timeout, `PollLoop.step` polls (GET /api/index, /api/inverter/id/<n>; its next poll aligned to the DTU's
  refresh) and the real `Reader` publishes `dtu.inverter` / `dtu.status`; `WriterLoop`'s own methods send limits
  (`AhoyClient.set_limit_relative`: POST /api/ctrl `limit_nonpersistent_absolute`) and read the status the
  client derives from the flag and the read-back, with the client's own timeout and resend;
* every time is the simulated clock (`SimClock`): the client's deadlines, the DTU clock estimate, the writer's
  0.5 s status polls all run on it.
Counted at the device edge (the transport): every limit POST (client resends included), and after each accepted
command the highest limits that may be on the wire (in force, in the air, queued in AhoyDTU) summed over the
inverters that may run, against the site's feed-in cap (as bench.loop counts it for OpenDTU).

`python -m bench.control_quality --dtu ahoy --refresh 15`, `python -m bench.sweep --dtu opendtu ahoy --refresh 15 5`.
"""
from __future__ import annotations

import json
import queue
from typing import Optional

from bench.loop import T0_MONO, T0_WALL, ClosedLoop, WireCount
from bench.plantcfg import PlantConfig, product_config
from common import messages as M
from common.config import inverter_options
from services.dtu_poller.client import DtuInvalidResponse
from services.dtu_poller.gateway import open_gateway
from services.dtu_poller.reader import Reader
from services.dtu_poller.service import PollLoop
from services.dtu_poller.writer import Inventory, WriterLoop, WriterParams
from sim.ahoy import AhoySimulator
from sim.httpbase import Request as SimRequest
from sim.loadgen import Trace

DEFAULT_REFRESH_S = 15.0
BATTERY_INTERVAL_S = 2.0       # venus.battery as in bench.loop (there: with every 2 s DTU poll)
MIN_POLL_DELAY_S = 0.1         # PollLoop.step may answer 0 (poll again now): never loop at one instant


class SimClock:
    """The product's clock interface on the loop's simulated time."""

    def __init__(self, loop: "AhoyLoop"):
        self.loop = loop

    def monotonic(self) -> float:
        return T0_MONO + self.loop.now_t

    def wall(self) -> float:
        return T0_WALL + self.loop.now_t


class AhoyWriter(WireCount):
    """WriterLoop.run's pass, one per wake-up in simulated time, on the real WriterLoop (its inbox, its
    `_send_due` / `_refresh_flags` / `_poll_status`, its machine), plus the counters RunResult wants (kept by the
    transport: `count_post`)."""

    def __init__(self, loop: "AhoyLoop", writer_loop: WriterLoop):
        super().__init__()
        self.loop, self.wl = loop, writer_loop
        self.wake_gen = 0
        self.woken = False
        self.power_states: dict = {}

    def submit(self, body: dict, seq: int, t: float) -> None:
        self.wl.submit(body, seq, self.loop.mono(t))
        self.wake_now(t)

    def wake_now(self, t: float) -> None:
        if not self.woken:
            self.woken = True
            self.loop.schedule(t, "writer", None)

    def wake(self, t: float, gen: Optional[int]) -> list:
        if gen is None:
            self.woken = False
        elif gen != self.wake_gen:
            return []
        wl, machine, clock = self.wl, self.wl.machine, self.wl.clock
        while True:                                     # WriterLoop.run: every setpoint waiting in the inbox
            try:
                item = wl.inbox.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                body, seq, msg_t = item
                wl._emit(machine.on_setpoint(body, seq, msg_t, clock.monotonic()))
        version, serials, reachable, limits, poll_t, samples = wl.inventory.snapshot()
        if version != wl._inventory_version:
            wl._inventory_version = version
            machine.on_inventory(serials, reachable, limits, poll_t, samples, clock.monotonic())
        wl._emit(machine.tick(clock.monotonic()))
        if not set(serials) <= set(machine.command_flags):
            wl._refresh_flags(serials)
        wl._send_due()
        wl._refresh_flags(serials)
        wl._poll_status()
        wl._send_due()
        self.power_states = machine.power_states()
        wl.inventory.set_power_states(self.power_states)
        self.wake_gen += 1
        self.loop.schedule(t + machine.next_wakeup(clock.monotonic()), "writer", self.wake_gen)
        return self.loop.take_outbox()

    def count_post(self, body: dict, serial: Optional[str]) -> None:
        """After a POST /api/ctrl the DTU accepted: refreshes counted by the watts posted; the cap checked as
        bench.loop's SimWriter checks it (`possible_w`)."""
        cmd = body.get("cmd")
        if serial is None or not isinstance(cmd, str):
            return
        if cmd.startswith("limit_"):
            self.commands += 1
            self._limit_sent(serial, float(body.get("val", 0.0)))
        elif cmd not in ("power", "restart"):
            return
        self._check_total(self.possible_w(), self.loop.plant.site.max_feed_in_w)

    def possible_w(self) -> float:
        """Sum over the inverters that run or may start (not switched off, or a power on / restart waiting in
        AhoyDTU) of the highest of: the limit in force (acknowledged by the inverter) and the limits in the air or
        queued in AhoyDTU. At the inverters' real ratings."""
        total = 0.0
        for slot in self.loop.dtu.slots.values():
            inv = slot.radio.inv
            pending = [c for c in (slot.active, slot.queued) if c is not None]
            if not inv.enabled and not any(c.kind in ("on", "restart") for c in pending):
                continue
            pcts = [inv.limit_pct] + [c.value[0] for c in pending if c.kind == "limit"]
            total += min(100.0, max(pcts)) * inv.max_power_w / 100.0
        return total


class AhoyLoop(ClosedLoop):
    """ClosedLoop (plant, meters, policy, scoring) with the AhoyDTU gateway and the product's poller and writer."""

    def __init__(self, trace: Trace, plant: PlantConfig, policy, seed: int = 1, tick_s: float = 0.25,
                 validate: bool = False, writer_params: Optional[WriterParams] = None,
                 refresh_s: float = DEFAULT_REFRESH_S):
        if not 1.0 <= refresh_s <= 300.0:
            raise ValueError("refresh_s must be within 1..300 s")
        self.now_t = 0.0
        self._outbox: list = []
        super().__init__(trace, plant, policy, seed=seed, tick_s=tick_s, validate=validate,
                         writer_params=writer_params)
        self.dtu.close()                                    # the OpenDTU model's hook: AhoyDTU replaces it
        self.refresh_s = refresh_s
        self.ahoy = AhoySimulator(self.sim, refresh_s=refresh_s, seed=seed * 7919 + 3)    # never started
        self.ahoy._local.ip = "127.0.0.1"
        self.dtu = self.ahoy.dtu
        cfg = product_config()
        self.clock = SimClock(self)
        self.gateway = open_gateway(cfg, "ahoy", self.clock, request=self._request)
        self.inventory = Inventory()
        self.reader = Reader(can_control=self.gateway.params.can_control,
                             config_max_w=lambda serial, index: inverter_options(cfg, serial, index).max_power_w)
        self.poller = PollLoop(self.gateway.poll_client, self.reader, self._publish, self.inventory,
                               self.gateway.poll_interval_s, clock=self.clock, name=self.gateway.name,
                               sample_period_s=self.gateway.sample_period_s)
        params = self.gateway.params if writer_params is None else writer_params
        self.writer = AhoyWriter(self, WriterLoop(self.gateway.write_client, params, self._publish,
                                                  self.inventory, clock=self.clock))
        self.inventory.on_new = lambda: self.writer.wake_now(self.now_t)

    # ------------------------------------------------------------ the transport (device edge)
    def _request(self, method: str, path: str, json_body: Optional[dict] = None):
        body = b"" if json_body is None else json.dumps(json_body).encode("utf-8")
        answer = self.ahoy.handle(SimRequest(method, path, {}, {"host": "ahoy.bench"}, body, path))
        ctype = (answer.content_type or "").split(";")[0].strip()
        if ctype != "application/json":
            raise DtuInvalidResponse(f"{method} {path}: HTTP {answer.status}, {ctype or 'no content type'}",
                                     "html" if "html" in ctype else "invalid")
        doc = json.loads(answer.body.decode("utf-8"))
        if method == "POST" and path == "/api/ctrl" and isinstance(doc, dict) and doc.get("success") is True \
                and isinstance(json_body, dict):
            slot = self.dtu.slots.get(json_body.get("id")) if isinstance(json_body.get("id"), int) else None
            self.writer.count_post(json_body, slot.radio.inv.serial if slot is not None else None)
        return answer.status, doc

    def _publish(self, topic: str, body: dict) -> None:
        self._outbox.append((topic, body))

    def take_outbox(self) -> list:
        out, self._outbox = self._outbox, []
        return out

    # ------------------------------------------------------------ events
    def _handle(self, t: float, kind: str, payload) -> None:
        self.now_t = t
        if kind == "http":
            delay = self.poller.step()
            out = self.take_outbox()
            if out:
                self.deliver(out, t)
            self.schedule(t + max(MIN_POLL_DELAY_S, delay), "http")
        elif kind == "battery":
            out = [(M.VENUS_BATTERY, self._battery_body())]
            now = self.clock.monotonic()
            if self.poller.status_gate.heartbeat_due(now):          # PollLoop.run's dtu.status heartbeat
                out.append(self.reader.status(now))
                self.poller.status_gate.sent(out[-1][1], now)
            self.deliver(out, t)
            self.schedule(t + BATTERY_INTERVAL_S, "battery")
        else:
            super()._handle(t, kind, payload)

    def run(self):
        self.schedule(0.5, "battery")
        return super().run()
