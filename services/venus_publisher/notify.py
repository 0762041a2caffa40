"""What the user sees in the GX's Notifications: the functional core (no D-Bus).

venus-platform turns only a few paths into notifications (none on an acload), so each alarm condition reaches
the user two ways:
- an event through `com.victronenergy.platform /Notifications/Inject` on each rising edge (ok -> warning,
  ok/warning -> alarm), at most one per condition and level in RISE_MIN_INTERVAL_S (a warning turning into an
  alarm is always told), and an info entry when it clears (only if its rise was told);
- a standing alarm on a digitalinput service (`/Alarm` 2 while any condition is at alarm level, 0 otherwise),
  whose `/CustomName` names the worst condition: venus-platform shows that name while the alarm lasts.

`cause_texts` says for each condition what is wrong and what the system does about it, from the same inputs the
acload's /Alarms/* paths are computed from.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from .model import ALARM, OK, WARNING, BatteryView, Inputs, Params, num

PREFIX = "dbus-opendtu"
INJECT_WARNING, INJECT_ALARM, INJECT_INFO = 0, 1, 2       # venus-platform's notification types
RISE_MIN_INTERVAL_S = 300.0    # at most one event per condition in this time (a flapping meter is one event)
STARTUP_QUIET_STALE = 2        # no events in the first 2 x [venus] status_stale_s (30 s by default): the sources come
                               # up one by one; what is still wrong then is told
ALARM_DEVICE_NAME = "dbus-opendtu alarms"
ALL_OK_NAME = "dbus-opendtu: no alarm"
# condition -> the words used when it is at warning level / at alarm level, and what the system does
LABELS = {
    "grid_meter": "grid meter",
    "balcony_meter": "balcony meter",
    "dtu": "OpenDTU",
    "inverter": "inverter",
    "temperature": "inverter temperature",
    "battery": "battery",
    "controller": "controller",
}


def _kind(seen) -> str:
    body = seen.body if seen is not None else {}
    kind = body.get("error_kind") or ("stale" if seen is not None else "no data yet")
    count = body.get("error_count")
    return f"{kind}, {count} errors in a row" if isinstance(count, int) and count > 1 else str(kind)


def cause_texts(inputs: Inputs, battery: BatteryView, levels: dict, now: float, params: Params,
                balcony_fallback_w: float = 500.0) -> dict[str, str]:
    """Condition -> "dbus-opendtu: <what> (<why>) — <consequence>" for every condition not OK."""
    out: dict[str, str] = {}
    for name, level in levels.items():
        if not level:
            continue
        if name == "grid_meter":
            fresh = inputs.fresh(inputs.grid, now, params.grid_stale_s, "sample_t_mono")
            what = "grid meter unreachable" if fresh is None else "grid meter reports errors"
            text = f"{what} ({_kind(inputs.meter_status.get('grid'))})"
            if level == ALARM:
                text += " — inverters at minimum"
        elif name == "balcony_meter":
            text = (f"balcony meter unreadable ({_kind(inputs.meter_status.get('balcony'))}) — "
                    f"{balcony_fallback_w:.0f} W assumed for it")
        elif name == "dtu":
            text = f"OpenDTU unreachable ({_kind(inputs.dtu_status)})"
            if level == ALARM:
                text += " — inverters go to minimum"
        elif name == "inverter":
            active = {alarm["kind"]: alarm for alarm in inputs.active_dtu_alarms()}
            if "stop_unconfirmed" in active:
                alarm = active["stop_unconfirmed"]
                text = f"{_name(inputs, alarm.get('serial') or '')}: stop not confirmed, it may still produce " \
                       f"({alarm.get('detail')})"
            elif active:
                alarm = next(iter(active.values()))
                text = f"no setpoint from the controller ({alarm.get('detail') or alarm.get('kind')}) — " \
                       "inverters at minimum"
            else:
                gone = [s for s in inputs.inventory().values()
                        if not (inputs.fresh_inverter(s, now, params) or {}).get("reachable")]
                names = ", ".join(_name(inputs, s) for s in gone[:3]) or "an inverter"
                text = f"inverter {names} unreachable or silent"
        elif name == "temperature":
            hot = []
            for serial in inputs.inventory().values():
                body = inputs.fresh_inverter(serial, now, params) or {}
                t = num(body.get("temperature_c"))
                if t is not None and t >= params.max_temperature_c - params.temperature_hysteresis_k:
                    hot.append(f"{_name(inputs, serial)} {t:.0f} °C")
            text = f"inverter hot: {', '.join(hot) or 'reported by the controller'} " \
                   f"(max {params.max_temperature_c:.0f} °C)"
            if level == ALARM:
                text += " — its limit is not raised"
        elif name == "battery":
            text = f"battery not readable on D-Bus ({battery.detail or 'no battery service'}) — no discharge " \
                   "budget, inverters at minimum"
        else:   # controller
            text = "controller not running (no status) — inverters go to minimum" if level == ALARM else \
                "controller reports a problem"
        out[name] = f"{PREFIX}: {text}"
    return out


def _name(inputs: Inputs, serial: str) -> str:
    seen = inputs.inverters.get(serial)
    name = seen.body.get("name") if seen else None
    return name if isinstance(name, str) and name.strip() else serial


@dataclass
class Injection:
    kind: int          # INJECT_WARNING / INJECT_ALARM / INJECT_INFO
    text: str

    def wire(self, device: str = ALARM_DEVICE_NAME) -> str:
        """The string venus-platform's /Notifications/Inject takes: "<type>\\t<device name>\\t<text>"."""
        clean = self.text.replace("\t", " ").replace("\n", " ")
        return f"{self.kind}\t{device}\t{clean}"


