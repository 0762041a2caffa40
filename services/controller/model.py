"""The controller's state: plain mutable records (slots, for speed). `core.step` owns and updates them."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


@dataclass(slots=True)
class Inverter:
    serial: str
    index: int = 0
    name: str = ""
    # last dtu.inverter sample
    sample_t: Optional[float] = None         # sample_t_mono of the last data
    reachable: bool = False
    producing: bool = False
    ac_power_w: Optional[float] = None
    ac_voltage_v: Optional[float] = None
    dc_current_a: Optional[float] = None
    temperature_c: Optional[float] = None
    max_power_w: Optional[float] = None
    reported_pct: Optional[float] = None
    # commands
    cmd_pct: Optional[float] = None          # what ctrl.setpoint asks for
    cmd_reason: str = "start"
    pending_pct: Optional[float] = None      # a changed limit not yet acknowledged
    pending_t: Optional[float] = None
    cmd_t: Optional[float] = None            # when the commanded limit last changed (command spacing)
    applied_pct: Optional[float] = None      # last limit known to be in force (ack ok or DTU read-back)
    ack_t: Optional[float] = None            # when the last limit change became effective (ack ok)
    failures: int = 0                        # consecutive failed limit commands
    # protections
    temp_alarm: bool = False
    not_producing_since: Optional[float] = None
    last_restart_req_t: Optional[float] = None
    stopped: bool = False                    # stopped because the cap is below its minimum output (stopping.py)
    stopped_t: float = float("-inf")
    power_state: Optional[str] = None        # the DTU writer's view (dtu.inverter power_state); "off" = confirmed
    rating_implausible: bool = False         # dtu.inverter rating_plausible false (the DTU's rating is wrong)
    power_seen: bool = False                 # a power_state was seen (the first one restores `stopped`)

    def on_grid(self) -> bool:
        if self.ac_voltage_v is None:
            return self.producing
        return self.ac_voltage_v > 100.0

    def max_w(self) -> float:
        return self.max_power_w if self.max_power_w is not None and self.max_power_w > 0 else 0.0

    def cmd_w(self) -> float:
        if self.cmd_pct is None:
            return 0.0
        return self.cmd_pct * self.max_w() / 100.0

    def old_pct(self, fallback: float) -> float:
        """The limit believed to be in force: acknowledged, else read back, else commanded, else `fallback`."""
        for value in (self.applied_pct, self.reported_pct, self.cmd_pct):
            if value is not None:
                return value
        return fallback


@dataclass(slots=True)
class Battery:
    present: bool = False
    recv_t: Optional[float] = None
    value_t: Optional[float] = None          # when its values were last updated on D-Bus (recv_t - age_s)
    soc_pct: Optional[float] = None
    voltage_v: Optional[float] = None
    current_a: Optional[float] = None        # + = charging
    ccl_a: Optional[float] = None
    dcl_a: Optional[float] = None
    temperature_c: Optional[float] = None


@dataclass(slots=True)
class Season:
    """The seed's seasonal SOC tracking (persisted)."""
    soc: int = 54                            # BASESOC
    increment: int = 0
    sfm: int = 74                            # SocFloatingMax


@dataclass(slots=True)
class Settings:
    max_feed_in: int = 700
    power_feed_in_soc: int = 96
    zero_point: int = 25
    # config values these were derived from (a changed config.ini wins over a persisted run-time value)
    config_max_feed_in: int = 700
    config_power_feed_in_soc: int = 96
    config_zero_point: int = 25


@dataclass(slots=True)
class SeedLaw:
    next_loop_t: Optional[float] = None
    filtered_w: int = 0                      # P, the filtered consumption
    last_dtu_t: float = float("-inf")        # newest inverter sample seen by the previous loop
    loop_index: int = 0                      # loops with fresh DTU data since the last life signal


@dataclass(slots=True)
class ProjectLaw:
    used_grid_t: float = float("-inf")       # sample_t_mono of the last grid sample acted on
    banks: dict = field(default_factory=dict)   # serial -> response_model.DeadTimeBank (output model)
    wait: str = "start"                      # what the law is waiting for (status)
    next_rotate_t: float = float("-inf")     # -inf: not yet started
    load_f: Optional[float] = None           # smoothed load estimate (W), None until the first sample
    pulses: object = None                    # pulses.PulseTracker, created with the first sample
    learned: dict = field(default_factory=dict)  # serial -> learned response (persisted; project_law.learned)
    learned_t: float = float("-inf")         # when `learned` was last updated from the banks
    noise_w: float = 0.0                     # mean |load estimate - its smoothed value| (W): meter + load noise


@dataclass(slots=True)
class State:
    settings: Settings
    season: Season
    inverters: dict = field(default_factory=dict)     # serial -> Inverter
    order: list = field(default_factory=list)         # preference order (seed rotation)
    known_max_w: dict = field(default_factory=dict)   # serial -> max power, kept when it leaves the inventory
    known_cmd_pct: dict = field(default_factory=dict)  # serial -> last limit, when it left the inventory
    season_known: bool = False               # SOC tracking restored or seeded by a first reading
    start_t: Optional[float] = None
    # meters
    grid_w: Optional[float] = None
    grid_t: Optional[float] = None
    grid_meter_ok: Optional[bool] = None
    balcony_w: Optional[float] = None
    balcony_t: Optional[float] = None
    balcony_meter_ok: Optional[bool] = None
    balcony_seen: bool = False
    # battery / dtu / relay
    battery: Battery = field(default_factory=Battery)
    dtu_ok: Optional[bool] = None
    dtu_can_control: Optional[bool] = None
    dtu_status_t: Optional[float] = None
    last_dtu_sample_t: float = float("-inf")
    last_dtu_reboot_req_t: Optional[float] = None
    relay_confirmed: Optional[bool] = None
    relay_wanted: Optional[bool] = None
    next_relay_t: Optional[float] = None
    next_relay_retry_t: float = float("-inf")
    dtu_samples_in_window: int = 0
    negative_grid_counter: int = 0
    next_negative_tick_t: Optional[float] = None
    # laws
    seed: SeedLaw = field(default_factory=SeedLaw)
    project: ProjectLaw = field(default_factory=ProjectLaw)
    # last cycle's figures (status)
    target_w: Optional[float] = None
    budget_w: Optional[float] = None
    balcony_used_w: Optional[float] = None
    feed_in_min_soc: float = 34
    stale: list = field(default_factory=list)
    # output bookkeeping
    setpoint_dirty: bool = True
    decision_grid_t: Optional[float] = None  # grid sample_t_mono of the last decision that changed a limit
    restart_requests: list = field(default_factory=list)
    dtu_reboot_request: bool = False
    next_setpoint_t: Optional[float] = None
    next_status_t: Optional[float] = None
    status_due: bool = False
    status_key: Optional[tuple] = None      # what the last ctrl.status said that is news when it changes
    next_settings_t: Optional[float] = None
    settings_dirty: bool = True
    answers: list = field(default_factory=list)
    reasons: list = field(default_factory=list)
    limit_failures_recent: int = 0
    persist_version: int = 0                 # +1 on every change of the persisted part
