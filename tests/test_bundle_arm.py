"""The GX bundle on emulated ARM: `make bundle`'s archive, unpacked, runs on a Debian trixie armhf (32-bit, as every
Cerbo/Ekrano/Venus GX) and arm64 root under qemu-user, with no pip and no compiler there.

Run alone: .venv/bin/python -m pytest -q tests/test_bundle_arm.py
The first run builds the bundle (~1 min, cached in .cache/bundle/) and bootstraps two Debian roots with Python 3.13
(~2.5 min for both, cached in .cache/arm-roots/): ~4 min in all; later runs about a minute. Needs the Debian
mirror apt uses here.
"""
from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time

import pytest

from tests.support import ROOT

# a cold first test builds the bundle and bootstraps a root inside its set-up: more than the suite's 300 s default
pytestmark = pytest.mark.timeout(900)
ROOTS = os.path.join(ROOT, ".cache", "arm-roots")
ARCHES = {  # machine as `uname -m` says it: (Debian architecture, qemu binary)
    "armv7l": ("armhf", "qemu-arm-static"),
    "aarch64": ("arm64", "qemu-aarch64-static"),
}
NEEDED_OK = {"libc.so.6", "libm.so.6", "libpthread.so.0", "libstdc++.so.6", "libgcc_s.so.1", "libdl.so.2",
             "librt.so.1", "ld-linux-armhf.so.3", "ld-linux-aarch64.so.1"}


def debian_mirror() -> str:
    """The Debian mirror apt uses on this machine."""
    for path in ["/etc/apt/sources.list", *glob.glob("/etc/apt/sources.list.d/*")]:
        try:
            text = open(path).read()
        except OSError:
            continue
        for match in re.finditer(r"(?:URIs:\s*|^deb\s+(?:\[[^\]]*\]\s+)?)(\S+/debian)\s", text, re.M):
            return match.group(1)
    return "http://deb.debian.org/debian"


def arm_root(debian_arch: str) -> str:
    """A Debian trixie root with python3 for `debian_arch`, unpacked without running ARM code (cached)."""
    root = os.path.join(ROOTS, f"trixie-{debian_arch}")
    if os.path.exists(os.path.join(root, ".ready")):
        return root
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(ROOTS, exist_ok=True)
    subprocess.run(["debootstrap", "--foreign", f"--arch={debian_arch}", "--variant=minbase", "--include=python3",
                    "trixie", root, debian_mirror()], check=True, capture_output=True, timeout=600)
    for deb in sorted(glob.glob(os.path.join(root, "var", "cache", "apt", "archives", "*.deb"))):
        subprocess.run(["dpkg-deb", "-x", deb, root], check=True, timeout=120)
        os.unlink(deb)
    assert not glob.glob(os.path.join(root, "usr", "lib", "python3*", "*", "pip")), "the ARM root must lack pip"
    # Debian compiles the standard library at install time (postinst), which dpkg-deb -x skips: do it once, or
    # every emulated Python start compiles what it imports (30 s for `import zmq` on emulated arm64).
    compile_py(qemu_python(root, debian_arch), os.path.join(root, "usr", "lib", "python3.13"))
    open(os.path.join(root, ".ready"), "w").close()
    return root


def qemu_python(root: str, debian_arch: str) -> list[str]:
    qemu = {arch: q for arch, q in ARCHES.values()}[debian_arch]
    return [shutil.which(qemu), "-L", root, os.path.join(root, "usr", "bin", "python3.13")]


