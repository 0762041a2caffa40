"""install.sh / uninstall.sh / restart.sh against a fake root (PREFIX): offline install from vendor/, the Python
version gate, config mode and migration, rc.local edits, idempotence, and the explicit pip option."""
import os
import platform
import shutil
import stat
import subprocess
import sys

import pytest

from tests.support import ROOT

SHIPPED = ["install.sh", "uninstall.sh", "restart.sh", "service", "scripts/run-service", "scripts/pythonpath.sh",
           "gui/dbus-opendtu.json", "config.example.ini", "supervisord.conf", "requirements.txt", "common"]
RC_USER = "#!/bin/sh\necho other-package\n"


def make_python(path, *, version_ok=True):
    """A python3 stand-in: the test's Python without site-packages (-S), so zmq/msgpack/supervisor come only from
    vendor/; or one that reports Python 3.8 as Venus OS v3.50 has."""
    if version_ok:
        path.write_text(f"#!/bin/sh\nexec {sys.executable} -S \"$@\"\n")
    else:
        path.write_text("#!/bin/sh\ncase \"$*\" in *-V*) echo 'Python 3.8.18'; exit 0;; esac\nexit 1\n")
    path.chmod(0o755)


def add_vendor(app):
    """What the bundle ships, as importable placeholders: pure-Python deps once, pyzmq for this machine."""
    for folder, pkg in (("py", "msgpack"), ("py", "supervisor"), (platform.machine(), "zmq")):
        (app / "vendor" / folder / pkg).mkdir(parents=True)
        (app / "vendor" / folder / pkg / "__init__.py").write_text("FAKE = True\n")


@pytest.fixture
def gx(tmp_path):
    """A fake GX root with the bundle unpacked in /data/dbus-opendtu, a fake pip and a fake svc that log calls."""
    root = tmp_path / "root"
    app = root / "data" / "dbus-opendtu"
    for item in SHIPPED:
        src = os.path.join(ROOT, item)
        dst = app / item
        dst.parent.mkdir(parents=True, exist_ok=True)
        if os.path.isdir(src):
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dst)
    add_vendor(app)
    (root / "data" / "rc.local").write_text(RC_USER)
    calls = tmp_path / "calls.log"
    tools = tmp_path / "bin"
    tools.mkdir()
    # pip stand-in: "installs" importable placeholder packages into --target (no network in tests)
    (tools / "fake-pip").write_text(f"""#!/bin/sh
echo "pip $*" >> {calls}
while [ $# -gt 0 ]; do [ "$1" = "--target" ] && target=$2; shift; done
for pkg in zmq msgpack supervisor; do mkdir -p "$target/$pkg"; echo "FAKE = True" > "$target/$pkg/__init__.py"; done
""")
    (tools / "fake-svc").write_text(f"#!/bin/sh\necho \"svc $*\" >> {calls}\n")
    for tool in ("fake-pip", "fake-svc"):
        (tools / tool).chmod(0o755)
    python = tools / "python3"
    make_python(python)
    env = {**os.environ, "PREFIX": str(root), "PIP": str(tools / "fake-pip"), "SVC": str(tools / "fake-svc"),
           "PYTHON": str(python)}
    env.pop("PYTHONPATH", None)
    return root, app, calls, env


def run(script, env, *args):
    return subprocess.run(["sh", str(script), *args], env=env, capture_output=True, text=True, timeout=60)


def snapshot(root):
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            if os.path.islink(path):
                out[rel] = ("link", os.readlink(path))
            elif os.path.isfile(path):
                with open(path, "rb") as handle:
                    out[rel] = ("file", handle.read(), stat.S_IMODE(os.stat(path).st_mode))
    return out


def test_install_is_offline_and_creates_link_rc_local_and_private_config(gx):
    root, app, calls, env = gx
    result = run(app / "install.sh", env)
    assert result.returncode == 0, result.stderr + result.stdout
    link = root / "service" / "dbus-opendtu"
    assert os.readlink(link) == str(app / "service")
    rc = (root / "data" / "rc.local").read_text().splitlines()
    assert rc == ["#!/bin/sh", "echo other-package", f"{app}/install.sh --boot  # dbus-opendtu"]
    assert os.stat(root / "data" / "rc.local").st_mode & 0o111
    config = app / "config.ini"
    assert config.read_text() == (app / "config.example.ini").read_text()
    assert stat.S_IMODE(os.stat(config).st_mode) == 0o600
    assert not calls.exists(), "install.sh called pip or svc"
    run_script = (app / "service" / "run").read_text()
    assert "supervisor.supervisord -n -c" in run_script and "supervisord.conf" in run_script
    assert "multilog" in (app / "service" / "log" / "run").read_text()
    page = root / "data" / "apps" / "available" / "dbus-opendtu" / "gui-v2" / "dbus-opendtu.json"
    assert page.read_bytes() == (app / "gui" / "dbus-opendtu.json").read_bytes()
    assert os.readlink(root / "data" / "apps" / "enabled" / "dbus-opendtu") == str(page.parents[1])


