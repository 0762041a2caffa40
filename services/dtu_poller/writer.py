"""The DTU writer: applies the controller's setpoints to the DTU (OpenDTU or AhoyDTU, see gateway.py), safely.

`WriterMachine` is the decision logic with time passed in (unit-testable without HTTP): per inverter one command
in flight, a newer setpoint replaces one not yet sent, a limit is sent only when it differs from the last
acknowledged one (or that failed, or it is due for a refresh), `/api/limit/status` is followed until Ok / Failure /
timeout and every outcome is published as `dtu.ack`. The cap on the wire: a raise goes only when the sum over the
other inverters of the highest limit that may be in force (`_possible_pct`: acknowledged, or the DTU's read-back when
that is unknown; in flight; failed or timed out, which the DTU may still re-send) leaves room for it under the
setpoint's `cap_w`; else it waits for their reductions, or, when none is pending, is cut to the room left (logged
once). Restarts and DTU reboots are rate-limited; a setpoint watchdog sends every reachable inverter to its safe
minimum when the controller falls silent. An inverter first seen gets the minimum limit at once (before any
setpoint: it runs at its persistent limit until then).

Stopping (setpoint "on": false) is verified, never assumed: a stop round sends the minimum limit, then power off;
the inverter is "stopping" (the controller counts it at its last limit) until a sample newer than the power-off ack
shows AC power <= STOP_CONFIRM_W, then "off". A round is repeated after STOP_RETRY_S while unconfirmed (the pause
doubling up to STOP_RETRY_MAX_S), and after STOP_ALARM_S the state is "stop_failed" with a dtu.alarm. An "off"
inverter that shows output is stopped again. Power states start "unknown" (a restarted writer assumes nothing):
output seen means "on"; an inverter wanted on that shows no output gets one power on. An inverter with
enable_switch_off = false is never sent power off.

`WriterLoop` is the I/O shell: one thread, its own OpenDtuClient, setpoints arrive through a queue.
"""
from __future__ import annotations

import logging
import math
import queue
import threading
from dataclasses import dataclass, field
from typing import Callable, Optional

from common import messages as m
from common.clock import SYSTEM_CLOCK
from common.config import per_inverter, switch_off_pairs
from common.plausible import RATING_W
from common.settings import SEND_THRESHOLD_PCT   # smaller changes are not sent
from services.dtu_poller.client import (DtuAuthError, DtuError, DtuRejected, LimitStatus, OpenDtuClient)

log = logging.getLogger(__name__)

IDLE_WAKE_S = 2.0             # nothing in flight: setpoints (about 1/s) wake the loop; the watchdog wakes it at its
                              # deadline; retries and refreshes need no finer time
STATUS_POLL_S = 0.5           # /api/limit/status while a command is pending (reference: ~0.5 s; faster polls
                              # load the DTU's ESP32, and cost us CPU, for at most 0.25 s earlier acks)
ACK_TOLERANCE_PCT = 1.0       # Ok + limit_relative within this of the sent value = acknowledged (HMS: whole %)
RETRY_AFTER_FAILURE_S = 5.0
RETRY_AFTER_AUTH_S = 30.0
REFUSAL_REPEAT_S = 30.0       # a repeated refusal (rate_limited, read_only) is published at most this often
ALARM_REPEAT_S = 5.0
FLAGS_REFRESH_S = 60.0        # /api/inverter/list (command_enable flags)
MAX_SLOTS = 64                # inverters the writer keeps state for (hostile setpoints cannot grow it)
MAX_REFUSAL_KEYS = 1000
STOP_CONFIRM_W = 5.0          # AC power at or below this in a sample newer than the power-off ack: stopped
STOP_RETRY_S = 15.0           # a stop round (minimum limit, power off) at most this often while unconfirmed,
STOP_RETRY_MAX_S = 300.0      # doubling up to this (a DTU that refuses every power command is not flooded)
STOP_ALARM_S = 45.0           # a stop unconfirmed this long since its first round: stop_failed + dtu.alarm
POWER_STATES = ("unknown", "on", "stopping", "stop_failed", "off")


@dataclass(frozen=True)
class WriterParams:
    min_pct: float = 1.0
    setpoint_timeout_s: float = 10.0
    ack_timeout_s: float = 15.0
    restart_min_interval_s: float = 600.0
    reboot_min_interval_s: float = 3600.0
    limit_refresh_s: float = 60.0
    can_control: bool = True
    switch_off: tuple = ()          # ((id, enable_switch_off), ...) from [inverter.<id>] (common.config)
    gateway: str = "OpenDTU"        # the gateway's name in logs and details (services/dtu_poller/gateway.py)

    @classmethod
    def from_config(cls, cfg) -> "WriterParams":
        o = cfg.opendtu
        return cls(min_pct=float(cfg.control.min_percent), setpoint_timeout_s=o.setpoint_timeout_s,
                   ack_timeout_s=o.limit_ack_timeout_s, restart_min_interval_s=o.inverter_restart_min_interval_s,
                   reboot_min_interval_s=o.dtu_reboot_min_interval_s, limit_refresh_s=o.limit_refresh_s,
                   can_control=bool(o.password), switch_off=switch_off_pairs(cfg))


