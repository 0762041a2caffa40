"""The ZeroMQ bus: who publishes what where, and thin PUB/SUB wrappers.

Each publishing service binds one PUB socket at ipc://<rundir>/<service>.sock. Subscribers connect to the
publishers they need; ZeroMQ reconnects by itself, so a restarted publisher is picked up again.

High-water marks: measurements may drop under a burst (PUB drops silently past HWM), so HWM is set per socket
to a few seconds' worth. Setpoints are full-state and repeated every cycle, and their delivery is confirmed by
the DTU writer's `dtu.ack`; settings requests are repeated until `ctrl.settings` confirms them.
"""
from __future__ import annotations

import errno
import logging
import math
import os
import stat
import threading
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Optional

import msgpack
import zmq

from common import messages as m
from common.clock import SYSTEM_CLOCK

log = logging.getLogger(__name__)

# service -> topics it owns (and only the owners may publish). meter.grid and meter.status have two owners:
# shelly_poller ([grid_meter] source = shelly) and venus_publisher (source = dbus: the GX's grid meter); the
# config makes exactly one of them publish the grid meter, so receivers need not know which.
TOPOLOGY: dict[str, tuple[str, ...]] = {
    "dtu_poller": (m.DTU_INVERTER, m.DTU_STATUS, m.DTU_ACK, m.DTU_ALARM),
    "shelly_poller": (m.METER_GRID, m.METER_BALCONY, m.METER_STATUS, m.RELAY_STATE),
    "controller": (m.CTRL_SETPOINT, m.CTRL_RELAY, m.CTRL_STATUS, m.CTRL_SETTINGS),
    "venus_publisher": (m.VENUS_BATTERY, m.VENUS_SETTING, m.METER_GRID, m.METER_STATUS),
}
SERVICES = tuple(TOPOLOGY)

SNDHWM = 2000      # messages queued per subscriber before PUB drops (several seconds of traffic)
RCVHWM = 2000
MAX_FRAME_BYTES = 256 * 1024   # larger frames are garbage
FUTURE_TOLERANCE_S = 5.0       # a received time may lie this far ahead of ours (one machine, one clock)


def owner_of(topic: str) -> str:
    """The first owner of `topic` (meter.grid and meter.status: shelly_poller, the default source)."""
    for service, topics in TOPOLOGY.items():
        if topic in topics:
            return service
    raise KeyError(f"no service owns topic {topic!r}")


class RundirError(OSError):
    """The run folder cannot be trusted: whoever can write to it can replace a socket and speak for a service."""


def ensure_rundir(rundir: str) -> str:
    """Create the run folder with mode 0700, or accept an existing one only when it is a directory (not a
    symbolic link) owned by our user; a looser mode of our own folder is tightened to 0700 (and logged).
    Anything else raises RundirError (its strerror says why)."""
    try:
        os.makedirs(rundir, mode=0o700)
    except FileExistsError:
        pass
    st = os.lstat(rundir)
    if stat.S_ISLNK(st.st_mode):
        raise RundirError(errno.EPERM, "is a symbolic link: refused (use a real folder owned by this user)", rundir)
    if not stat.S_ISDIR(st.st_mode):
        raise RundirError(errno.ENOTDIR, "is not a folder", rundir)
    if st.st_uid != os.geteuid():
        raise RundirError(errno.EPERM, f"is owned by uid {st.st_uid}, not by this user (uid {os.geteuid()}): "
                                       f"refused (another user could replace the sockets)", rundir)
    mode = stat.S_IMODE(st.st_mode)
    if mode != 0o700:
        os.chmod(rundir, 0o700)
        log.warning("bus: run folder %s had mode %04o: tightened to 0700", rundir, mode)
    return rundir


def endpoint(rundir: str, service: str) -> str:
    if service not in TOPOLOGY:
        raise KeyError(f"unknown service {service!r}")
    return f"ipc://{os.path.join(rundir, service)}.sock"


def encode(src: str, seq: int, topic: str, body: dict, clock=SYSTEM_CLOCK) -> list[bytes]:
    envelope = {"v": m.VERSION, "src": src, "seq": seq, "t_mono": clock.monotonic(), "t_wall": clock.wall(),
                "body": body}
    return [topic.encode(), msgpack.packb(envelope, use_bin_type=True)]


