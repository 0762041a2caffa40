"""Upgrade from the original project: `python -m common.config --migrate OLD --output NEW`, `--is-original`."""
from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from common import config, migrate

NEWEST = """[DEFAULT]
# Time in minutes
SignOfLifeLog= 2
ZeroPoint = 30
MaxFeedIn = 600
MinPercent = 2
MaxPercent = 90
stepsPercent = 2
consumeFilterFactor = 3
feedInFilterFactor = 0
feedInAtNegativeWattDifference = 150
DTU_loopTime = 3
DTU_statusTime = 5
ACCURACY = 10
maxTemperature = 55
Logging = INFO
Host = 192.168.1.50
HTTPTimeout = 2.5
Username = admin
Password = dtusecret

[INVERTER0]
DeviceInstance = 140
enableSwitchOff = true
[INVERTER1]
DeviceInstance = 141
enableSwitchOff = false
[INVERTER2]
DeviceInstance = 150
[INVERTER3]
DeviceInstance = 137
enableSwitchOff = false
[INVERTER4]
DeviceInstance = 138
enableSwitchOff = false
[INVERTER5]
DeviceInstance = 149
enableSwitchOff = false

[SHELLY]
AccessType = OnPremise
Deviceinstance = 61
CustomName = Netz
Phase = L1
Host = 192.168.1.51
KeepAliveURL = http://relay:relaysecret@192.168.1.53/relay/0?turn=on&timer=900
SwitchOffURL = http://relay:relaysecret@192.168.1.53/relay/0?turn=off
Balcony = 192.168.1.52
Username = admin
Password = shellysecret
"""

OLD_2025 = """[DEFAULT]
SignOfLifeLog = 5
NumberOfTemplates = 0
MaxAgeTsLastSuccess = 600
DTU = opendtu
MaxFeedIn = 900
Logging = NOTSET
Host = 10.0.0.5
HTTPTimeout = 2.5
Username =
Password =
[INVERTER0]
DeviceInstance = 134
[INVERTER1]
DeviceInstance = 135
[SHELLY]
Host = 10.0.0.6
"""


def run(*args):
    return subprocess.run([sys.executable, "-m", "common.config", *args], capture_output=True, text=True,
                          timeout=30)


def parse_ours(text: str, path: str):
    """Our parser; [inverter.N] sections only when this tree's schema has them (the writer's part)."""
    if "inverter" not in config.SCHEMA and not hasattr(config, "inverter_options"):
        text = "\n".join(line for line in text.split("\n\n") if not line.lstrip().startswith("[inverter."))
    return config.parse_config(text, path)


def test_newest_layout_maps_every_key_with_units_credentials_and_instances(tmp_path):
    old, new = tmp_path / "config.ini", tmp_path / "new.ini"
    old.write_text(NEWEST)
    res = run("--migrate", str(old), "--output", str(new))
    assert res.returncode == 0, res.stderr
    assert stat.S_IMODE(os.stat(new).st_mode) == 0o600
    text = new.read_text()
    cfg = parse_ours(text, str(new))
    assert cfg.relay.interval == 120.0                              # SignOfLifeLog is minutes
    assert cfg.relay.keepalive_url == "http://relay:relaysecret@192.168.1.53/relay/0?turn=on&timer=900"
    assert cfg.relay.switchoff_url.endswith("turn=off")
    assert (cfg.opendtu.host, cfg.opendtu.password, cfg.opendtu.poll_interval) == ("192.168.1.50", "dtusecret", 5)
    assert (cfg.grid_meter.host, cfg.grid_meter.password) == ("192.168.1.51", "shellysecret")
    assert cfg.balcony_meter.host == "192.168.1.52"
    assert (cfg.control.zero_point, cfg.control.max_feed_in, cfg.control.min_percent, cfg.control.max_percent,
            cfg.control.max_temperature, cfg.control.seed_loop_interval) == (30, 600, 2, 90, 55.0, 3.0)
    assert (cfg.venus.acload_instance, cfg.venus.dcload_first_instance, cfg.venus.dcsystem_instance,
            cfg.venus.acload_custom_name, cfg.venus.alarm_instance) == (61, 140, 137, "Netz", 149)
    assert "[inverter.1]\nenable_switch_off = false" in text and "[inverter.0]\nenable_switch_off = true" in text
    assert "[inverter.3]" not in text and "[inverter.5]" not in text      # not inverters in the original
    out = res.stdout
    for secret in ("dtusecret", "shellysecret", "relaysecret"):
        assert secret not in out + res.stderr
    assert "http://relay:***@192.168.1.53" in out
    for gone in ("accesstype", "phase", "[INVERTER4] deviceinstance", "[INVERTER2] deviceinstance = 150"):
        assert gone in out.split("no equivalent / not carried over")[1], gone
    assert "[INVERTER1] deviceinstance = 141: = [venus] dcload_first_instance + 1" in out


def test_2025_layout_out_of_range_and_template_keys_are_listed_not_carried(tmp_path, capsys):
    old = tmp_path / "config.ini"
    old.write_text(OLD_2025)
    assert migrate.main(str(old), None) == 0
    out = capsys.readouterr().out
    report, text = out.split("\n---\n")
    cfg = parse_ours(text, "new.ini")
    assert cfg.control.max_feed_in == 700                           # 900 W is over the legal 800 W: default kept
    assert "maxfeedin = '900': must be <= 800" in report
    assert cfg.bus.log_level == "DEBUG" and cfg.relay is None and cfg.balcony_meter is None
    assert "numberoftemplates" in report and "maxagetslastsuccess: [control] dtu_stale_s" in report
    assert "[relay]: KeepAliveURL and SwitchOffURL are both needed" in report
    assert "[opendtu] password is empty: this project then only reads" in report


def test_is_original_and_refusals(tmp_path):
    orig, ours, junk = tmp_path / "a.ini", tmp_path / "b.ini", tmp_path / "c.ini"
    orig.write_text(NEWEST)
    ours.write_text("[opendtu]\nhost = x\n[grid_meter]\nhost = y\n")
    junk.write_bytes(b"\x00\xff not ini")
    assert run("--is-original", str(orig)).returncode == 0
    assert run("--is-original", str(ours)).returncode == 1
    assert run("--is-original", str(junk)).returncode == 1
    assert run("--is-original", str(tmp_path / "missing.ini")).returncode == 1
    res = run("--migrate", str(tmp_path / "missing.ini"), "--output", str(tmp_path / "n.ini"))
    assert res.returncode == 2 and "cannot read" in res.stderr
    assert run("--migrate", str(ours), "--output", str(tmp_path / "n.ini")).returncode == 2
    nohost = tmp_path / "d.ini"
    nohost.write_text("[DEFAULT]\nMaxFeedIn = 600\n[SHELLY]\nHost = 1.2.3.4\n")
    res = run("--migrate", str(nohost), "--output", str(tmp_path / "n.ini"))
    assert res.returncode == 2 and "[opendtu] host missing" in res.stderr and not (tmp_path / "n.ini").exists()
    # the original's file is refused by our services with one clear line
    res = run(str(orig))
    assert res.returncode == 2 and "[DEFAULT]" in res.stderr and "--migrate" in res.stderr