@dataclass
class Command:
    """What the I/O shell must send now."""
    kind: str                        # limit | power_on | power_off | restart | dtu_reboot
    serial: Optional[str]
    limit_pct: Optional[float] = None
    setpoint_seq: Optional[int] = None
    reason: Optional[str] = None


@dataclass
class _InFlight:
    command: Command
    sent_t: float


@dataclass
class _Slot:
    desired_pct: Optional[float] = None
    desired_seq: Optional[int] = None
    desired_reason: Optional[str] = None
    acked_pct: Optional[float] = None
    acked_t: Optional[float] = None
    failed: bool = False
    failed_pct: Optional[float] = None   # the highest limit that failed or timed out since the last Ok: the DTU may
                                         # still re-send and apply it (cleared by an acknowledged limit)
    retry_at: float = 0.0
    in_flight: Optional[_InFlight] = None
    restart_wanted: bool = False
    restart_seq: Optional[int] = None
    last_restart_t: Optional[float] = None
    fail_count: int = 0          # limit failures in a row (for log throttling)
    desired_on: Optional[bool] = None   # the setpoint's "on": False = stop it, True = may run, None = not said
    power_state: str = "unknown"        # POWER_STATES; only a sample of its output makes it "on" or "off"
    sample: Optional[tuple] = None      # (ac_power_w, sample_t) of the newest sample
    stop_min_sent: bool = False         # this stop round's minimum limit went out: power off is next
    next_stop_t: float = float("-inf")  # the next stop round may start then
    stop_first_t: Optional[float] = None   # first round of the current unconfirmed stop
    stop_rounds: int = 0                # rounds of the current unconfirmed stop
    off_ack_t: Optional[float] = None   # power off acknowledged (a confirming sample must be newer)
    start_sent: bool = False            # one power on for an inverter of unknown state that shows no output
    stop_alarmed: bool = False          # a stop_unconfirmed alarm is active for it
    rating_w: Optional[float] = None    # W at 100 %, as the controller counts it (from limit_w / limit_pct)
    cut_logged: bool = False            # a raise cut to the room under the cap was logged (once until uncut)
    readback_pct: Optional[float] = None   # the limit the DTU reported at its last poll (> 0 only: 0 = not known)


def _worth_logging(count: int) -> bool:
    return count in (1, 10, 100) or count % 1000 == 0