@dataclass
class Message:
    topic: str
    src: str
    seq: int
    t_mono: float
    t_wall: float
    body: dict


class DropReason(Exception):
    """Why a received message was dropped: the counter name is the first argument."""


def _time_ok(t: float, now_mono: float) -> bool:
    return math.isfinite(t) and 0.0 <= t <= now_mono + FUTURE_TOLERANCE_S


def decode(frames: list[bytes], now_mono: Optional[float] = None) -> Message:
    """Parse and validate two frames; raise DropReason(kind, detail) for anything not acceptable.

    With `now_mono` (the receiver's CLOCK_MONOTONIC), the envelope's `t_mono` and every `*_t_mono` field of the
    body must be a time that has been: not negative, not beyond now + FUTURE_TOLERANCE_S (all processes read the
    same clock); else the message is dropped as "time" (a time from the future would keep a sample fresh)."""
    if len(frames) != 2:
        raise DropReason("frames", f"{len(frames)} frames")
    raw_topic, payload = frames
    if len(payload) > MAX_FRAME_BYTES:
        raise DropReason("garbage", "frame too large")
    try:
        topic = raw_topic.decode()
    except UnicodeDecodeError:
        raise DropReason("garbage", "topic not UTF-8") from None
    try:
        env = msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several types for garbage
        raise DropReason("garbage", f"not msgpack: {type(exc).__name__}") from None
    if not isinstance(env, dict):
        raise DropReason("garbage", "envelope not a map")
    if env.get("v") != m.VERSION:
        raise DropReason("version", f"version {env.get('v')!r}")
    src, seq, t_mono, t_wall = env.get("src"), env.get("seq"), env.get("t_mono"), env.get("t_wall")
    if not isinstance(src, str) or isinstance(seq, bool) or not isinstance(seq, int) \
            or not isinstance(t_mono, (int, float)) or not isinstance(t_wall, (int, float)) \
            or isinstance(t_mono, bool) or not math.isfinite(t_wall):
        raise DropReason("envelope", "bad envelope fields")
    if now_mono is not None and not _time_ok(t_mono, now_mono):
        raise DropReason("time", f"envelope t_mono {t_mono!r}, now {now_mono:.3f}")
    if topic not in m.SCHEMAS:
        raise DropReason("topic", f"unknown topic {topic!r}")
    if TOPOLOGY.get(src) is None or topic not in TOPOLOGY[src]:
        raise DropReason("topic", f"{src!r} does not own {topic!r}")
    try:
        body = m.check_body(topic, env.get("body"))
    except m.SchemaError as exc:
        raise DropReason("schema", str(exc)) from None
    if now_mono is not None:
        for name, value in body.items():
            if name.endswith("_t_mono") and value is not None and not _time_ok(value, now_mono):
                raise DropReason("time", f"{topic}.{name} {value!r}, now {now_mono:.3f}")
    return Message(topic, src, seq, float(t_mono), float(t_wall), body)


class Publisher:
    """Binds the PUB socket of one service. Bodies are checked before sending (SchemaError = our bug)."""

    def __init__(self, service: str, rundir: str, clock=SYSTEM_CLOCK, context: Optional[zmq.Context] = None):
        if service not in TOPOLOGY:
            raise KeyError(f"unknown service {service!r}")
        self.service = service
        self.clock = clock
        self.seq = 0
        ensure_rundir(rundir)
        self.endpoint = endpoint(rundir, service)
        path = self.endpoint[len("ipc://"):]
        if os.path.exists(path):          # left by a killed predecessor; binding replaces it anyway
            os.unlink(path)
        self._ctx = context or zmq.Context.instance()
        self.socket = self._ctx.socket(zmq.PUB)
        self.socket.setsockopt(zmq.SNDHWM, SNDHWM)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.bind(self.endpoint)
        os.chmod(path, 0o600)

    def publish(self, topic: str, body: dict) -> int:
        if topic not in TOPOLOGY[self.service]:
            raise m.SchemaError(f"{self.service} does not own topic {topic!r}")
        checked = m.check_body(topic, body)
        self.seq += 1
        self.socket.send_multipart(encode(self.service, self.seq, topic, checked, self.clock), copy=True)
        return self.seq

    def close(self) -> None:
        path = self.endpoint[len("ipc://"):]
        self.socket.close(linger=0)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