def test_an_existing_config_is_made_private_and_kept(gx):
    root, app, calls, env = gx
    (app / "config.ini").write_text("[dtu]\nhost = 10.0.0.9\n")
    (app / "config.ini").chmod(0o644)
    assert run(app / "install.sh", env).returncode == 0
    assert (app / "config.ini").read_text() == "[dtu]\nhost = 10.0.0.9\n"
    assert stat.S_IMODE(os.stat(app / "config.ini").st_mode) == 0o600


def test_an_old_python_is_refused_in_one_line_and_nothing_changes(gx, tmp_path):
    root, app, calls, env = gx
    make_python(tmp_path / "bin" / "python3", version_ok=False)
    before = snapshot(root)
    result = run(app / "install.sh", env)
    assert result.returncode != 0
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert len(lines) == 1 and "Venus OS v3.60" in lines[0] and "3.8" in lines[0], lines
    assert snapshot(root) == before


def test_second_run_changes_nothing(gx):
    root, app, calls, env = gx
    assert run(app / "install.sh", env).returncode == 0
    before = snapshot(root)
    second = run(app / "install.sh", env)
    assert second.returncode == 0, second.stderr
    assert snapshot(root) == before
    assert not (app / "service" / "service").exists(), "nested link"


def test_boot_run_relinks_after_a_reboot(gx):
    root, app, calls, env = gx
    assert run(app / "install.sh", env).returncode == 0
    shutil.rmtree(root / "service")            # /service is rebuilt in RAM at boot
    boot = run(app / "install.sh", env, "--boot")
    assert boot.returncode == 0, boot.stderr
    assert os.readlink(root / "service" / "dbus-opendtu") == str(app / "service")


def test_missing_dependencies_fail_clearly_without_pip_even_at_boot(gx):
    root, app, calls, env = gx
    shutil.rmtree(app / "vendor" / platform.machine())       # a machine the bundle has no pyzmq for
    for args in ((), ("--boot",), ("--boot", "--build-deps-with-pip")):
        result = run(app / "install.sh", env, *args)
        assert result.returncode != 0
        assert "--build-deps-with-pip" in result.stderr
        assert not (root / "service" / "dbus-opendtu").exists()
    assert not calls.exists(), "pip was called without the explicit option (or at boot)"


def test_pip_option_builds_the_dependencies_for_this_machine(gx):
    root, app, calls, env = gx
    shutil.rmtree(app / "vendor")
    result = run(app / "install.sh", env, "--build-deps-with-pip")
    assert result.returncode == 0, result.stderr + result.stdout
    pip_line = calls.read_text()
    assert "--target" in pip_line and "pyzmq==" in pip_line and "supervisor==" in pip_line
    assert (app / "vendor" / platform.machine() / "zmq" / "__init__.py").exists()
    assert os.readlink(root / "service" / "dbus-opendtu") == str(app / "service")


def test_rc_local_user_line_without_newline_survives_install_and_uninstall(gx):
    root, app, calls, env = gx
    rc_local = root / "data" / "rc.local"
    rc_local.write_text("#!/bin/sh\n/data/other/start.sh")         # no newline at the end
    assert run(app / "install.sh", env).returncode == 0
    assert rc_local.read_text().splitlines() == ["#!/bin/sh", "/data/other/start.sh",
                                                 f"{app}/install.sh --boot  # dbus-opendtu"]
    assert run(app / "uninstall.sh", env).returncode == 0
    assert rc_local.read_text().splitlines() == ["#!/bin/sh", "/data/other/start.sh"]


def test_uninstall_removes_only_our_line(gx):
    root, app, calls, env = gx
    rc_local = root / "data" / "rc.local"
    user_lines = "#!/bin/sh\necho done  # dbus-opendtu was here\n"
    rc_local.write_text(user_lines)
    assert run(app / "install.sh", env).returncode == 0
    assert run(app / "uninstall.sh", env).returncode == 0
    assert rc_local.read_text() == user_lines


def test_the_original_projects_rc_local_line_goes_and_others_stay(gx):
    root, app, calls, env = gx
    rc_local = root / "data" / "rc.local"
    rc_local.write_text("#!/bin/sh\n/data/dbus-opendtu/install.sh\n/data/dbus-opendtu/install.sh --other\n")
    assert run(app / "install.sh", env).returncode == 0
    assert rc_local.read_text().splitlines() == ["#!/bin/sh", "/data/dbus-opendtu/install.sh --other",
                                                 f"{app}/install.sh --boot  # dbus-opendtu"]


