"""Config: every error class gives one message naming file, section, key and value, and exit code 2."""
import os
import subprocess

import pytest

from common.config import SCHEMA, ConfigError, example_ini, load_config, parse_config
from tests.support import PYTHON, ROOT, base_sections, write_config

MINIMAL = "[opendtu]\nhost = 10.0.0.5\n[grid_meter]\nhost = 10.0.0.6\n"


def test_minimal_config_gets_documented_defaults():
    cfg = parse_config(MINIMAL, "/etc/x/config.ini")
    assert cfg.opendtu.username == "admin" and cfg.opendtu.timeout == 2.5 and cfg.opendtu.poll_interval == 2.0
    assert cfg.grid_meter.type == "auto" and cfg.grid_meter.timeout == 2 and cfg.grid_meter.poll_interval == 1
    assert cfg.balcony_meter is None and cfg.relay is None
    assert (cfg.control.law, cfg.control.zero_point, cfg.control.max_feed_in, cfg.control.power_feed_in_soc) \
        == ("project", 25, 700, 96)
    assert cfg.control.state_dir == "/etc/x"
    assert (cfg.venus.acload_instance, cfg.venus.dcsystem_instance, cfg.venus.dcload_first_instance) == (59, 137, 134)
    assert cfg.bus.rundir == "/run/dbus-opendtu"


def test_optional_section_defaults():
    cfg = parse_config(MINIMAL + "[balcony_meter]\nhost = 10.0.0.7\n[relay]\n"
                       "keepalive_url = http://10.0.0.8/relay/0?turn=on&timer=900\n"
                       "switchoff_url = http://10.0.0.8/relay/0?turn=off\n")
    assert cfg.balcony_meter.poll_interval == 5 and cfg.relay.interval == 300
    assert cfg.relay.keepalive_url.endswith("timer=900")


@pytest.mark.parametrize("text, section, key, value, reason", [
    (MINIMAL + "[inverter0]\nx = 1\n", "inverter0", None, None, "unknown section"),
    (MINIMAL + "[control]\nzeropoint = 25\n", "control", "zeropoint", "25", "unknown key"),
    ("[opendtu]\nhost = 10.0.0.5\n", "grid_meter", "host", None, "missing required section"),
    ("[opendtu]\nhost =\n[grid_meter]\nhost = h\n", "opendtu", "host", "", "required"),
    (MINIMAL + "[control]\nmax_feed_in = 900\n", "control", "max_feed_in", "900", "<= 800"),
    (MINIMAL + "[control]\nmax_feed_in = lots\n", "control", "max_feed_in", "lots", "whole number"),
    (MINIMAL + "[control]\nlaw = pid\n", "control", "law", "pid", "one of project, seed"),
    (MINIMAL + "[opendtu]\n", None, None, None, "section given twice"),
    (MINIMAL + "[control]\nzero_point = 5\nzero_point = 6\n", "control", "zero_point", None, "twice"),
    (MINIMAL.replace("10.0.0.6", "10.0.0.6\ntimeout = nan"), "grid_meter", "timeout", "nan", "finite"),
    (MINIMAL + "[relay]\nkeepalive_url = shelly/relay\nswitchoff_url = http://x/\n", "relay", "keepalive_url",
     "shelly/relay", "URL"),
    (MINIMAL + "[bus]\nlog_level = chatty\n", "bus", "log_level", "chatty", "log level"),
    (MINIMAL + "[control]\nmin_percent = 90\nmax_percent = 80\n", "control", "min_percent", 90, "max_percent"),
    ("not an ini file", None, None, None, "not an ini file"),
])
def test_each_error_names_file_section_key_value(text, section, key, value, reason):
    with pytest.raises(ConfigError) as info:
        parse_config(text, "/data/dbus-opendtu/config.ini")
    err = info.value
    message = str(err)
    assert message.startswith("config error: /data/dbus-opendtu/config.ini")
    assert reason in message
    if section and reason != "section given twice":
        assert f"[{section}]" in message
    if key:
        assert key in message
    if value not in (None, ""):
        assert repr(value) in message


def test_password_is_never_in_a_config_error():
    with pytest.raises(ConfigError) as info:
        parse_config(MINIMAL.replace("10.0.0.6", "10.0.0.6\npassword = hunter2\ntimeout = x"))
    assert "hunter2" not in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(str(tmp_path / "nope.ini"))


