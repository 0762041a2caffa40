"""Policies for the closed loop. Each has `name`, optional `wake_interval_s`, `reset(loop)` and
`step(events, now_mono) -> [(topic, body)]` with bus bodies per common/messages.py (the same contract as
services/controller/core.py). All aim at the same grid target tau (`site.zero_point_w`) and respect the same feed-in
budget min(max_feed_in - balcony, sum of maxima, 0.967 x V x DCL).

* `project`, `seed`: the controller's pure core (`services.controller.core.step`) with law "project" / "seed".
* `dpl`: OpenDTU-OnBattery's Dynamic Power Limiter (docs/control.md §3.1): deadbeat law
  target = sum of reported AC outputs + meter - tau, with its gating: no command pending; for every inverter the
  first stats taken after its last ack; a meter reading that arrived > 2 s after the newest of those; backoff
  128 ms doubling to 1024 ms after a calculation that sent nothing; hysteresis 0 W; per-inverter lower limit 10 W.
* `hze`: HoymilesZeroExport (§3.2, v1.48 loop with v1.102's per-inverter ack wait): 20 s loop, meter every 1 s;
  a reading above MAX_POINT jumps to 100 % at once; otherwise at the loop end new = previous setpoint + meter - target
  outside the tolerance, reductions larger than 20 % of max get 20 % of the difference added back ("slow approx");
  inverters set one after the other, each waiting for its ack; min 5 %. Its target -75 W / tolerance 25 W /
  MAX_POINT 0 W are shifted to the common tau: target tau, tolerance 25 W, MAX_POINT tau + 75 W.
* `oracle_delay`: knows the true present net load (no meter delay, no noise, no DTU stats) and commands
  clip(N(t) - tau, P_min.., P_max) every tick (when it moved >= 5 W) through the same writer, ack latency, dead time and ramps (§5 (3),
  margin b = 0).
* `oracle`: clairvoyant, computed outside the loop (bench/oracle.py).

All reach the inverters through the product's DTU writer (bench/loop.py): a limit is sent only when it differs from
the acknowledged one by the writer's send threshold, and never below the configured minimum percent. The baselines
compare what they asked for with what the writer will put on the wire (`wire_pct`), so that a change the writer
does not send is not awaited as pending.
"""
from __future__ import annotations

from typing import Optional

from bench.plantcfg import product_config
from common import messages as M
from services.dtu_poller.writer import SEND_THRESHOLD_PCT


def allocate_w(total_w: float, specs: list) -> list[float]:
    """Split a total over inverters proportionally to their maxima, using fewer inverters when a share would fall
    below an inverter's minimum. `specs`: [(max_w, min_w)]. Returns W per inverter (0 = off)."""
    n = len(specs)
    out = [0.0] * n
    if total_w <= 0:
        return out
    active = list(range(n))
    while active:
        cap = sum(specs[i][0] for i in active)
        factor = min(1.0, total_w / cap)
        if all(factor * specs[i][0] >= specs[i][1] for i in active) or len(active) == 1:
            for i in active:
                out[i] = factor * specs[i][0]
            return out
        active.pop()
    return out


def setpoint_body(serials: list, max_ws: list, limits_w: list, reason: str) -> dict:
    return {"limits": [{"serial": s, "limit_pct": round(min(100.0, max(0.0, w * 100.0 / m)), 1),
                        "limit_w": round(w, 1)} for s, m, w in zip(serials, max_ws, limits_w)],
            "reason": reason}


