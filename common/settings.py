"""Each user setting and each threshold shared across the bus boundary, declared once.

The config schema (`common/config.py`), the D-Bus SetValue check (`services/venus_publisher/model.py`), the
controller's check (`services/controller/settings.py`) and the localsettings entries (min/max/default, which a
GUI spin box reads) all come from `USER_SETTINGS`; a test ties them together.
"""
from __future__ import annotations

from dataclasses import dataclass

# The localsettings prefix of every setting this project keeps on a GX (com.victronenergy.settings).
SETTINGS_PREFIX = "/Settings/DbusOpenDtu"


@dataclass(frozen=True)
class UserSetting:
    """One user setting; all are whole numbers (localsettings type "i", D-Bus int32)."""

    name: str            # venus.setting / ctrl.settings name and [control] config key
    dbus_path: str       # writable path on the acload
    default: int         # config default
    min: int
    max: int
    unit: str
    step: int = 1
    doc: str = ""
    learned: bool = False   # the controller also moves it itself (then its value is copied to localsettings)

    @property
    def local_path(self) -> str:
        """Its path in com.victronenergy.settings."""
        return f"{SETTINGS_PREFIX}/Control{self.dbus_path}"


USER_SETTINGS: tuple[UserSetting, ...] = (
    UserSetting("max_feed_in", "/MaxFeedIn", 700, 0, 800, "W", 10,
                "W, legal cap for inverters + balcony system"),
    UserSetting("power_feed_in_soc", "/PowerFeedInSoc", 96, 10, 99, "%", 1,
                "%, SOC above which deliberate export is allowed"),
    UserSetting("soc_floating_max", "/SocFloatingMax", 74, 74, 125, "%", 1,
                "%, initial seasonal SOC maximum (then persisted)", learned=True),
    UserSetting("zero_point", "/ZeroPoint", 25, 0, 200, "W", 5, "W of grid import to aim for"),
)
BY_NAME = {s.name: s for s in USER_SETTINGS}
BY_PATH = {s.dbus_path: s for s in USER_SETTINGS}

# Limits on the wire (ctrl.setpoint -> dtu writer): the writer does not send a change smaller than this, so the
# controller reads back an inverter within this (plus HMS whole-percent rounding) as obeying.
SEND_THRESHOLD_PCT = 0.5