def compile_py(python: list[str], folder: str) -> None:
    subprocess.run([*python, "-m", "compileall", "-q", "-x", "/(test|tests|idlelib|tkinter|turtledemo)/", folder],
                   check=True, capture_output=True, timeout=900)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """`make bundle`, unpacked; returns the unpacked folder (dbus-opendtu/)."""
    subprocess.run([sys.executable, "-m", "scripts.bundle"], cwd=ROOT, check=True, timeout=1200)
    version = open(os.path.join(ROOT, "VERSION")).read().strip()
    archive = os.path.join(ROOT, "dist", f"dbus-opendtu-{version}.tar.gz")
    digest, name = open(archive + ".sha256").read().split()
    assert name == os.path.basename(archive)
    assert subprocess.run(["sha256sum", "-c", archive + ".sha256"], cwd=os.path.dirname(archive),
                          capture_output=True).returncode == 0
    out = tmp_path_factory.mktemp("unpacked")
    with tarfile.open(archive) as tar:
        tar.extractall(out, filter="tar")
    return out / "dbus-opendtu"


@pytest.fixture(scope="module", params=sorted(ARCHES))
def arm(request, tmp_path_factory):
    """(machine, python wrapper) for each ARM machine: a script that runs the root's Python under qemu."""
    machine = request.param
    debian_arch = ARCHES[machine][0]
    root = arm_root(debian_arch)
    wrapper = tmp_path_factory.mktemp(f"py-{machine}") / "python3"
    wrapper.write_text("#!/bin/sh\nexec " + " ".join(qemu_python(root, debian_arch)) + " \"$@\"\n")
    wrapper.chmod(0o755)
    bundle = request.getfixturevalue("bundle")     # .pyc once (as a GX's first start writes them), not per test
    compile_py(qemu_python(root, debian_arch), str(bundle))
    return machine, str(wrapper)


def arm_run(python: str, app, code: str, timeout=120, **kw):
    """Run `code` with the ARM Python, PYTHONPATH set up as the GX's run scripts do it."""
    script = f'HERE={app}; PY={python}; PYTHONPATH=""; . "$HERE/scripts/pythonpath.sh"; exec $PY -c "$1"'
    return subprocess.run(["sh", "-c", script, "arm", code], capture_output=True, text=True, timeout=timeout, **kw)


def test_the_archive_holds_what_runs_on_a_gx_and_nothing_else(bundle):
    names = {os.path.relpath(os.path.join(d, f), bundle) for d, _, files in os.walk(bundle) for f in files}
    for needed in ("install.sh", "uninstall.sh", "restart.sh", "service/run", "service/log/run",
                   "scripts/run-service", "supervisord.conf", "config.example.ini", "README.md", "LICENSE",
                   "services/controller/__main__.py", "common/bus.py", "vendor/armv7l/zmq/backend/cython/_zmq.abi3.so",
                   "vendor/aarch64/zmq/backend/cython/_zmq.abi3.so", "vendor/py/msgpack/fallback.py",
                   "vendor/py/supervisor/supervisord.py"):
        assert needed in names, needed
    assert not [n for n in names if n.split("/")[0] in ("tests", "bench", "sim", "docs", ".venv")]
    assert not [n for n in names if n.startswith("vendor/py/msgpack/") and not n.endswith((".py", "COPYING"))]
    assert os.access(bundle / "install.sh", os.X_OK)


def test_armv7l_extension_is_hard_float_and_needs_only_an_old_glibc(bundle):
    so = str(bundle / "vendor" / "armv7l" / "zmq" / "backend" / "cython" / "_zmq.abi3.so")
    header = subprocess.run(["readelf", "-h", so], capture_output=True, text=True, check=True).stdout
    assert re.search(r"Class:\s+ELF32", header) and re.search(r"Machine:\s+ARM", header)
    assert "Version5 EABI, hard-float ABI" in header
    check_needed_and_glibc(so, max_glibc=(2, 36))


def test_aarch64_extension_is_pypis_manylinux_build(bundle):
    so = str(bundle / "vendor" / "aarch64" / "zmq" / "backend" / "cython" / "_zmq.abi3.so")
    header = subprocess.run(["readelf", "-h", so], capture_output=True, text=True, check=True).stdout
    assert re.search(r"Class:\s+ELF64", header) and re.search(r"Machine:\s+AArch64", header)
    check_needed_and_glibc(so, max_glibc=(2, 28), bundled=("libzmq-",))


