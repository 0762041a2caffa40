"""shelly_poller: the only process that talks to the Shelly devices.

Meters ([grid_meter], optional [balcony_meter]): `type = auto` detects the device with `GET /shelly` (no password);
Gen1 EM/3EM are read with `GET /status` and HTTP Basic auth, Gen2+ Pro EM / EM Gen3 (`EM1`, channel `channel`)
and Pro 3EM (`EM`, three phases summed) with `GET /rpc/...` and Digest SHA-256 (user `admin`). Each fresh sample
goes out at once on meter.grid / meter.balcony: `power_w` signed as the device measures it (grid: positive =
import), per-phase values and kWh counters, `sample_t_mono` = when the HTTP answer arrived. A reading identical
to the previous one is not published again; identical for max(5 s, 2.5 poll intervals) = status `stale`.
meter.status goes out when what it says changes, else every 5-7 s (common/cadence.py). Errors are retried at the
poll interval for the grid meter (at most 5 s apart), with a doubling back-off up to 30 s for the balcony meter.

Relay ([relay], optional): one GET of keepalive_url / switchoff_url per `ctrl.relay` command, never on its own,
so the relay's flip-back timer opens it when the controller stops. The answer is verified (Gen1 `ison` and a
running timer; Gen2 `Switch.Set` accepted, then `Switch.GetStatus`) and reported on relay.state. Credentials:
the URL's own `user:pass@` (Gen1 Basic, as the original project documents it; sent in a header, never shown in
logs), else those of the grid or balcony meter whose host:port equals the URL's, else none. A password goes as
Basic only to a device pinned to Gen1 (configured, or detected once), never to a Gen2 device (Digest only).

Threads: `meter-grid`, `meter-balcony` (if configured) and `relay` (if [relay] is configured) do the HTTP work
and publish what they find themselves, one at a time (`Emitter`: a lock around the one ZeroMQ publisher; a
meter's status only when it changed); the main thread repeats each meter's status at least every 5 s. If a worker
thread dies (a bug), the process exits 1 so that supervisord restarts it.
"""
from __future__ import annotations

import logging
import threading

from common import messages as m
from common.bus import Publisher
from common.cadence import StatusGate
from common.clock import SYSTEM_CLOCK
from common.config import Config
from common.service import run_service
from services.shelly_poller.poller import STATUS_EVERY_S, MeterPoller, RelayWorker

DEAD_WORKER_CHECK_S = 5.0     # a worker thread that died (a bug) is noticed within this
HEARTBEAT_SLACK_S = 2.0       # a status heartbeat waits this long for the meter's own status after its next poll


def status_gates() -> dict:
    """role -> StatusGate: last_ok_t_mono moves with every sample and is no news (meter.grid carries it)."""
    return {role: StatusGate(STATUS_EVERY_S, volatile=m.STATUS_VOLATILE) for role in ("grid", "balcony")}


class Emitter:
    """What the worker threads publish, through one lock (a ZeroMQ socket is not thread-safe). A sample leaves from
    the thread that read it: handing it to the main thread first woke a second thread per message, which on a GX
    costs more than the message. A meter's status goes out when it changed; `heartbeats` repeats it."""

    def __init__(self, publisher: Publisher, clock, log: logging.Logger):
        self.publisher, self.clock, self.log = publisher, clock, log
        self.lock = threading.Lock()
        self.gates = status_gates()

    def emit(self, topic: str, body: dict) -> None:
        with self.lock:
            if topic == m.METER_STATUS and not self.gates[body["role"]].offer(body, self.clock.monotonic()):
                return
            try:
                self.publisher.publish(topic, body)
            except m.SchemaError as exc:          # our bug: say so, keep running
                self.log.error("not published: %s", exc)

    def heartbeats(self, pollers, slack_s: float = 0.0) -> float:
        """Each meter's status whose heartbeat is `slack_s` overdue (a poll's own status carries it when it comes
        in time: the gate lets a due one through); returns the time the next one is due."""
        with self.lock:
            now = self.clock.monotonic()
            for poller in pollers:
                gate = self.gates[poller.role]
                if gate.heartbeat_due(now - slack_s):
                    body = poller.status_body(now)
                    self.publisher.publish(m.METER_STATUS, body)
                    gate.sent(body, now)
            return min((self.gates[p.role].next_t() for p in pollers), default=float("inf"))


def main(cfg: Config, log: logging.Logger, clock=SYSTEM_CLOCK) -> int:
    stop = threading.Event()
    publisher = Publisher("shelly_poller", cfg.bus.rundir, clock=clock)
    emitter = Emitter(publisher, clock, log)
    pollers = []
    if cfg.grid_meter.source == "dbus":       # venus_publisher reads the GX's grid meter and publishes meter.grid
        log.info("[grid_meter] source = dbus: no grid Shelly polled%s",
                 f" (host = {cfg.grid_meter.host} ignored)" if cfg.grid_meter.host else "")
    else:
        pollers.append(MeterPoller("grid", cfg.grid_meter, emitter.emit, stop, clock, log.getChild("grid")))
    if cfg.balcony_meter is not None:
        pollers.append(MeterPoller("balcony", cfg.balcony_meter, emitter.emit, stop, clock,
                                   log.getChild("balcony")))
    workers = [p.thread for p in pollers]
    if cfg.relay is not None:
        relay = RelayWorker(cfg.relay, {"grid": cfg.grid_meter, "balcony": cfg.balcony_meter}, emitter.emit, stop,
                            cfg.bus.rundir, clock, log.getChild("relay"))
        workers.append(relay.thread)
    else:
        log.info("no [relay] section: no life signal")
    for thread in workers:
        thread.start()
    try:
        while True:
            # wake for the next status heartbeat, and every DEAD_WORKER_CHECK_S to notice a dead worker
            next_t = emitter.heartbeats(pollers, HEARTBEAT_SLACK_S)
            stop.wait(min(DEAD_WORKER_CHECK_S, max(0.01, next_t + HEARTBEAT_SLACK_S - clock.monotonic())))
            dead = [t.name for t in workers if not t.is_alive()]
            if dead:
                log.error("worker thread(s) ended: %s; exiting for a restart", ", ".join(dead))
                return 1
    finally:
        stop.set()
        with emitter.lock:
            publisher.close()


if __name__ == "__main__":
    raise SystemExit(run_service("shelly_poller", main))
