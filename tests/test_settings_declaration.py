"""#16.2: each user setting's range and default is declared once (common/settings.py); the config schema, the
D-Bus SetValue check and the controller's check all follow it."""
from __future__ import annotations

import pytest

from common import config
from common.settings import BY_NAME, SEND_THRESHOLD_PCT, SETTINGS_PREFIX, USER_SETTINGS
from services.controller import core
from services.controller.settings import validate_setting
from services.venus_publisher.model import SETTINGS, check_setting


@pytest.mark.parametrize("spec", USER_SETTINGS, ids=lambda s: s.name)
def test_config_dbus_and_controller_agree_with_the_declaration(spec):
    key = config.SCHEMA["control"].keys[spec.name]
    assert (key.default, key.min, key.max) == (spec.default, spec.min, spec.max)
    assert SETTINGS[spec.dbus_path] == (spec.name, spec.min, spec.max)
    for value in (spec.min, spec.max, spec.default):
        assert check_setting(spec.dbus_path, value) is None
        assert validate_setting(spec.name, value) == (value, "")
    for value in (spec.min - 1, spec.max + 1):
        assert check_setting(spec.dbus_path, value) is not None
        assert validate_setting(spec.name, value)[0] is None
        with pytest.raises(config.ConfigError):
            config.parse_config(f"[opendtu]\nhost = h\n[grid_meter]\nhost = g\n[control]\n{spec.name} = {value}\n")
    assert spec.local_path.startswith(SETTINGS_PREFIX + "/")


def test_every_dbus_setting_is_declared():
    assert {name for name, _lo, _hi in SETTINGS.values()} == set(BY_NAME)


def test_the_controller_reads_back_with_the_writers_threshold():
    from services.dtu_poller import writer
    assert writer.SEND_THRESHOLD_PCT is SEND_THRESHOLD_PCT
    assert SEND_THRESHOLD_PCT < core.READBACK_SAME_PCT < SEND_THRESHOLD_PCT + 0.1