def check_needed_and_glibc(so: str, max_glibc, bundled=()):
    dyn = subprocess.run(["readelf", "-d", so], capture_output=True, text=True, check=True).stdout
    needed = set(re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dyn))
    assert needed and needed - NEEDED_OK <= {n for n in needed if n.startswith(bundled)}, needed
    versions = subprocess.run(["readelf", "-V", so], capture_output=True, text=True, check=True).stdout
    glibc = {tuple(int(x) for x in v.split(".")) for v in re.findall(r"GLIBC_(\d+\.\d+(?:\.\d+)?)", versions)}
    assert glibc and max(glibc) <= max_glibc, max(glibc)


def test_dependencies_import_on_arm_from_the_bundle(bundle, arm):
    machine, python = arm
    code = ("import json, platform, zmq, msgpack, supervisor.supervisord, supervisor.supervisorctl;"
            "print(json.dumps([platform.machine(), zmq.__file__, zmq.zmq_version(), zmq.pyzmq_version(),"
            "msgpack.Packer.__module__, zmq.has('curve')]))")
    result = arm_run(python, bundle, code)
    assert result.returncode == 0, result.stderr
    got_machine, zmq_file, libzmq, pyzmq, packer, curve = json.loads(result.stdout)
    assert got_machine == machine
    assert zmq_file.startswith(f"{bundle}/vendor/{machine}/")
    assert pyzmq == "27.3.0" and libzmq.startswith("4.3.")
    assert packer == "msgpack.fallback"                 # no compiled msgpack in the bundle
    if machine == "armv7l":
        assert not curve                                 # built without CURVE/libsodium


PUBSUB = r"""
import sys, time, zmq, msgpack
role, address = sys.argv[1], sys.argv[2]
ctx = zmq.Context()
if role == "sub":
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.SUBSCRIBE, b"meter.grid")
    sock.bind(address)
    print("ready", flush=True)
    if not sock.poll(60000):
        sys.exit("no message")
    topic, payload = sock.recv_multipart()
    print(topic.decode(), msgpack.unpackb(payload), flush=True)
else:
    sock = ctx.socket(zmq.PUB)
    sock.connect(address)
    envelope = {"v": 1, "topic": "meter.grid", "seq": 7, "t_mono": 12.5, "data": {"grid_power_w": -42.5}}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:                  # until the subscriber has it (slow joiner), bounded
        sock.send_multipart([b"meter.grid", msgpack.packb(envelope)])
        time.sleep(0.2)
"""


def test_pub_sub_round_trip_over_ipc_between_two_arm_processes(bundle, arm, tmp_path):
    machine, python = arm
    address = f"ipc://{tmp_path}/bus.sock"
    script = f'HERE={bundle}; PY={python}; PYTHONPATH=""; . "$HERE/scripts/pythonpath.sh"; exec $PY -c "$1" "$2" "$3"'
    sub = subprocess.Popen(["sh", "-c", script, "arm", PUBSUB, "sub", address], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    pub = None
    try:
        assert sub.stdout.readline().strip() == "ready", sub.stderr.read()
        pub = subprocess.Popen(["sh", "-c", script, "arm", PUBSUB, "pub", address], stderr=subprocess.PIPE)
        out, err = sub.communicate(timeout=90)
        assert sub.returncode == 0, err
        assert out.strip() == ("meter.grid {'v': 1, 'topic': 'meter.grid', 'seq': 7, 't_mono': 12.5, "
                               "'data': {'grid_power_w': -42.5}}")
    finally:
        for proc in (sub, pub):
            if proc and proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)