@dataclass
class WriterMachine:
    params: WriterParams
    start_t: float
    slots: dict = field(default_factory=dict)
    reachable: set = field(default_factory=set)
    known_serials: list = field(default_factory=list)
    last_setpoint_t: Optional[float] = None
    watchdog_active: bool = False
    last_alarm_t: Optional[float] = None
    reboot_wanted: bool = False
    reboot_seq: Optional[int] = None
    last_reboot_t: Optional[float] = None
    last_status_poll_t: Optional[float] = None
    refusals: dict = field(default_factory=dict)
    command_flags: dict = field(default_factory=dict)   # serial -> (command_enable, command_enable_night)
    cap_w: Optional[float] = None     # the total the newest setpoint's limits keep to (W), if it said

    def slot(self, serial: str) -> _Slot:
        return self.slots.setdefault(serial, _Slot())

    # ------------------------------------------------------------ inputs
    def on_setpoint(self, body: dict, seq: Optional[int], msg_t: float, now: float) -> list:
        """A ctrl.setpoint. Older than setpoint_timeout_s (a stuck or replayed sender): ignored."""
        if now - msg_t > self.params.setpoint_timeout_s:
            return []
        out = []
        self.last_setpoint_t = now
        if self.watchdog_active:
            self.watchdog_active = False
            log.warning("setpoints are back: watchdog released")
            out.append((m.DTU_ALARM, {"kind": "setpoint_watchdog", "active": False,
                                      "detail": "setpoints received again"}))
        self.cap_w = body.get("cap_w")
        for item in body.get("limits", []):
            serial = item["serial"].lower()
            if not self._accept_serial(serial):
                out += self._refuse(serial[:16], "limit", "rejected", now, seq, self.clamp(item["limit_pct"]),
                                    detail="unknown inverter: not listed by the DTU")
                continue
            slot = self.slot(serial)
            limit_w = item.get("limit_w")
            # the controller's rating; an implausible one (not positive, beyond any inverter) is not used: the raise
            # then waits for the reductions as without a cap
            rating_w = limit_w * 100.0 / item["limit_pct"] if limit_w and limit_w > 0 and item["limit_pct"] > 0 \
                else None
            slot.rating_w = rating_w if rating_w is not None and rating_w <= RATING_W.high else None
            slot.desired_pct = self.clamp(item["limit_pct"])
            slot.desired_seq = seq
            slot.desired_reason = item.get("reason")
            slot.desired_on = item.get("on")
            if slot.desired_on is False:     # stopping or held (enable_switch_off = false): at the minimum
                slot.desired_pct = self.params.min_pct
            if not self.params.can_control:
                out += self._refuse(serial, "limit", "read_only", now, seq, slot.desired_pct)
            elif self.commands_disabled(serial):
                out += self._refuse(serial, "limit", "rejected", now, seq, slot.desired_pct,
                                    detail=f"commands disabled for this inverter in {self.params.gateway}")
            elif self.known_serials and serial not in self.reachable:
                out += self._refuse(serial, "limit", "error", now, seq, slot.desired_pct,
                                    detail="inverter not reachable: limit held until it is")
        for serial in body.get("restart", []) or []:
            serial = serial.lower()
            if not self._accept_serial(serial):
                out += self._refuse(serial[:16], "restart", "rejected", now, seq,
                                    detail="unknown inverter: not listed by the DTU")
                continue
            slot = self.slot(serial)
            if not self.params.can_control:
                out += self._refuse(serial, "restart", "read_only", now, seq)
            elif slot.last_restart_t is not None \
                    and now - slot.last_restart_t < self.params.restart_min_interval_s:
                out += self._refuse(serial, "restart", "rate_limited", now, seq,
                                    detail=f"last restart {now - slot.last_restart_t:.0f} s ago, minimum "
                                           f"{self.params.restart_min_interval_s:.0f} s")
            else:
                slot.restart_wanted, slot.restart_seq = True, seq
        if body.get("dtu_reboot"):
            if not self.params.can_control:
                out += self._refuse(None, "dtu_reboot", "read_only", now, seq)
            elif self.last_reboot_t is not None and now - self.last_reboot_t < self.params.reboot_min_interval_s:
                out += self._refuse(None, "dtu_reboot", "rate_limited", now, seq,
                                    detail=f"last reboot {now - self.last_reboot_t:.0f} s ago, minimum "
                                           f"{self.params.reboot_min_interval_s:.0f} s")
            else:
                self.reboot_wanted, self.reboot_seq = True, seq
        return out

    def _accept_serial(self, serial: str) -> bool:
        """Listed by the DTU (once it has listed anything); a bounded number of slots either way."""
        if self.known_serials:
            return serial in self.known_serials
        return serial in self.slots or len(self.slots) < MAX_SLOTS

    def on_inventory(self, serials: list, reachable: set, limits: dict, poll_t: Optional[float],
                     samples: Optional[dict] = None, now: Optional[float] = None) -> None:
        """From the reader: inverters in DTU order, the reachable ones, limit_pct read at poll_t, and
        samples {serial: (ac_power_w, sample_t)}.

        An inverter seen for the first time gets the minimum until the controller says more. A read-back limit
        that differs from what we had acknowledged (inverter restarted, DTU rebooted) makes the acknowledged value
        unknown, so the desired limit is sent again. Samples confirm stops (see the module doc)."""
        for serial in serials:
            if serial not in self.slots:
                slot = self.slot(serial)
                slot.desired_pct, slot.desired_reason = self.params.min_pct, "first seen: minimum until controlled"
        self.known_serials = list(serials)
        self.reachable = set(reachable)
        for serial, (ac_w, sample_t) in (samples or {}).items():
            if serial in self.slots:
                self._on_sample(serial, self.slots[serial], ac_w, sample_t, now if now is not None else sample_t)
        for serial, limit_pct in limits.items():
            slot = self.slots.get(serial)
            if slot is not None and limit_pct is not None:
                slot.readback_pct = limit_pct if limit_pct > 0 else None
            if slot is None or slot.in_flight or slot.acked_pct is None or limit_pct is None or poll_t is None:
                continue
            if poll_t > (slot.acked_t or 0) + 1.0 and abs(limit_pct - slot.acked_pct) >= ACK_TOLERANCE_PCT:
                log.info("inverter %s: DTU reports limit %.1f %%, acknowledged was %.1f %%: sending again",
                         serial, limit_pct, slot.acked_pct)
                slot.acked_pct = None

    def _on_sample(self, serial: str, slot: _Slot, ac_w: Optional[float], sample_t: float, now: float) -> None:
        if ac_w is None or (slot.sample is not None and sample_t <= slot.sample[1]):
            return
        slot.sample = (ac_w, sample_t)
        producing = ac_w > STOP_CONFIRM_W
        if slot.power_state == "unknown" and producing:
            slot.power_state = "on"                     # learned: it runs
        elif slot.power_state in ("stopping", "stop_failed") and not producing \
                and slot.off_ack_t is not None and sample_t > slot.off_ack_t:
            log.info("inverter %s: stop confirmed (%.0f W)", serial, ac_w)
            slot.power_state, slot.stop_first_t = "off", None
        elif slot.power_state == "off" and producing and slot.desired_on is False \
                and (slot.off_ack_t is None or sample_t > slot.off_ack_t):
            log.warning("inverter %s: stopped, but delivers %.0f W: stopping it again", serial, ac_w)
            slot.power_state, slot.off_ack_t, slot.stop_min_sent = "stopping", None, False
            slot.stop_first_t, slot.stop_rounds = now, 0

    def _stop_alarm(self, serial: str, active: bool, detail: str) -> tuple:
        return (m.DTU_ALARM, {"kind": "stop_unconfirmed", "serial": serial, "active": active,
                              "detail": f"inverter {serial}: {detail}"})

    def may_switch_off(self, serial: str) -> bool:
        index = self.known_serials.index(serial) if serial in self.known_serials else None
        return per_inverter(self.params.switch_off, serial, index, True)

    def power_states(self) -> dict:
        return {serial: slot.power_state for serial, slot in self.slots.items()}

    def on_command_flags(self, flags: dict) -> None:
        """From /api/inverter/list. With command_enable off OpenDTU answers "success" and sends nothing
        (docs/opendtu-api.md §4), so such an inverter gets no limit and the controller a refusal instead."""
        for serial, (day, night) in flags.items():
            if flags.get(serial) != self.command_flags.get(serial):
                if not day:
                    log.warning("inverter %s: commands are disabled in %s: no limit can be applied", serial,
                                self.params.gateway)
                elif not night:
                    setting = "'command at night' is off" if self.params.gateway == "OpenDTU" \
                        else "'pause at night' is on"
                    log.warning("inverter %s: %s in %s: limits are ignored at night (battery-fed inverters need "
                                "commands at night)", serial, setting, self.params.gateway)
        self.command_flags = dict(flags)

    def commands_disabled(self, serial: str) -> bool:
        flags = self.command_flags.get(serial)
        return flags is not None and not flags[0]

    def clamp(self, pct: float) -> float:
        return round(min(100.0, max(self.params.min_pct, float(pct))), 1)

    # ------------------------------------------------------------ time
    def tick(self, now: float) -> list:
        """Watchdog and ack timeouts."""
        out = []
        since = self.last_setpoint_t if self.last_setpoint_t is not None else self.start_t
        if now - since > self.params.setpoint_timeout_s:
            if not self.watchdog_active:
                self.watchdog_active = True
                log.warning("no setpoint for %.0f s: every reachable inverter to its safe minimum %.1f %%",
                            now - since, self.params.min_pct)
                out.append(self._alarm(now, since))
            elif now - self.last_alarm_t >= ALARM_REPEAT_S:
                out.append(self._alarm(now, since))
            for serial in self.reachable:
                slot = self.slot(serial)
                if slot.desired_pct != self.params.min_pct or slot.desired_reason != "watchdog":
                    slot.desired_pct, slot.desired_seq, slot.desired_reason = self.params.min_pct, None, "watchdog"
                slot.restart_wanted = False
            self.reboot_wanted = False
        for serial, slot in self.slots.items():
            if slot.power_state == "stopping" and slot.stop_first_t is not None \
                    and now - slot.stop_first_t > STOP_ALARM_S:
                slot.power_state, slot.stop_alarmed = "stop_failed", True
                log.error("inverter %s: stop not confirmed for %.0f s (still %s W): alarm", serial,
                          now - slot.stop_first_t, "?" if slot.sample is None else f"{slot.sample[0]:.0f}")
                out.append(self._stop_alarm(serial, True, f"stop not confirmed for {now - slot.stop_first_t:.0f} s"))
            elif slot.stop_alarmed and slot.power_state != "stop_failed":
                slot.stop_alarmed = False
                out.append(self._stop_alarm(serial, False, f"now {slot.power_state}"))
            flight = slot.in_flight
            if flight is not None and flight.sent_t is not None \
                    and now - flight.sent_t > self.params.ack_timeout_s:
                out.append(self._finish(serial, slot, "timeout", now,
                                        detail=f"no Ok/Failure within {self.params.ack_timeout_s:g} s"))
        return out

    def _alarm(self, now: float, since: float) -> tuple:
        self.last_alarm_t = now
        return (m.DTU_ALARM, {"kind": "setpoint_watchdog", "active": True,
                              "detail": f"no setpoint for {now - since:.0f} s: inverters at "
                                        f"{self.params.min_pct:g} %"})

    def next_command(self, now: float) -> Optional[Command]:
        """The next command to send, marked as in flight. None: nothing to do now."""
        if not self.params.can_control:
            return None
        if self.reboot_wanted:
            self.reboot_wanted = False
            return Command("dtu_reboot", None, setpoint_seq=self.reboot_seq)
        order = self.known_serials + sorted(s for s in self.slots if s not in self.known_serials)
        for serial in order:
            slot = self.slots.get(serial)
            if slot is None or slot.in_flight is not None or now < slot.retry_at:
                continue
            if slot.restart_wanted:
                slot.restart_wanted = False
                if slot.last_restart_t is not None \
                        and now - slot.last_restart_t < self.params.restart_min_interval_s:
                    continue
                cmd = Command("restart", serial, setpoint_seq=slot.restart_seq)
                slot.in_flight = _InFlight(cmd, None)
                return cmd
            if slot.desired_pct is None or serial not in self.reachable or self.commands_disabled(serial):
                continue                  # only to inverters the DTU lists, reaches and may command
            unchanged = slot.acked_pct is not None and not slot.failed \
                and abs(slot.desired_pct - slot.acked_pct) < SEND_THRESHOLD_PCT
            if slot.desired_on is False and self.may_switch_off(serial):
                cmd = self._stop_round(serial, slot, unchanged, now)
                if cmd is not None:
                    slot.in_flight = _InFlight(cmd, None)
                    return cmd
                continue
            if unchanged and now - (slot.acked_t or 0) < self.params.limit_refresh_s:
                if slot.desired_on is True and self._wants_start(slot):     # its limit first, then start it
                    if not self._fits_under_cap(serial, slot, slot.acked_pct) \
                            and any(self._lowering(other, o) for other, o in self.slots.items() if other != serial):
                        continue              # a start adds its limit to the sum: it waits for the reductions too
                    slot.start_sent = slot.power_state == "unknown"
                    cmd = Command("power_on", serial, setpoint_seq=slot.desired_seq, reason=slot.desired_reason)
                    slot.in_flight = _InFlight(cmd, None)
                    return cmd
                continue
            pct = slot.desired_pct
            reason = f"refresh (unchanged for {self.params.limit_refresh_s:g} s)" if unchanged else slot.desired_reason
            if not unchanged and self._raises(slot):
                room_pct = self._room_pct(serial, slot)
                if room_pct is None or pct > room_pct:
                    if any(self._lowering(other, o) for other, o in self.slots.items() if other != serial):
                        continue  # a raise waits for the reductions that make room for it: the sum stays under the cap
                    if room_pct is not None:   # nothing pending will make room: only what fits under the cap
                        if not slot.cut_logged:
                            slot.cut_logged = True
                            log.warning("inverter %s: raise to %.1f %% cut to %.1f %%: the limits that may be in "
                                        "force on the other inverters leave no more under the cap of %.0f W",
                                        serial, pct, room_pct, self.cap_w)
                        if slot.acked_pct is not None and not slot.failed \
                                and room_pct < slot.acked_pct + SEND_THRESHOLD_PCT:
                            continue
                        pct, reason = max(self.params.min_pct, room_pct), "raise cut to the room under the cap"
                else:
                    slot.cut_logged = False
            cmd = Command("limit", serial, pct, slot.desired_seq, reason)
            slot.in_flight = _InFlight(cmd, None)
            return cmd
        return None

    def _raises(self, slot: _Slot) -> bool:
        """Its wanted limit is above the highest that may be in force (`_possible_pct`; or nothing is known of
        that), and above the minimum. Measured against the same figure as `_lowering`, so an inverter that holds
        others' raises back is never held back itself (two of them could otherwise wait for each other)."""
        possible = self._possible_pct(slot)
        return slot.desired_pct is not None and slot.desired_pct > self.params.min_pct \
            and (possible is None or slot.desired_pct >= possible + SEND_THRESHOLD_PCT)

    @staticmethod
    def _possible_pct(slot: _Slot) -> Optional[float]:
        """The highest limit that may be in force on this inverter now or soon: the acknowledged one (unknown after
        a restart, a DTU reboot or a read-back that differed: then the one the DTU last reported), the one in
        flight, and one that failed or timed out (the DTU may re-send and apply it). None: nothing known of the one
        in force (first seen, nothing acknowledged and no read-back yet)."""
        pct = slot.acked_pct if slot.acked_pct is not None else slot.readback_pct
        if pct is None:
            return None
        flight = slot.in_flight
        if flight is not None and flight.command.kind == "limit" and flight.command.limit_pct is not None:
            pct = max(pct, flight.command.limit_pct)
        if slot.failed_pct is not None:
            pct = max(pct, slot.failed_pct)
        return pct

    def _room_pct(self, serial: str, slot: _Slot) -> Optional[float]:
        """The highest limit this inverter may be sent with the sum of what may be in force on the others
        (`_possible_pct`) staying within the setpoint's cap (+1 W for rounding), floored to 0.1 %. None: anything
        unknown (no cap, a rating or a limit in force): then a raise waits only for known reductions."""
        if self.cap_w is None or slot.rating_w is None:
            return None
        others_w = 0.0
        for other, o in self.slots.items():
            if other == serial:
                continue
            pct = self._possible_pct(o)
            if o.rating_w is None or pct is None:
                return None
            others_w += pct * o.rating_w / 100.0
        room_pct = (self.cap_w + 1.0 - others_w) * 100.0 / slot.rating_w
        return min(100.0, max(0.0, math.floor(room_pct * 10.0 + 1e-6) / 10.0))

    def _fits_under_cap(self, serial: str, slot: _Slot, pct: float) -> bool:
        """`pct` on this inverter keeps the sum of what may be in force within the cap (False when unknown)."""
        room_pct = self._room_pct(serial, slot)
        return room_pct is not None and pct <= room_pct

    def _lowering(self, serial: str, slot: _Slot) -> bool:
        """A reduction of this inverter below what may be in force (`_possible_pct`) is wanted or on its way and
        not yet acknowledged. The controller keeps the sum of its setpoints under the cap, but the limits on the
        wire change one inverter at a time: a raise sent before another inverter's reduction took effect (or while
        its failed higher limit may still be re-sent) would put the sum above the cap for the ack's latency. An
        inverter we cannot command (unreachable, commands disabled) holds nothing up."""
        possible = self._possible_pct(slot)
        if possible is None or slot.desired_pct is None or serial not in self.reachable \
                or self.commands_disabled(serial):
            return False
        flying = slot.in_flight is not None and slot.in_flight.command.kind == "limit" \
            and slot.in_flight.command.limit_pct is not None and slot.in_flight.command.limit_pct < possible
        return flying or slot.desired_pct <= possible - SEND_THRESHOLD_PCT

    def _stop_round(self, serial: str, slot: _Slot, at_min: bool, now: float) -> Optional[Command]:
        """The next command of a stop: the minimum limit (unless in force), then power off; None: nothing now.
        A confirmed ("off") inverter gets nothing (not even limits) until a sample shows output."""
        if slot.power_state == "off" or now < slot.next_stop_t:
            return None
        if slot.power_state not in ("stopping", "stop_failed"):
            slot.power_state, slot.off_ack_t, slot.stop_first_t, slot.stop_rounds = "stopping", None, now, 0
        if not slot.stop_min_sent and not at_min:
            slot.stop_min_sent = True
            return Command("limit", serial, self.params.min_pct, slot.desired_seq, "stop: the minimum limit first")
        slot.stop_min_sent = False
        slot.stop_rounds += 1
        slot.next_stop_t = now + min(STOP_RETRY_MAX_S, STOP_RETRY_S * 2 ** min(slot.stop_rounds - 1, 10))
        return Command("power_off", serial, setpoint_seq=slot.desired_seq, reason=slot.desired_reason)

    @staticmethod
    def _wants_start(slot: _Slot) -> bool:
        """A power on for one we stopped, or (once) for one of unknown state whose newest sample shows no output."""
        if slot.power_state in ("off", "stopping", "stop_failed"):
            return True
        return slot.power_state == "unknown" and not slot.start_sent and slot.sample is not None \
            and slot.sample[0] <= STOP_CONFIRM_W

    def on_sent(self, cmd: Command, sent_t: float, error: Optional[DtuError], now: float) -> list:
        """The POST of `cmd` left at sent_t; error None = the DTU said success."""
        if cmd.kind == "dtu_reboot":
            if error is None or not isinstance(error, (DtuRejected, DtuAuthError)):
                self.last_reboot_t = sent_t      # counted even if the answer was lost: no reboot loops
            if error is None:
                for slot in self.slots.values():
                    slot.acked_pct = None
                return [self._ack(None, cmd, "ok", sent_t, now, detail="reboot triggered")]
            return [self._ack(None, cmd, _outcome_of(error), sent_t, now, detail=f"{error.kind}: {error}")]
        slot = self.slot(cmd.serial)
        if cmd.kind == "restart" and (error is None or not isinstance(error, (DtuRejected, DtuAuthError))):
            slot.last_restart_t = sent_t
        if error is not None:
            slot.in_flight = None
            slot.failed = True
            slot.retry_at = now + (RETRY_AFTER_AUTH_S if isinstance(error, DtuAuthError) else RETRY_AFTER_FAILURE_S)
            if cmd.kind == "limit":
                if not isinstance(error, (DtuRejected, DtuAuthError)):   # the POST may have reached the DTU
                    slot.failed_pct = max(slot.failed_pct or 0.0, cmd.limit_pct)
                slot.fail_count += 1
                if _worth_logging(slot.fail_count):
                    log.warning("inverter %s: limit %.1f %% not applied (%s: %s; %d in a row)", cmd.serial,
                                cmd.limit_pct, error.kind, error, slot.fail_count)
            else:
                log.warning("inverter %s: %s not sent (%s: %s)", cmd.serial, cmd.kind, error.kind, error)
            return [self._ack(cmd.serial, cmd, _outcome_of(error), sent_t, now, detail=f"{error.kind}: {error}")]
        slot.in_flight = _InFlight(cmd, sent_t)
        if cmd.kind != "limit":
            log.info("inverter %s: %s sent", cmd.serial, cmd.kind)
        return []

    def status_poll_due(self, now: float) -> Optional[str]:
        """'limit' or 'power' when a status poll is due, else None."""
        kinds = {s.in_flight.command.kind for s in self.slots.values()
                 if s.in_flight is not None and s.in_flight.sent_t is not None}
        if not kinds:
            return None
        if self.last_status_poll_t is not None and now - self.last_status_poll_t < STATUS_POLL_S:
            return None
        self.last_status_poll_t = now
        return "limit" if "limit" in kinds else "power"

    def on_limit_status(self, statuses: dict, now: float) -> list:
        out = []
        for serial, slot in self.slots.items():
            flight = slot.in_flight
            if flight is None or flight.sent_t is None or flight.command.kind != "limit":
                continue
            st: Optional[LimitStatus] = statuses.get(serial)
            if st is None:
                continue
            if st.status == "Failure":
                out.append(self._finish(serial, slot, "failure", now, detail="limit_set_status Failure"))
            elif st.status == "Ok":
                if st.limit_relative_pct is not None \
                        and abs(st.limit_relative_pct - flight.command.limit_pct) <= ACK_TOLERANCE_PCT:
                    out.append(self._finish(serial, slot, "ok", now, applied_t=st.applied_t_mono))
                # Ok with another value: a silent no-op (commands disabled, at night without the night flag)
                # or not yet Pending: wait, then timeout.
        return out

    def on_power_status(self, statuses: dict, now: float) -> list:
        out = []
        for serial, slot in self.slots.items():
            flight = slot.in_flight
            if flight is None or flight.sent_t is None or flight.command.kind == "limit":
                continue
            st = statuses.get(serial)
            if st == "Failure":
                out.append(self._finish(serial, slot, "failure", now, detail="power_set_status Failure"))
            elif st == "Ok":
                out.append(self._finish(serial, slot, "ok", now))
        return out

    # ------------------------------------------------------------ helpers
    def _finish(self, serial: str, slot: _Slot, outcome: str, now: float, detail: Optional[str] = None,
                applied_t: Optional[float] = None) -> tuple:
        """`applied_t`: when the limit took effect, if the DTU proves it only later (AhoyDTU's read-back comes a
        refresh after the inverter's ack): the ack's latency, and the controller's output model, use it."""
        flight = slot.in_flight
        slot.in_flight = None
        cmd = flight.command
        if applied_t is not None and outcome == "ok":
            now = min(now, max(flight.sent_t, applied_t))
        if cmd.kind == "limit":
            if outcome == "ok":
                slot.acked_pct, slot.acked_t, slot.failed, slot.failed_pct = cmd.limit_pct, now, False, None
                if slot.fail_count:
                    log.info("inverter %s: limit %.1f %% applied after %d failure(s)", serial, cmd.limit_pct,
                             slot.fail_count)
                slot.fail_count = 0
            else:                           # failure or timeout: the DTU may still re-send and apply it
                slot.failed = True
                slot.failed_pct = max(slot.failed_pct or 0.0, cmd.limit_pct)
                slot.retry_at = now + RETRY_AFTER_FAILURE_S
                slot.fail_count += 1
                if _worth_logging(slot.fail_count):
                    log.warning("inverter %s: limit %.1f %% NOT applied (%s; %d in a row)", serial,
                                cmd.limit_pct, outcome, slot.fail_count)
        elif cmd.kind == "restart":
            slot.acked_pct = None           # it boots at its persistent limit: send ours again
            if outcome == "ok":
                slot.power_state, slot.start_sent = "unknown", False   # it boots running (or not: nothing assumed)
            log.info("inverter %s: restart %s", serial, outcome)
        elif cmd.kind in ("power_on", "power_off"):
            if outcome == "ok":
                if cmd.kind == "power_off":
                    slot.off_ack_t = now    # "off" only once a newer sample shows no output
                    log.info("inverter %s: power off acknowledged, waiting for a sample to confirm", serial)
                else:
                    slot.power_state, slot.stop_first_t, slot.off_ack_t = "on", None, None
                    log.info("inverter %s started", serial)
            else:
                slot.retry_at = now + RETRY_AFTER_FAILURE_S
                log.warning("inverter %s: %s %s", serial, cmd.kind, outcome)
        return self._ack(serial, cmd, outcome, flight.sent_t, now, detail=detail, latency=True)

    def _ack(self, serial, cmd: Command, outcome: str, sent_t: Optional[float], now: float,
             detail: Optional[str] = None, latency: bool = False) -> tuple:
        command = "limit" if cmd.kind == "limit" else cmd.kind
        body = {"serial": serial, "command": command, "outcome": outcome, "setpoint_seq": cmd.setpoint_seq}
        if cmd.limit_pct is not None:
            body["limit_pct"] = cmd.limit_pct
        if sent_t is not None:
            body["sent_t_mono"] = round(sent_t, 4)
            if latency:
                body["latency_s"] = round(now - sent_t, 4)
        if detail or cmd.reason:
            body["detail"] = (detail or cmd.reason)[:200]
        return (m.DTU_ACK, body)

    def _refuse(self, serial, command: str, outcome: str, now: float, seq, limit_pct=None,
                detail: Optional[str] = None) -> list:
        key = (serial, command, outcome)
        if len(self.refusals) > MAX_REFUSAL_KEYS:
            self.refusals.clear()
        last = self.refusals.get(key)
        if last is not None and now - last < REFUSAL_REPEAT_S:
            return []
        self.refusals[key] = now
        if outcome == "rate_limited":
            log.warning("%s %s refused: %s", command, serial or "DTU", detail)
        body = {"serial": serial, "command": command, "outcome": outcome, "setpoint_seq": seq}
        if limit_pct is not None:
            body["limit_pct"] = limit_pct
        if detail:
            body["detail"] = detail[:200]
        return [(m.DTU_ACK, body)]

    def next_wakeup(self, now: float) -> float:
        """Seconds until something may be due (bounded, the loop also wakes on setpoints)."""
        if any(s.in_flight is not None for s in self.slots.values()):
            return STATUS_POLL_S
        since = self.last_setpoint_t if self.last_setpoint_t is not None else self.start_t
        watchdog_in_s = since + self.params.setpoint_timeout_s - now
        return min(IDLE_WAKE_S, watchdog_in_s + 0.001) if watchdog_in_s >= 0 else IDLE_WAKE_S


