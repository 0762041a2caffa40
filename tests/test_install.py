"""install.sh / uninstall.sh / restart.sh against a fake root (PREFIX): files created, idempotent, complete."""
import os
import shutil
import stat
import subprocess
import sys

import pytest

from tests.support import ROOT

SHIPPED = ["install.sh", "uninstall.sh", "restart.sh", "service", "scripts/run-service", "config.example.ini",
           "supervisord.conf"]


@pytest.fixture
def gx(tmp_path):
    """A fake GX root with the project unpacked in /data/dbus-opendtu, a fake pip and a fake svc that log calls."""
    root = tmp_path / "root"
    app = root / "data" / "dbus-opendtu"
    for item in SHIPPED:
        src = os.path.join(ROOT, item)
        dst = app / item
        dst.parent.mkdir(parents=True, exist_ok=True)
        if os.path.isdir(src):
            shutil.copytree(src, dst)
        else:
            shutil.copy2(src, dst)
    (root / "data" / "rc.local").write_text("#!/bin/sh\necho other-package\n")
    calls = tmp_path / "calls.log"
    tools = tmp_path / "bin"
    tools.mkdir()
    # pip stand-in: "installs" importable placeholder packages into --target (no network in tests)
    (tools / "fake-pip").write_text(f"""#!/bin/sh
echo "pip $*" >> {calls}
while [ $# -gt 0 ]; do [ "$1" = "--target" ] && target=$2; shift; done
for pkg in zmq msgpack supervisor requests; do mkdir -p "$target/$pkg"; echo "FAKE = True" > "$target/$pkg/__init__.py"; done
""")
    (tools / "fake-svc").write_text(f"#!/bin/sh\necho \"svc $*\" >> {calls}\n")
    for tool in ("fake-pip", "fake-svc"):
        (tools / tool).chmod(0o755)
    # A Python without the dependencies, so that the vendoring path really runs: -I ignores the venv's packages? No:
    # use -S (no site-packages) so zmq/msgpack/supervisor come only from the vendor folder.
    python = tmp_path / "bin" / "python3"
    python.write_text(f"#!/bin/sh\nexec {sys.executable} -S \"$@\"\n")
    python.chmod(0o755)
    env = {**os.environ, "PREFIX": str(root), "PIP": str(tools / "fake-pip"), "SVC": str(tools / "fake-svc"),
           "PYTHON": str(python)}
    return root, app, calls, env


def run(script, env, *args):
    return subprocess.run(["sh", script, *args], env=env, capture_output=True, text=True, timeout=60)


def snapshot(root):
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            if os.path.islink(path):
                out[rel] = ("link", os.readlink(path))
            elif os.path.isfile(path):
                with open(path, "rb") as handle:
                    out[rel] = ("file", handle.read(), stat.S_IMODE(os.stat(path).st_mode))
    return out


def test_install_creates_link_rc_local_config_and_vendor(gx):
    root, app, calls, env = gx
    result = run(app / "install.sh", env)
    assert result.returncode == 0, result.stderr + result.stdout
    link = root / "service" / "dbus-opendtu"
    assert os.readlink(link) == str(app / "service")
    rc = (root / "data" / "rc.local").read_text().splitlines()
    assert rc[:2] == ["#!/bin/sh", "echo other-package"]
    assert rc[2] == f"{app}/install.sh --boot  # dbus-opendtu"
    assert os.stat(root / "data" / "rc.local").st_mode & 0o111
    assert (app / "config.ini").read_text() == (app / "config.example.ini").read_text()
    pyver = "%d.%d" % sys.version_info[:2]
    assert (app / "vendor" / f"py{pyver}" / "zmq" / "__init__.py").exists()
    assert "--target" in calls.read_text() and "pyzmq" in calls.read_text()
    run_script = (app / "service" / "run").read_text()
    assert "supervisor.supervisord -n -c" in run_script and "supervisord.conf" in run_script
    assert "multilog" in (app / "service" / "log" / "run").read_text()


def test_second_run_changes_nothing_and_installs_nothing(gx):
    root, app, calls, env = gx
    assert run(app / "install.sh", env).returncode == 0
    before = snapshot(root)
    pip_calls = calls.read_text().count("pip ")
    second = run(app / "install.sh", env)
    assert second.returncode == 0, second.stderr
    assert snapshot(root) == before
    assert calls.read_text().count("pip ") == pip_calls
    assert not (app / "service" / "service").exists(), "nested link"
    assert (root / "data" / "rc.local").read_text().count("# dbus-opendtu") == 1


def test_boot_run_after_a_firmware_update_relinks(gx):
    root, app, calls, env = gx
    assert run(app / "install.sh", env).returncode == 0
    shutil.rmtree(root / "service")            # /service is rebuilt in RAM at boot
    shutil.rmtree(app / "vendor")              # e.g. a Python change made the vendored packages useless
    boot = run(app / "install.sh", env, "--boot")
    assert boot.returncode == 0, boot.stderr
    assert os.readlink(root / "service" / "dbus-opendtu") == str(app / "service")
    assert any(p.name.startswith("py") for p in (app / "vendor").iterdir())


def test_install_fails_clearly_when_dependencies_cannot_be_installed(gx):
    root, app, calls, env = gx
    env = {**env, "PIP": "false"}
    result = run(app / "install.sh", env)
    assert result.returncode != 0
    assert "could not install the Python dependencies" in result.stdout + result.stderr
    assert not (root / "service" / "dbus-opendtu").exists()


def test_uninstall_is_complete_and_keeps_config(gx):
    root, app, calls, env = gx
    assert run(app / "install.sh", env).returncode == 0
    result = run(app / "uninstall.sh", env)
    assert result.returncode == 0, result.stderr
    assert not os.path.lexists(root / "service" / "dbus-opendtu")
    assert (root / "data" / "rc.local").read_text() == "#!/bin/sh\necho other-package\n"
    assert (app / "config.ini").exists()
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