@dataclass
class Notifier:
    min_interval_s: float = RISE_MIN_INTERVAL_S
    quiet_until: float = float("-inf")                    # no events before this time (start-up)
    levels: dict = field(default_factory=dict)            # condition -> last level seen (None = not known yet)
    last_rise: dict = field(default_factory=dict)         # condition -> (time, level) of its last injected event
    announced: dict = field(default_factory=dict)         # condition -> its rise was injected (so its clear is)

    def update(self, levels: dict, causes: dict, now: float) -> list[Injection]:
        out = []
        if now < self.quiet_until:
            return out                             # levels not recorded: each one still raised is told later
        for name, level in levels.items():
            before = self.levels.get(name)
            self.levels[name] = level
            if level is None:
                continue
            if level > (before or OK):
                last_t, last_level = self.last_rise.get(name, (None, OK))
                if last_t is not None and now - last_t < self.min_interval_s and level <= last_level:
                    continue                       # flapping: the standing alarm still shows it
                self.last_rise[name] = (now, level)
                self.announced[name] = True
                kind = INJECT_ALARM if level == ALARM else INJECT_WARNING
                out.append(Injection(kind, causes.get(name) or f"{PREFIX}: {LABELS[name]} problem"))
            elif level == OK and before and self.announced.pop(name, False):
                out.append(Injection(INJECT_INFO, f"{PREFIX}: {LABELS[name]} ok again"))
        return out


def standing_alarm(levels: dict, causes: dict) -> tuple[int, str]:
    """(/Alarm value, /CustomName) of the digitalinput: 2 and the worst condition's text while any is at alarm
    level (the first in ALARM_NAMES order among equals), else 0 and a neutral name."""
    worst = [name for name, level in levels.items() if level == ALARM]
    if not worst:
        return 0, ALL_OK_NAME
    text = causes.get(worst[0]) or f"{PREFIX}: {LABELS[worst[0]]} alarm"
    if len(worst) > 1:
        text += f" (+{len(worst) - 1} more)"
    return 2, text[:120]


__all__ = ["Notifier", "Injection", "cause_texts", "standing_alarm", "OK", "WARNING", "ALARM"]