def _outcome_of(error: DtuError) -> str:
    return "rejected" if isinstance(error, DtuRejected) else "error"


# ------------------------------------------------------------------ I/O shell

@dataclass
class Inventory:
    """What the reader thread tells the writer thread (under a lock)."""
    lock: threading.Lock = field(default_factory=threading.Lock)
    serials: list = field(default_factory=list)
    reachable: set = field(default_factory=set)
    limits: dict = field(default_factory=dict)
    poll_t: Optional[float] = None
    samples: dict = field(default_factory=dict)      # serial -> (ac_power_w, sample_t)
    version: int = 0
    power_states: dict = field(default_factory=dict)   # the other way: writer -> reader (dtu.inverter)
    on_new: Optional[Callable[[], None]] = None        # wakes the writer: a new inverter gets its minimum at once

    def update(self, serials, reachable, limits, poll_t, samples=None) -> None:
        with self.lock:
            new = not set(serials) <= set(self.serials)
            self.serials, self.reachable, self.limits, self.poll_t = list(serials), set(reachable), dict(limits), poll_t
            self.samples = dict(samples or {})
            self.version += 1
        if new and self.on_new is not None:
            self.on_new()

    def snapshot(self):
        with self.lock:
            return self.version, list(self.serials), set(self.reachable), dict(self.limits), self.poll_t, \
                dict(self.samples)

    def set_power_states(self, states: dict) -> None:
        with self.lock:
            self.power_states = dict(states)

    def get_power_states(self) -> dict:
        with self.lock:
            return dict(self.power_states)


