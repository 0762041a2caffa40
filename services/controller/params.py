"""The controller's constants: one frozen object, from config.ini or from the seed's defaults."""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

LAWS = ("project", "seed")


@dataclass(frozen=True, slots=True)
class Params:
    law: str = "project"                       # "project" (default) | "seed"
    # user settings at start (then changed at run time through venus.setting and persisted)
    zero_point: int = 25                       # W of import aimed at
    max_feed_in: int = 700                     # W, inverters + balcony system, <= 800
    power_feed_in_soc: int = 96                # %, deliberate export above this SOC (with sun)
    soc_floating_max: int = 74                 # %, initial seasonal SOC maximum
    # per-inverter limits
    min_percent: float = 1.0
    max_percent: float = 100.0
    steps_percent: float = 2.0                 # seed law quantisation (truncation)
    quantum_pct: float = 1.0                   # project law quantisation (floor)
    active_min_pct: float = 10.0               # project law: spread over only as many inverters as get this much
    rotate_interval_s: float = 900.0           # project law: preference order rotates this often (steady state)
    # seed consumption filter
    consume_filter_factor: int = 3
    feed_in_filter_factor: int = 0
    feed_in_at_negative_watt_difference: int = 150
    accuracy: int = 10                         # W, seed deadband
    # protections
    max_temperature: float = 50.0
    temperature_hysteresis: float = 5.0
    producing_grace_s: float = 270.0
    restart_min_interval_s: float = 600.0      # the writer rate-limits too
    dtu_reboot_min_interval_s: float = 3600.0
    # timing
    seed_loop_interval_s: float = 3.0
    grid_stale_s: float = 5.0
    battery_stale_s: float = 60.0
    battery_max_age_s: float = 300.0           # the battery's own values (age_s) older than this: not usable
    battery_fallback_dcl_a: float = 0.0        # A used when the battery reports no discharge limit (0: none)
    dtu_stale_s: float = 30.0
    balcony_stale_s: float = 30.0
    ack_timeout_s: float = 20.0
    setpoint_repeat_s: float = 1.0             # full ctrl.setpoint at least this often (contract: <= 2 s)
    status_interval_s: float = 1.0             # ctrl.status at least this often (project law; seed: each loop)
    settings_interval_s: float = 5.0
    # balcony system
    balcony_configured: bool | None = None     # None: auto (used once a balcony message was seen)
    balcony_fallback_w: int = 500
    unknown_max_w: float = 2000.0              # an inverter of unknown size counts this much against the cap
    sun_threshold_w: float = 20.0
    # sustained export
    negative_grid_w: int = 150
    negative_grid_loops: int = 50
    # life signal
    relay_interval_s: float = 300.0
    relay_first_decision_s: float = 30.0
    # project law tuning (bench/control_quality tunes these)
    raise_deadband_w: float = 2.0              # W, a raise of the total smaller than this is not commanded
    reduce_deadband_w: float = 15.0            # W, a reduction of the total smaller than this is not commanded
    tau_up_s: float = 1.5                      # output model: lag towards a higher limit
    tau_down_s: float = 3.0                    # output model: lag towards a lower limit
    dead_time_initial_s: float = 2.0           # output model: dead time assumed until learned
    ack_delay_initial_s: float = 1.0           # s, command -> ack delay assumed until learned (pulse lead)
    min_command_interval_s: float = 2.0        # per inverter, between two limit changes by the law
    load_filter_band_w: float = 20.0           # W, load estimate moves within this band are smoothed (0 = off)
    load_filter_alpha: float = 0.5             # weight of a new sample inside the band (1 = no smoothing)
    pulse_min_w: float = 200.0                 # W, load edges at least this big form pulse trains (0 = no prediction)
    pulse_tolerance_s: float = 1.5             # s, a period / on-time equal to the previous one within this is steady
    pulse_min_cycles: int = 1                  # steady periods and on-times needed before a rise is predicted (a
                                               # false rise exports; 0 costs 1.6 % less in the bench, exports 3.8 % more)
    pulse_fall_min_cycles: int = 0             # the same before the end of a pulse is predicted
    pulse_min_period_s: float = 10.0
    pulse_max_period_s: float = 60.0
    pulse_lead_s: float = 3.0                  # s, predict this much beyond the learned dead time (ack, ramp)
    pulse_fall_extra_s: float = 1.0            # s, more lead before a predicted fall (ramping down is slower)
    pulse_forget_s: float = 150.0              # s, a train without an edge for this long is dropped
    pulse_raise_frac: float = 1.0              # share of a predicted rise commanded ahead of it
    pulse_reduce_frac: float = 1.0             # share of a predicted fall commanded ahead of it
    stop_hold_s: float = 60.0                  # s, an inverter stopped for a cap below its minimum stays stopped

    def __post_init__(self):
        if self.law not in LAWS:
            raise ValueError(f"law must be one of {LAWS}, not {self.law!r}")
        if self.min_percent > self.max_percent:
            raise ValueError("min_percent must not exceed max_percent")

    @classmethod
    def defaults(cls) -> "Params":
        return cls()

    def with_(self, **changes) -> "Params":
        return replace(self, **changes)

    @classmethod
    def from_config(cls, cfg) -> "Params":
        c = cfg.control
        names = {f.name for f in fields(cls)}
        values = {name: getattr(c, name) for name in names if hasattr(c, name)}
        values["seed_loop_interval_s"] = c.seed_loop_interval
        values["balcony_configured"] = getattr(cfg, "balcony_meter", None) is not None
        relay = getattr(cfg, "relay", None)
        if relay is not None:
            values["relay_interval_s"] = relay.interval
        dtu = getattr(cfg, "opendtu", None)
        if dtu is not None:
            values["restart_min_interval_s"] = dtu.inverter_restart_min_interval_s
            values["dtu_reboot_min_interval_s"] = dtu.dtu_reboot_min_interval_s
        for name in ("min_percent", "max_percent", "steps_percent"):
            values[name] = float(values[name])
        return cls(**values)