def test_checker_exits_2_with_one_message(tmp_path):
    path = write_config(str(tmp_path), {"opendtu": {"host": "h"}, "grid_meter": {"host": "g", "type": "gen3"}})
    out = subprocess.run([PYTHON, "-m", "common.config", path], capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "[grid_meter] type = 'gen3'" in lines[0] and path in lines[0]


def test_every_service_exits_2_on_a_config_error(tmp_path, rundir):
    path = write_config(str(tmp_path), base_sections(rundir, control={"power_feed_in_soc": 100}))
    for service in ("dtu_poller", "shelly_poller", "controller", "venus_publisher"):
        if not os.path.exists(os.path.join(ROOT, "services", service, "__main__.py")):
            continue
        out = subprocess.run([PYTHON, "-m", f"services.{service}", "--config", path], capture_output=True,
                             text=True, cwd=ROOT, timeout=60)
        assert out.returncode == 2, (service, out.stderr)
        assert "[control] power_feed_in_soc = '100'" in out.stderr, (service, out.stderr)


def test_example_config_is_generated_from_the_schema_and_loads():
    with open(os.path.join(ROOT, "config.example.ini")) as handle:
        shipped = handle.read()
    assert shipped.strip() == example_ini().strip(), "regenerate: python -m common.config --example > config.example.ini"
    cfg = load_config(os.path.join(ROOT, "config.example.ini"))
    for name, spec in SCHEMA.items():
        if not spec.optional:
            for key, k in spec.keys.items():
                if not k.required:     # a key with an example (required only sometimes) shows the example
                    expected = k.example or (k.default if key != "state_dir" else ROOT)
                    assert getattr(getattr(cfg, name), key) == expected


def test_readme_config_reference_matches_the_schema():
    from common.config import markdown_reference
    with open(os.path.join(ROOT, "README.md")) as handle:
        readme = handle.read()
    start = readme.index("<!-- config-reference:start -->") + len("<!-- config-reference:start -->")
    end = readme.index("<!-- config-reference:end -->")
    assert readme[start:end].strip() == markdown_reference().strip(), \
        "regenerate with scripts/update_docs.py"


@pytest.mark.parametrize("section, key, bad", [
    ("opendtu", "timeout", "soon"), ("grid_meter", "type", "gen9"), ("balcony_meter", "poll_interval", "0"),
    ("relay", "interval", "-5"), ("control", "law", "pid"), ("venus", "acload_instance", "x"),
    ("bus", "log_level", "LOUD"),
])
def test_a_config_error_in_each_section_stops_each_service_with_code_2(tmp_path, rundir, section, key, bad):
    extra = {section: {key: bad}}
    if section == "balcony_meter":
        extra[section]["host"] = "127.0.0.1:9"
    if section == "relay":
        extra[section].update(keepalive_url="http://127.0.0.1:9/relay/0?turn=on&timer=900",
                              switchoff_url="http://127.0.0.1:9/relay/0?turn=off")
    path = write_config(str(tmp_path), base_sections(rundir, **extra))
    for service in ("dtu_poller", "shelly_poller", "controller", "venus_publisher"):
        out = subprocess.run([PYTHON, "-m", f"services.{service}", "--config", path], capture_output=True,
                             text=True, cwd=ROOT, timeout=60)
        assert out.returncode == 2, (service, out.stderr)
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and f"[{section}] {key} = '{bad}'" in lines[0] and path in lines[0], (service, lines)


def test_per_inverter_sections_by_serial_or_position_serial_wins():
    from common.config import InverterOptions, inverter_options
    base = "[opendtu]\nhost = x\n[grid_meter]\nhost = y\n"
    cfg = parse_config(base + "[inverter.1164A00A6340]\nmax_power_w = 2000\n"
                              "[inverter.1]\nenable_switch_off = no\nmax_power_w = 400\n")
    assert inverter_options(cfg, "1164a00a6340", 1) == InverterOptions(2000, True)     # the serial wins
    assert inverter_options(cfg, "112182345678", 1) == InverterOptions(400, False)
    assert inverter_options(cfg, "112182345678", 2) == InverterOptions(0, True)
    assert inverter_options(parse_config(base), "x", 0) == InverterOptions(0, True)
    for bad, where in (("[inverter.16]\n", "[inverter.16]"), ("[inverter.zz]\n", "[inverter.zz]"),
                       ("[inverter.0]\nmax_power_w = 3001\n", "max_power_w = '3001'"),
                       ("[inverter.0]\nswitch = no\n", "switch"), ("[inverter]\n", "[inverter]")):
        with pytest.raises(ConfigError) as info:
            parse_config(base + bad)
        assert where in str(info.value)