class _Base:
    name = "?"
    wake_interval_s: Optional[float] = None
    repeat_setpoint_s = 1.0          # the loop repeats the last setpoint (these policies send only changes)
    min_pct = float(product_config().control.min_percent)      # the writer's floor

    def wire_pct(self, pct: float) -> float:
        """The limit the writer sends for `pct`."""
        return round(min(100.0, max(self.min_pct, pct)), 1)

    @staticmethod
    def same_pct(a: Optional[float], b: float) -> bool:
        """Within the writer's send threshold: it would not send b after a."""
        return a is not None and abs(a - b) < SEND_THRESHOLD_PCT

    def reset(self, loop) -> None:
        self.loop = loop
        plant = loop.plant
        self.tau_w = plant.site.zero_point_w
        self.max_feed_in_w = plant.site.max_feed_in_w
        self.serials = [inv.serial for inv in plant.inverters]
        self.max_ws = [inv.max_w for inv in plant.inverters]
        self.min_ws = [inv.min_w for inv in plant.inverters]
        self.balcony_w = 0.0
        self.battery_w = float("inf")
        self.meter_w: Optional[float] = None
        self.meter_t = -1e9
        self.ac_w = {s: 0.0 for s in self.serials}
        self.stats_t = {s: -1e9 for s in self.serials}
        self.acked = {s: None for s in self.serials}
        self.ack_t = {s: -1e9 for s in self.serials}

    def budget_w(self) -> float:
        return max(0.0, min(self.max_feed_in_w - self.balcony_w, sum(self.max_ws), self.battery_w))

    def observe(self, events) -> None:
        for topic, body in events:
            if topic == M.METER_GRID:
                self.meter_w = body["power_w"]
                self.meter_t = body["sample_t_mono"]
            elif topic == M.METER_BALCONY:
                self.balcony_w = max(0.0, body["power_w"])
            elif topic == M.VENUS_BATTERY:
                if body["voltage_v"] and body["dcl_a"] is not None:
                    self.battery_w = 0.967 * body["voltage_v"] * body["dcl_a"]
            elif topic == M.DTU_INVERTER:
                serial = body["serial"]
                if serial in self.ac_w and body["ac_power_w"] is not None:
                    self.ac_w[serial] = body["ac_power_w"]
                    if self.acked[serial] is None:
                        self.acked[serial] = body["limit_pct"]
                    self.on_stats(serial, body["sample_t_mono"])
            elif topic == M.DTU_ACK:
                serial = body["serial"]
                if serial in self.acked and body["command"] == "limit" and body["outcome"] == "ok":
                    self.acked[serial] = body.get("limit_pct")
                    self.ack_t[serial] = body["sent_t_mono"] + body["latency_s"]
                    self.on_ack(serial)

    def on_stats(self, serial: str, sample_t: float) -> None:
        self.stats_t[serial] = sample_t

    def on_ack(self, serial: str) -> None:
        pass

    def publish(self, limits_w: list, reason: str) -> list:
        return [(M.CTRL_SETPOINT, setpoint_body(self.serials, self.max_ws, limits_w, reason))]


class DplPolicy(_Base):
    name = "dpl"
    wake_interval_s = 0.128          # the DPL loop runs continuously; its own backoff decides

    def reset(self, loop) -> None:
        super().reset(loop)
        self.lower_w = [max(10.0, m) for m in self.min_ws]
        self.sent_pct: dict = {s: None for s in self.serials}
        self.first_stats_after_ack = {s: None for s in self.serials}
        self.last_calc = -1e9
        self.backoff_s = 0.0
        self.meter_valid_s = 3 * loop.plant.meter.interval_s + 1.0

    def on_stats(self, serial: str, sample_t: float) -> None:
        super().on_stats(serial, sample_t)
        if self.first_stats_after_ack[serial] is None and sample_t > self.ack_t[serial]:
            self.first_stats_after_ack[serial] = sample_t

    def on_ack(self, serial: str) -> None:
        self.first_stats_after_ack[serial] = None

    def step(self, events, now):
        self.observe(events)
        for s in self.serials:
            sent = self.sent_pct[s]
            if sent is not None and not self.same_pct(self.acked[s], sent):
                return []                                             # a command is pending
        latest = -1e9
        for s in self.serials:
            first = self.first_stats_after_ack[s]
            if first is None:
                return []                                             # stats after the ack pending
            latest = max(latest, first)
        if self.meter_w is None or now - self.meter_t > self.meter_valid_s:
            return []
        if self.meter_t <= latest + 2.0:
            return []                                                 # meter not > 2 s after the stats
        if now - self.last_calc < self.backoff_s:
            return []
        self.last_calc = now
        target = sum(self.ac_w.values()) + self.meter_w - self.tau_w
        target = min(max(target, 0.0), self.budget_w())
        limits = allocate_w(target, list(zip(self.max_ws, self.lower_w)))
        pcts = [self.wire_pct(w * 100.0 / m) for w, m in zip(limits, self.max_ws)]
        changed = any(not self.same_pct(self.sent_pct[s], p) for s, p in zip(self.serials, pcts))
        if not changed:
            self.backoff_s = min(1.024, max(0.128, self.backoff_s * 2))
            return []
        self.backoff_s = 0.0
        for s, p in zip(self.serials, pcts):
            self.sent_pct[s] = p
        return self.publish(limits, "dpl")