class WriterLoop:
    """Runs the machine in its own thread: setpoints in through `submit`, messages out through `publish`."""

    def __init__(self, client: OpenDtuClient, params: WriterParams, publish: Callable[[str, dict], None],
                 inventory: Inventory, clock=SYSTEM_CLOCK):
        self.client, self.publish, self.inventory, self.clock = client, publish, inventory, clock
        self.machine = WriterMachine(params, start_t=clock.monotonic())
        self.inbox: queue.Queue = queue.Queue(maxsize=1000)
        self.stop_event = threading.Event()
        self._inventory_version = -1
        self._flags_t: Optional[float] = None
        self.beat_t = clock.monotonic()      # heartbeat: the main thread exits the process when it stops
        inventory.on_new = self.wake

    def submit(self, body: dict, seq: Optional[int], msg_t: float) -> None:
        try:
            self.inbox.put_nowait((body, seq, msg_t))
        except queue.Full:
            log.warning("writer inbox full: setpoint dropped (the next one is full state)")

    def wake(self) -> None:
        """From another thread: look at the inventory now (None in the inbox is a wake-up, not a setpoint)."""
        try:
            self.inbox.put_nowait(None)
        except queue.Full:
            pass

    def _emit(self, messages: list) -> None:
        for topic, body in messages:
            self.publish(topic, body)

    def run(self) -> None:
        machine = self.machine
        while not self.stop_event.is_set():
            self.beat_t = self.clock.monotonic()
            try:
                item = self.inbox.get(timeout=machine.next_wakeup(self.clock.monotonic()))
            except queue.Empty:
                item = None
            while item is not None:
                body, seq, msg_t = item
                self._emit(machine.on_setpoint(body, seq, msg_t, self.clock.monotonic()))
                try:
                    item = self.inbox.get_nowait()
                except queue.Empty:
                    item = None
            version, serials, reachable, limits, poll_t, samples = self.inventory.snapshot()
            if version != self._inventory_version:
                self._inventory_version = version
                machine.on_inventory(serials, reachable, limits, poll_t, samples, self.clock.monotonic())
            self._emit(machine.tick(self.clock.monotonic()))
            # A new setpoint leaves at once; the HTTP reads below (flags, status of commands in flight for other
            # inverters) would otherwise delay it by their round trips. Only an inverter whose command flags are
            # not known yet (first seen) waits for them: with commands disabled OpenDTU says "success" for nothing.
            if not set(serials) <= set(machine.command_flags):
                self._refresh_flags(serials)
            self._send_due()
            self._refresh_flags(serials)
            self._poll_status()
            self._send_due()       # commands that became due with an ack seen just now
            self.inventory.set_power_states(machine.power_states())

    def _send_due(self) -> None:
        """Send every command that is due now (at most one per inverter is in flight)."""
        for _ in range(32):
            cmd = self.machine.next_command(self.clock.monotonic())
            if cmd is None or self.stop_event.is_set():
                return
            self._send(cmd)

    def _send(self, cmd: Command) -> None:
        sent_t = self.clock.monotonic()
        error = None
        try:
            if cmd.kind == "limit":
                self.client.set_limit_relative(cmd.serial, cmd.limit_pct)
            elif cmd.kind == "restart":
                self.client.restart_inverter(cmd.serial)
            elif cmd.kind in ("power_on", "power_off"):
                self.client.set_power(cmd.serial, cmd.kind == "power_on")
            elif cmd.kind == "dtu_reboot":
                log.warning("rebooting the DTU (requested by the controller)")
                self.client.reboot_dtu()
        except DtuError as exc:
            error = exc
        self.beat_t = self.clock.monotonic()
        self._emit(self.machine.on_sent(cmd, sent_t, error, self.clock.monotonic()))

    def _refresh_flags(self, serials: list) -> None:
        """The command flags, at start, when the inventory changes and every FLAGS_REFRESH_S (admin call)."""
        now = self.clock.monotonic()
        if not self.machine.params.can_control or not serials:
            return
        if self._flags_t is not None and now - self._flags_t < FLAGS_REFRESH_S \
                and set(serials) <= set(self.machine.command_flags):
            return
        if self._flags_t is not None and now - self._flags_t < RETRY_AFTER_FAILURE_S:
            return
        self._flags_t = now
        try:
            self.machine.on_command_flags(self.client.command_flags())
        except DtuError as exc:
            log.debug("inverter list failed (%s: %s)", exc.kind, exc)

    def _poll_status(self) -> None:
        kind = self.machine.status_poll_due(self.clock.monotonic())
        if kind is None:
            return
        try:
            if kind == "limit":
                self._emit(self.machine.on_limit_status(self.client.limit_status(), self.clock.monotonic()))
            if kind == "power" or any(s.in_flight and s.in_flight.command.kind != "limit"
                                      for s in self.machine.slots.values()):
                self._emit(self.machine.on_power_status(self.client.power_status(), self.clock.monotonic()))
        except DtuError as exc:
            log.debug("status poll failed (%s: %s); the ack timeout decides", exc.kind, exc)
