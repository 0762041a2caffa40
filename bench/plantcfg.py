"""The benchmark plant description (`--plant JSON`), with defaults from docs/control.md §1, §2 and §7.

JSON fields (all optional; the shipped `bench/plants/default.json` sets every one):

inverters: list of (sim.plant.InverterSpec; sim.plant.Inverter.from_spec builds the unit)
    serial, model            text
    max_w                    W, nameplate AC maximum (100 % limit)
    min_limit_pct            %, lowest limit the inverter honours; below it the output is 0 (HM stuck at 0 W)
    dead_time_s              s from the DTU's ack until the output starts to move
    tau_up_s, tau_down_s     s, first-order lag towards the new limit (rising / falling)
    ramp_up_w_per_s,         W/s, slew-rate limit on top of the lag (rising / falling; Hoymiles are faster up)
    ramp_down_w_per_s
    quantum_pct              %, limit resolution applied by the inverter (0.1 HM, 1.0 HMS whole percent)
    ripple_w                 W, Gaussian output ripple (0 = none)
    eta_peak                 peak efficiency: AC = eta_peak x P/(P + 4 W) of the DC drawn (default 0.967)
meter:                       the grid Shelly
    interval_s               s between samples
    latency_s                [lo, hi] s, HTTP transport, uniform
    noise_w                  W, Gaussian sigma on each sample
    gain                     factor on the true value (1.01 = reads 1 % high)
balcony_meter:               interval_s, latency_s, noise_w (only used when the trace has balcony solar)
dtu:
    radio_interval_s         s per radio stats exchange; inverters are polled round-robin (N inverters: N x slower)
    http_poll_interval_s     s between our poller's GET /api/livedata/status (fresh samples become dtu.inverter)
    ack_latency_s            [lo, hi] s from the limit POST to limit_set_status Ok, log-uniform
    nok_probability          chance that a command needs the DTU's internal resend
    resend_after_s           s lost by such a resend (OpenDTU's 2 s timeout)
    failure_probability      chance that a command is lost (no ack: Failure after 10 s, then re-sent by the DTU)
                             (the DTU side is sim.dtu.DtuModel; our side the real writer state machine)
battery:                     sim.plant.Battery (16-cell LFP): SOC integrates the current during the run
    soc_pct                  %, at the start
    capacity_ah              Ah
    voltage_v                V: null = open-circuit curve of the pack minus R x I; a number fixes the voltage
    dcl_a, ccl_a             A, the BMS limits at mid SOC (sim.plant tapers them near empty / full)
site:
    max_feed_in_w            W, the feed-in cap given to every policy (legal 800 W)
    zero_point_w             W, the grid target tau (import) of every policy

P_max(t) = min(max_feed_in_w - balcony(t), sum max_w, eta x V(t) x DCL(t)) with eta the best inverter's eta_peak;
P_min = smallest inverter minimum.
"""
from __future__ import annotations

import copy
import json
import math
import os
from dataclasses import dataclass, field, fields

from common.config import parse_config
from sim.plant import Battery, InverterSpec

DEFAULT_PLANT_PATH = os.path.join(os.path.dirname(__file__), "plants", "default.json")


class PlantConfigError(ValueError):
    """The plant JSON is unreadable or has a bad field."""


@dataclass
class MeterSpec:
    interval_s: float = 1.0
    latency_s: tuple = (0.04, 0.1)
    noise_w: float = 3.0
    gain: float = 1.0


@dataclass
class DtuSpec:
    radio_interval_s: float = 1.0
    http_poll_interval_s: float = 2.0
    ack_latency_s: tuple = (0.2, 2.0)
    nok_probability: float = 0.05
    resend_after_s: float = 2.0
    failure_probability: float = 0.0


@dataclass
class BatterySpec:
    soc_pct: float = 80.0
    capacity_ah: float = 200.0
    voltage_v: object = None
    dcl_a: float = 25.0
    ccl_a: float = 25.0

    def build(self) -> Battery:
        return Battery(capacity_ah=self.capacity_ah, soc_pct=self.soc_pct, ccl_a=self.ccl_a, dcl_a=self.dcl_a,
                       fixed_voltage_v=self.voltage_v)


@dataclass
class SiteSpec:
    max_feed_in_w: float = 800.0
    zero_point_w: float = 25.0