class HzePolicy(_Base):
    name = "hze"
    wake_interval_s = 0.5            # ack polling every 0.5 s

    LOOP_S = 20.0
    TOLERANCE_W = 25.0
    SLOW_APPROX_PCT = 20.0
    SLOW_APPROX_FACTOR_PCT = 20.0
    MIN_PCT = 5.0
    ACK_WAIT_S = 10.0

    def reset(self, loop) -> None:
        super().reset(loop)
        self.target_w = self.tau_w
        self.max_point_w = self.tau_w + 75.0
        self.previous_w = 0.0
        self.new_w = 0.0
        self.loop_start = None
        self.polls = 0
        self.jumped = False
        self.queue: list = []                 # inverters still to set in this SetLimit
        self.waiting: Optional[tuple] = None  # (serial, pct, since)
        self.sleep_until = None
        self.last_meter_seen = None
        self.limits_w = [0.0] * len(self.serials)
        self.hoy_max = []

    def _hoy_max(self) -> list:
        total = sum(self.max_ws)
        budget = self.budget_w()
        return [budget * m / total for m in self.max_ws]

    def _apply_limits(self, total_w: float) -> float:
        hoy = self._hoy_max()
        low = sum(h * self.MIN_PCT / 100.0 for h in hoy)
        return min(max(total_w, low), sum(hoy))

    def _set_limit(self, total_w: float, now: float) -> None:
        hoy = self._hoy_max()
        total_max = sum(hoy)
        self.queue = []
        for i, h in enumerate(hoy):
            share = int(total_w * h / total_max) if total_max > 0 else 0
            share = min(max(share, h * self.MIN_PCT / 100.0), h)
            self.queue.append((i, share))
        self._next_in_queue(now)

    def _next_in_queue(self, now: float) -> list:
        while self.queue:
            i, share = self.queue.pop(0)
            self.limits_w[i] = share
            pct = self.wire_pct(share * 100.0 / self.max_ws[i])
            serial = self.serials[i]
            if self.same_pct(self.acked[serial], pct):
                continue                      # unchanged: nothing is sent
            self.waiting = (serial, pct, now)
            return self.publish(list(self.limits_w), "hze")
        self.waiting = None
        return []

    def step(self, events, now):
        self.observe(events)
        out = []
        if self.loop_start is None:
            self.loop_start = now
            self.previous_w = self.new_w = self._apply_limits(0.0)
            self._set_limit(self.new_w, now)
            return self.publish(list(self.limits_w), "hze init")
        if self.waiting is not None:
            serial, pct, since = self.waiting
            done = self.same_pct(self.acked[serial], pct)
            if not done and now - since < self.ACK_WAIT_S:
                return []
            out = self._next_in_queue(now)
            if self.waiting is not None:
                return out
            # SetLimit finished
            if self.jumped:
                self.sleep_until = self.loop_start + self.LOOP_S
            else:
                self._new_loop(now)
            return out
        if self.sleep_until is not None:
            if now < self.sleep_until:
                return []
            self.sleep_until = None
            self._new_loop(now)
        fresh = self.meter_t != self.last_meter_seen and self.meter_w is not None
        if not fresh:
            return []
        self.last_meter_seen = self.meter_t
        meter = self.meter_w
        self.polls += 1
        if meter > self.max_point_w:
            self.new_w = self._apply_limits(sum(self._hoy_max()))        # ON_GRID_USAGE_JUMP_TO_LIMIT_PERCENT 100
            self.jumped = True
            self._set_limit(self.new_w, now)
            if self.waiting is None:
                self.sleep_until = self.loop_start + self.LOOP_S
            return self.publish(list(self.limits_w), "hze jump")
        if self.polls < int(self.LOOP_S):
            return []
        hoy_total = sum(self._hoy_max())
        if meter < self.target_w - self.TOLERANCE_W:
            if self.previous_w >= hoy_total:
                actual = sum(self.ac_w.values())
                new = actual + meter - self.target_w
                diff = abs(actual - new)
                if diff > hoy_total * self.SLOW_APPROX_PCT / 100.0:
                    new += diff * self.SLOW_APPROX_FACTOR_PCT / 100.0
                new = min(new, actual)
            else:
                new = self.previous_w + meter - self.target_w
                diff = abs(self.previous_w - new)
                if diff > hoy_total * self.SLOW_APPROX_PCT / 100.0:
                    new += diff * self.SLOW_APPROX_FACTOR_PCT / 100.0
        elif meter > self.target_w + self.TOLERANCE_W and self.previous_w < hoy_total:
            new = self.previous_w + meter - self.target_w
        else:
            new = self.previous_w
        self.new_w = self._apply_limits(new)
        self.jumped = False
        self._set_limit(self.new_w, now)
        if self.waiting is None:
            self._new_loop(now)
            return []
        return self.publish(list(self.limits_w), "hze regulate")

    def _new_loop(self, now: float) -> None:
        self.previous_w = self.new_w
        self.loop_start = now
        self.polls = 0
        self.jumped = False