ORIGINAL_INI = """[DEFAULT]
SignOfLifeLog = 10
MaxFeedIn = 600
Host = 192.168.1.50
Username = admin
Password = secret

[INVERTER0]
DeviceInstance = 140

[SHELLY]
Host = 192.168.1.60
"""


def test_the_original_projects_config_is_kept_and_converted(gx):
    root, app, calls, env = gx
    (app / "config.ini").write_text(ORIGINAL_INI)
    result = run(app / "install.sh", env)
    assert result.returncode == 0, result.stderr + result.stdout
    assert (app / "config.ini.orig").read_text() == ORIGINAL_INI
    converted = (app / "config.ini").read_text()
    assert "[SHELLY]" not in converted and "[opendtu]" in converted and "192.168.1.50" in converted
    assert stat.S_IMODE(os.stat(app / "config.ini").st_mode) == 0o600
    again = run(app / "install.sh", env)                    # converted once: the new file is not "original"
    assert again.returncode == 0 and (app / "config.ini").read_text() == converted


def test_a_config_that_cannot_be_converted_is_left_as_it_was(gx):
    root, app, calls, env = gx
    no_meter = ORIGINAL_INI.replace("Host = 192.168.1.60\n", "")     # the grid meter's host is required here
    (app / "config.ini").write_text(no_meter)
    result = run(app / "install.sh", env)
    assert result.returncode != 0 and "could not convert" in result.stderr
    assert "[grid_meter] host missing" in result.stderr + result.stdout
    assert (app / "config.ini").read_text() == no_meter
    assert not (app / "config.ini.orig").exists()
    assert not (root / "service" / "dbus-opendtu").exists()


def test_uninstall_is_complete_and_keeps_config(gx):
    root, app, calls, env = gx
    assert run(app / "install.sh", env).returncode == 0
    result = run(app / "uninstall.sh", env)
    assert result.returncode == 0, result.stderr
    assert not os.path.lexists(root / "service" / "dbus-opendtu")
    assert (root / "data" / "rc.local").read_text() == RC_USER
    assert (app / "config.ini").exists()
    assert not os.path.lexists(root / "data" / "apps" / "enabled" / "dbus-opendtu")
    assert not os.path.lexists(root / "data" / "apps" / "available" / "dbus-opendtu")
    assert f"svc -d {root}/service/dbus-opendtu" in calls.read_text()
    again = run(app / "uninstall.sh", env)
    assert again.returncode == 0


def test_restart_uses_svc_on_our_service_only(gx):
    root, app, calls, env = gx
    missing = run(app / "restart.sh", env)
    assert missing.returncode == 1 and "run install.sh first" in missing.stderr
    assert run(app / "install.sh", env).returncode == 0
    assert run(app / "restart.sh", env).returncode == 0
    assert calls.read_text().splitlines()[-1] == f"svc -t {root}/service/dbus-opendtu"


def test_run_service_puts_project_and_vendored_packages_on_the_path(gx, tmp_path):
    root, app, calls, env = gx
    (app / "services").mkdir()
    (app / "services" / "__init__.py").write_text("")
    (app / "services" / "probe.py").write_text(
        "import sys, zmq, msgpack, supervisor\nprint(zmq.__file__, msgpack.__file__, sys.argv[1:])\n")
    result = subprocess.run([str(app / "scripts" / "run-service"), "probe"], capture_output=True, text=True,
                            env={**env, "DBUS_OPENDTU_PYTHON": env["PYTHON"]}, timeout=30)
    assert result.returncode == 0, result.stderr
    assert f"vendor/{platform.machine()}/zmq" in result.stdout and "vendor/py/msgpack" in result.stdout
    assert "--config" in result.stdout


def test_service_run_refuses_a_bad_config_visibly_instead_of_starting_supervisord(gx):
    """daemontools' run script checks the config first: a refused one is named in the log and the script exits
    (svstat shows it restarting) instead of a supervisord whose four services all stop with exit 2."""
    root, app, calls, env = gx
    (app / "config.ini").write_text(ORIGINAL_INI)                   # the original's format, not converted
    result = subprocess.run(["sh", str(app / "service" / "run")], capture_output=True, text=True, timeout=60,
                            env={**env, "DBUS_OPENDTU_REFUSED_WAIT_S": "0"})
    assert result.returncode == 2
    assert "config refused, not starting" in result.stdout
    assert "--migrate" in result.stdout                              # how to convert the original's config
    assert "secret" not in result.stdout                              # its password is not shown