@dataclass
class PlantConfig:
    inverters: list = field(default_factory=lambda: [InverterSpec(serial="116100000001"),
                                                     InverterSpec(serial="116100000002")])
    meter: MeterSpec = field(default_factory=MeterSpec)
    balcony_meter: MeterSpec = field(default_factory=lambda: MeterSpec(interval_s=5.0, noise_w=2.0))
    dtu: DtuSpec = field(default_factory=DtuSpec)
    battery: BatterySpec = field(default_factory=BatterySpec)
    site: SiteSpec = field(default_factory=SiteSpec)

    # ------------------------------------------------------------ derived
    @property
    def sum_max_w(self) -> float:
        return sum(inv.max_w for inv in self.inverters)

    @property
    def p_min_w(self) -> float:
        return min(inv.min_w for inv in self.inverters)

    def p_max_w(self, balcony_w: float, battery_v: float, dcl_a: float) -> float:
        eta = max(inv.eta_peak for inv in self.inverters)
        return max(0.0, min(self.site.max_feed_in_w - balcony_w, self.sum_max_w, eta * battery_v * dcl_a))

    @property
    def dead_time_s(self) -> float:
        return max(inv.dead_time_s for inv in self.inverters)

    @property
    def ramp_up_w_per_s(self) -> float:
        return sum(inv.ramp_up_w_per_s for inv in self.inverters)

    @property
    def ramp_down_w_per_s(self) -> float:
        return sum(inv.ramp_down_w_per_s for inv in self.inverters)

    def with_dead_time(self, dead_time_s: float) -> "PlantConfig":
        out = copy.deepcopy(self)
        for inv in out.inverters:
            inv.dead_time_s = float(dead_time_s)
        return out


def _fill(cls, data, where: str):
    if not isinstance(data, dict):
        raise PlantConfigError(f"{where}: expected an object")
    known = {f.name: f for f in fields(cls)}
    obj = cls()
    for key, value in data.items():
        if key.startswith("_"):
            continue
        if key not in known:
            raise PlantConfigError(f"{where}.{key}: unknown field (known: {', '.join(known)})")
        default = getattr(obj, key)
        if key == "voltage_v":
            if value is not None and not (_is_num(value) and value > 0):
                raise PlantConfigError(f"{where}.{key}: expected null or a voltage > 0")
            setattr(obj, key, None if value is None else float(value))
            continue
        if isinstance(default, tuple):
            if not (isinstance(value, list) and len(value) == 2 and all(_is_num(v) and v >= 0 for v in value)
                    and value[0] <= value[1]):
                raise PlantConfigError(f"{where}.{key}: expected [lo, hi] seconds, got {value!r}")
            value = (float(value[0]), float(value[1]))
        elif isinstance(default, str):
            if not isinstance(value, str):
                raise PlantConfigError(f"{where}.{key}: expected text")
        else:
            if not _is_num(value) or value < 0:
                raise PlantConfigError(f"{where}.{key}: expected a number >= 0, got {value!r}")
            value = float(value)
        setattr(obj, key, value)
    return obj


def _is_num(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def parse_plant(data) -> PlantConfig:
    if not isinstance(data, dict):
        raise PlantConfigError("plant: expected an object")
    cfg = PlantConfig()
    for key, value in data.items():
        if key.startswith("_"):
            continue
        if key == "inverters":
            if not isinstance(value, list) or not value:
                raise PlantConfigError("inverters: expected a non-empty list")
            cfg.inverters = [_fill(InverterSpec, item, f"inverters[{i}]") for i, item in enumerate(value)]
            for i, inv in enumerate(cfg.inverters):
                inv.serial = inv.serial.strip().lower()
                try:
                    int(inv.serial, 16)
                except ValueError:
                    raise PlantConfigError(f"inverters[{i}].serial: must be hex digits like 116100000001") from None
                if inv.max_w <= 0 or inv.min_limit_pct > 100:
                    raise PlantConfigError(f"inverters[{i}]: max_w must be > 0 and min_limit_pct <= 100")
                if inv.serial == InverterSpec.serial and i > 0:
                    inv.serial = f"1161000000{i + 1:02d}"
        elif key in ("meter", "balcony_meter"):
            setattr(cfg, key, _fill(MeterSpec, value, key))
        elif key == "dtu":
            cfg.dtu = _fill(DtuSpec, value, key)
        elif key == "battery":
            cfg.battery = _fill(BatterySpec, value, key)
        elif key == "site":
            cfg.site = _fill(SiteSpec, value, key)
        else:
            raise PlantConfigError(f"{key}: unknown section")
    if len({inv.serial for inv in cfg.inverters}) != len(cfg.inverters):
        raise PlantConfigError("inverters: serials must be unique")
    for spec in (cfg.meter, cfg.balcony_meter):
        if spec.interval_s <= 0:
            raise PlantConfigError("meter interval_s must be > 0")
    if cfg.dtu.radio_interval_s <= 0 or cfg.dtu.http_poll_interval_s <= 0:
        raise PlantConfigError("dtu intervals must be > 0")
    return cfg


def load_plant(path: str | None = None) -> PlantConfig:
    path = path or DEFAULT_PLANT_PATH
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except OSError as exc:
        raise PlantConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except ValueError as exc:
        raise PlantConfigError(f"{path}: not JSON: {exc}") from None
    return parse_plant(data)


def product_config():
    """The product's settings at their defaults, as a fresh installation with a DTU password runs them (the
    controller's Params and the writer's WriterParams are built from it)."""
    return parse_config("[opendtu]\nhost = 192.0.2.1\npassword = bench\n[grid_meter]\nhost = 192.0.2.2\n",
                        "<bench>")