class OracleDelayPolicy(_Base):
    name = "oracle_delay"
    DEADBAND_W = 5.0                 # keeps the one-command-in-flight channel free (cost unchanged, 1/3 the commands)

    def reset(self, loop) -> None:
        super().reset(loop)
        self.wake_interval_s = loop.tick_s
        self.p_min_w = loop.plant.p_min_w
        self.last_total = None

    def step(self, events, now):
        t = now - self.loop.mono(0.0)
        need = self.loop.net_load_w(t) - self.tau_w
        p_max = self.loop.p_max_now_w(t)
        total = 0.0 if need < self.p_min_w else min(need, p_max)
        if self.last_total is not None and abs(total - self.last_total) < self.DEADBAND_W:
            return []
        self.last_total = total
        return self.publish(allocate_w(total, list(zip(self.max_ws, self.min_ws))), "oracle_delay")


class CorePolicy:
    """services/controller/core.py: step(state, events, now, params) -> (state, outputs), with the Params a fresh
    installation gets from config.ini; `seed` keeps the original project's MaxPercent of 80 % (its own default)."""

    wake_interval_s = 0.5

    def __init__(self, law: str = "project", name: Optional[str] = None, **param_changes):
        self.law = law
        self.name = name or law
        self.param_changes = param_changes
        self.core = None

    def reset(self, loop) -> None:
        from services.controller import core
        from services.controller.params import Params
        self.core = core
        plant = loop.plant
        params = Params.from_config(product_config()).with_(
            law=self.law, zero_point=int(round(plant.site.zero_point_w)),
            max_feed_in=int(round(plant.site.max_feed_in_w)), balcony_configured=loop.trace.has_balcony)
        if self.law == "seed":
            params = params.with_(max_percent=SEED_MAX_PERCENT)
        if self.param_changes:
            params = params.with_(**self.param_changes)
        self.params = params
        self.state = core.initial_state(params)

    def step(self, events, now):
        self.state, outputs = self.core.step(self.state, events, now, self.params)
        return outputs


SEED_MAX_PERCENT = 80.0                  # the original project's config.ini default

POLICIES = ("project", "seed", "dpl", "hze", "oracle", "oracle_delay")
EXTRA_POLICIES: tuple = ()               # proposals measured in the bench, not run by default (none now)


def make_policy(name: str):
    if name in ("project", "seed"):
        return CorePolicy(name)
    if name == "dpl":
        return DplPolicy()
    if name == "hze":
        return HzePolicy()
    if name == "oracle_delay":
        return OracleDelayPolicy()
    raise ValueError(f"unknown policy {name!r} (known: {', '.join(POLICIES + EXTRA_POLICIES)})")