class LockedPublisher:
    """A Publisher that several threads of one process share (a ZeroMQ socket is not thread-safe)."""

    def __init__(self, publisher: Publisher):
        self.publisher = publisher
        self.lock = threading.Lock()

    def publish(self, topic: str, body: dict) -> int:
        with self.lock:
            return self.publisher.publish(topic, body)

    def close(self) -> None:
        with self.lock:
            self.publisher.close()


class BusStats:
    """Counters a subscriber keeps: received per topic, dropped per reason, seq gaps and restarts per source."""

    def __init__(self):
        self.received = defaultdict(int)
        self.dropped = defaultdict(int)
        self.gaps = defaultdict(int)        # src -> messages missed
        self.restarts = defaultdict(int)    # src -> times its seq started again
        self._last_seq: dict[str, int] = {}

    def note(self, msg: Message) -> None:
        self.received[msg.topic] += 1
        last = self._last_seq.get(msg.src)
        if last is not None:
            if msg.seq > last + 1:
                self.gaps[msg.src] += msg.seq - last - 1
            elif msg.seq <= last:
                self.restarts[msg.src] += 1
        self._last_seq[msg.src] = msg.seq


class Subscriber:
    """Connects a SUB socket to the publishers of the wanted topics. Invalid messages are dropped and counted.

    `topics` are prefixes (ZeroMQ filters on the topic frame). `services` defaults to every owner of a topic.
    """

    def __init__(self, rundir: str, topics: Iterable[str] = ("",), services: Optional[Iterable[str]] = None,
                 context: Optional[zmq.Context] = None, clock=SYSTEM_CLOCK):
        topics = list(topics) or [""]
        if services is None:
            services = [s for s, owned in TOPOLOGY.items()
                        if any(t.startswith(p) or p.startswith(t) for t in owned for p in topics)]
        self.services = list(services)
        self.stats = BusStats()
        self.clock = clock
        self._ctx = context or zmq.Context.instance()
        self.socket = self._ctx.socket(zmq.SUB)
        self.socket.setsockopt(zmq.RCVHWM, RCVHWM)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.RECONNECT_IVL, 100)
        self.socket.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
        for prefix in topics:
            self.socket.setsockopt(zmq.SUBSCRIBE, prefix.encode())
        for service in self.services:
            self.socket.connect(endpoint(rundir, service))

    def fileno(self) -> int:
        return self.socket.getsockopt(zmq.FD)

    def recv(self, timeout_s: Optional[float] = None) -> Optional[Message]:
        """Next valid message, or None when `timeout_s` passes (None: wait forever, 0: don't wait)."""
        deadline = None if timeout_s is None else SYSTEM_CLOCK.monotonic() + timeout_s
        while True:
            # rounded up: a poll(0) for the last fraction of a millisecond would spin until the deadline
            remaining_ms = None if deadline is None else max(0, math.ceil((deadline - SYSTEM_CLOCK.monotonic()) * 1000))
            if not self.socket.poll(remaining_ms):
                return None
            msg = self._take()
            if msg is not None:
                return msg
            if deadline is not None and SYSTEM_CLOCK.monotonic() >= deadline:
                return None

    def drain(self) -> list[Message]:
        """Everything queued now, without waiting (for edge-triggered FD watches)."""
        out = []
        while self.socket.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            msg = self._take()
            if msg is not None:
                out.append(msg)
        return out

    def _take(self) -> Optional[Message]:
        try:
            frames = self.socket.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return None
        try:
            msg = decode(frames, self.clock.monotonic())
        except DropReason as exc:
            kind = exc.args[0]
            self.stats.dropped[kind] += 1
            log.debug("bus: dropped a message (%s: %s)", kind, exc.args[1] if len(exc.args) > 1 else "")
            return None
        self.stats.note(msg)
        return msg

    def close(self) -> None:
        self.socket.close(linger=0)
