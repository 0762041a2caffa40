"""The controller's constants: one frozen object, from config.ini or from the seed's defaults."""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

from common.config import SCHEMA, switch_off_pairs

LAWS = ("project", "seed")


def _config_default(name: str):
    """A setting that config.ini has ([control] NAME): its default is declared once, in common/config.py's SCHEMA."""
    return SCHEMA["control"].keys[name].default


@dataclass(frozen=True, slots=True)
class Params:
    law: str = _config_default("law")  # "project" (default) | "seed"
    # user settings at start (then changed at run time through venus.setting and persisted)
    zero_point: int = _config_default("zero_point")  # W of import aimed at
    max_feed_in: int = _config_default("max_feed_in")  # W, inverters + balcony system, <= 800
    power_feed_in_soc: int = _config_default("power_feed_in_soc")  # %, deliberate export above this SOC (with sun)
    soc_floating_max: int = _config_default("soc_floating_max")  # %, initial seasonal SOC maximum
    # per-inverter limits
    min_percent: float = _config_default("min_percent")
    max_percent: float = _config_default("max_percent")
    steps_percent: float = _config_default("steps_percent")  # seed law quantisation (truncation)
    quantum_pct: float = _config_default("quantum_pct")  # project law quantisation (floor)
    # project law: spread over only as many inverters as get this much
    active_min_pct: float = _config_default("active_min_pct")
    rotate_interval_s: float = 900.0           # project law: preference order rotates this often (steady state)
    # seed consumption filter
    consume_filter_factor: int = _config_default("consume_filter_factor")
    feed_in_filter_factor: int = _config_default("feed_in_filter_factor")
    feed_in_at_negative_watt_difference: int = _config_default("feed_in_at_negative_watt_difference")
    accuracy: int = _config_default("accuracy")  # W, seed deadband
    # protections
    max_temperature: float = _config_default("max_temperature")
    temperature_hysteresis: float = _config_default("temperature_hysteresis")
    producing_grace_s: float = _config_default("producing_grace_s")
    restart_min_interval_s: float = 600.0      # the writer rate-limits too
    dtu_reboot_min_interval_s: float = 3600.0
    # timing
    seed_loop_interval_s: float = 3.0
    grid_stale_s: float = _config_default("grid_stale_s")
    battery_stale_s: float = _config_default("battery_stale_s")
    # the battery's own values (age_s) older than this: not usable
    battery_max_age_s: float = _config_default("battery_max_age_s")
    # A used when the battery reports no discharge limit (0: none)
    battery_fallback_dcl_a: float = _config_default("battery_fallback_dcl_a")
    dtu_stale_s: float = _config_default("dtu_stale_s")
    balcony_stale_s: float = _config_default("balcony_stale_s")
    ack_timeout_s: float = _config_default("ack_timeout_s")
    setpoint_repeat_s: float = 1.0             # full ctrl.setpoint about this often (core: at most 0.1 s later)
    # ctrl.status at least this often (project law; seed: each loop); also at once on a decision, a change of the
    # stale inputs, the alarms or the life signal (core.step)
    status_interval_s: float = 5.0
    settings_interval_s: float = 5.0
    # balcony system
    balcony_configured: bool | None = None     # None: auto (used once a balcony message was seen)
    balcony_fallback_w: int = _config_default("balcony_fallback_w")
    unknown_max_w: float = 2000.0              # an inverter of unknown size counts this much against the cap
    sun_threshold_w: float = 20.0
    # sustained export
    negative_grid_w: int = _config_default("negative_grid_w")
    negative_grid_loops: int = _config_default("negative_grid_loops")
    # life signal
    relay_interval_s: float = 300.0
    relay_first_decision_s: float = _config_default("relay_first_decision_s")
    # project law tuning (bench/control_quality tunes these)
    # W, a raise of the total smaller than this is not commanded
    raise_deadband_w: float = _config_default("raise_deadband_w")
    # W, a reduction of the total smaller than this is not commanded
    reduce_deadband_w: float = _config_default("reduce_deadband_w")
    tau_up_s: float = _config_default("tau_up_s")  # output model: lag towards a higher limit
    tau_down_s: float = _config_default("tau_down_s")  # output model: lag towards a lower limit
    dead_time_initial_s: float = _config_default("dead_time_initial_s")  # output model: dead time assumed until learned
    ack_delay_initial_s: float = 1.0           # s, command -> ack delay assumed until learned (pulse lead)
    # per inverter, between two limit changes by the law
    min_command_interval_s: float = _config_default("min_command_interval_s")
    # W, load estimate moves within this band are smoothed (0 = off)
    load_filter_band_w: float = _config_default("load_filter_band_w")
    # weight of a new sample inside the band (1 = no smoothing)
    load_filter_alpha: float = _config_default("load_filter_alpha")
    # W, load edges at least this big form pulse trains (0 = no prediction)
    pulse_min_w: float = _config_default("pulse_min_w")
    pulse_tolerance_s: float = 1.5             # s, a period / on-time equal to the previous one within this is steady
    pulse_min_cycles: int = 1                  # steady periods and on-times needed before a rise is predicted (a
                                               # false rise exports; 0 costs 1.6 % less in the bench, exports 3.8 % more)
    pulse_fall_min_cycles: int = 0             # the same before the end of a pulse is predicted
    pulse_min_period_s: float = 10.0
    pulse_max_period_s: float = 60.0
    # s, predict this much beyond the learned dead time (ack, ramp)
    pulse_lead_s: float = _config_default("pulse_lead_s")
    pulse_fall_extra_s: float = 1.0            # s, more lead before a predicted fall (ramping down is slower)
    pulse_forget_s: float = 150.0              # s, a train without an edge for this long is dropped
    pulse_raise_frac: float = 1.0              # share of a predicted rise commanded ahead of it
    pulse_reduce_frac: float = 1.0             # share of a predicted fall commanded ahead of it
    # s, an inverter stopped for a cap below its minimum stays stopped
    stop_hold_s: float = _config_default("stop_hold_s")
    switch_off: tuple = ()                     # ((id, enable_switch_off), ...) from [inverter.<id>]

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
        values["switch_off"] = switch_off_pairs(cfg)
        for name in ("min_percent", "max_percent", "steps_percent"):
            values[name] = float(values[name])
        return cls(**values)