def test_install_sh_succeeds_with_the_arm_python_and_no_pip(bundle, arm, tmp_path):
    machine, python = arm
    root = tmp_path / "root"
    app = root / "data" / "dbus-opendtu"
    shutil.copytree(bundle, app, symlinks=True)
    (root / "data" / "rc.local").parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PREFIX": str(root), "PYTHON": python, "PIP": "false"}
    env.pop("PYTHONPATH", None)
    assert subprocess.run([python, "-m", "pip", "--version"], capture_output=True).returncode != 0
    result = subprocess.run(["sh", str(app / "install.sh")], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert os.readlink(root / "service" / "dbus-opendtu") == str(app / "service")
    assert oct(os.stat(app / "config.ini").st_mode & 0o777) == "0o600"
    assert f"{app}/install.sh --boot  # dbus-opendtu" in (root / "data" / "rc.local").read_text()
    check = subprocess.run([python, "-m", "common.config", "config.ini"], cwd=app, capture_output=True, text=True,
                           timeout=120)
    assert check.returncode == 0, check.stderr


def test_the_loop_closes_with_the_services_running_from_the_bundle_on_arm(bundle, arm, tmp_path):
    """controller, dtu_poller and shelly_poller from the unpacked bundle as emulated 32-bit ARM processes (the
    Cerbo/Ekrano case), venus_publisher and the simulators on this machine: a limit is commanded, acknowledged by
    the DTU, and the grid settles near the target."""
    machine, python = arm
    if machine != "armv7l":
        pytest.skip("one ARM machine is enough for the closed loop (the imports and bus are checked on both)")
    from scripts.stack import Stack, wait_for as stack_wait
    from tests.system_support import SETTLED_BAND_W, TARGET_W

    rundir = f"/tmp/do-arm-{os.getpid()}"
    st = Stack(str(tmp_path), rundir, scenario="quiet", config_extra={"relay": {"interval": 60}})
    sub = None
    try:
        st.dbus.start()
        st.sim = st.procs.python("sim", "sim", "--scenario", "quiet", "--port-base", str(st.port_base), env=st.env())
        stack_wait(st._sim_up, 30, 0.1, "simulators up")
        st.set_load(300)
        st.procs.python("venus_publisher", "services.venus_publisher", "--config", st.config_path, env=st.env())
        arm_env = {**st.env(), "DBUS_OPENDTU_PYTHON": python, "PYTHONPATH": ""}
        for name in ("dtu_poller", "shelly_poller", "controller"):
            st.procs.start(name, [str(bundle / "scripts" / "run-service"), name], env=arm_env)
        sub = st.subscriber(["dtu.ack"])
        acked = []

        def limit_acked():
            msg = sub.recv(timeout_s=0.5)
            if msg and msg.body["command"] == "limit" and msg.body["outcome"] == "ok":
                acked.append(msg.body)
            for name in ("dtu_poller", "shelly_poller", "controller", "venus_publisher"):
                proc = next(p for p in st.procs.procs if p.name == name)
                assert proc.poll() is None, f"{name} exited: {st.tail(name)}"
            return acked

        stack_wait(limit_acked, 120, 0, "a limit commanded and acknowledged")
        assert st.sim_state()["limit_log"], "the simulated DTU saw no limit"
        inside_since = [None]

        def settled():
            if abs(st.sim_state()["grid_w"] - TARGET_W) <= SETTLED_BAND_W:
                inside_since[0] = inside_since[0] or time.monotonic()
                return time.monotonic() - inside_since[0] >= 2
            inside_since[0] = None
            return False

        stack_wait(settled, 120, 0.2, f"grid within {SETTLED_BAND_W} W of {TARGET_W} W at 300 W load")
        ps = subprocess.run(["ps", "-o", "args=", "-p", ",".join(str(p.pid) for p in st.procs.procs)],
                            capture_output=True, text=True).stdout
        assert ps.count("qemu-arm-static") == 3, ps          # the three services really ran emulated
    finally:
        if sub is not None:
            sub.socket.close(0)
        st.procs.stop_all()
        st.dbus.stop()
        shutil.rmtree(rundir, ignore_errors=True)
