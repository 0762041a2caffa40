"""`make bundle`: dist/dbus-opendtu-<VERSION>.tar.gz (+ .sha256), one archive that installs offline on a GX.

What runs on the GX is taken from git (services, common, the run scripts, service/, supervisord.conf,
config.example.ini, install/uninstall/restart, README, LICENSE), plus vendor/:
  vendor/py       msgpack (its pure-Python part only) and supervisor, for every machine;
  vendor/armv7l   pyzmq cross-compiled here for 32-bit ARM hard-float (every 32-bit GX) as a cp312-abi3 extension,
                  libzmq from Debian's zeromq3 source package linked statically (tcp and ipc; no libsodium, no CURVE),
                  C++ runtime linked statically: it needs only libc, libm, libpthread and libgcc_s from the GX;
  vendor/aarch64  PyPI's manylinux cp312-abi3 pyzmq wheel, unpacked.
Every input is pinned by version and sha256 below and checked. Downloads and the ARM build are cached under
.cache/bundle/ keyed by the pins, so a second run only re-packs the tree (seconds).
Needs Debian bookworm (the cross toolchain's glibc 2.36 is older than Venus OS v3.60's 2.39); it installs its own
Debian packages (and enables deb-src) when they are missing.
"""
from __future__ import annotations

import argparse
import glob
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import time
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.path.join(ROOT, ".cache", "bundle")
DIST = os.path.join(ROOT, "dist")
NAME = "dbus-opendtu"

# --- pinned inputs: (file name, sha256) --------------------------------------------------------------------------
PYZMQ = "27.3.0"
PYPI = {
    "pyzmq_sdist": ("pyzmq-27.3.0.tar.gz", "bbedb3d1d99babc625f1dd9d7438acefd442b36b75073fd6bc1ef7c0a4b96d56"),
    "pyzmq_aarch64": ("pyzmq-27.3.0-cp312-abi3-manylinux_2_26_aarch64.manylinux_2_28_aarch64.whl",
                      "ad8b828407caee77ff3ab0bdb2984ee8d48922328b226e8fda7c84a71a55dbb4"),
    "msgpack_sdist": ("msgpack-1.2.4.tar.gz", "475c44e12f2a5de766a8448783f149c9b33f3f49b88953c6cd739a77d93c732c"),
    "supervisor": ("supervisor-4.3.0-py2.py3-none-any.whl",
                   "0bcb763fddafba410f35cbde226aa7f8514b9fb82eb05a0c85f6588d1c13f8db"),
    "cython": ("cython-3.1.4-cp312-cp312-manylinux2014_x86_64.manylinux_2_17_x86_64.manylinux_2_28_x86_64.whl",
               "9def7c41f4dc339003b1e6875f84edf059989b9c7f5e9a245d3ce12c190742d9"),
}
# how pip fetches each (requirement, extra pip arguments)
PIP_ARGS = {
    "pyzmq_sdist": ([f"pyzmq=={PYZMQ}"], ["--no-binary", "pyzmq"]),
    "pyzmq_aarch64": ([f"pyzmq=={PYZMQ}"], ["--only-binary", ":all:", "--platform", "manylinux_2_28_aarch64",
                                            "--python-version", "3.12", "--implementation", "cp", "--abi", "abi3"]),
    "msgpack_sdist": (["msgpack==1.2.4"], ["--no-binary", "msgpack"]),
    "supervisor": (["supervisor==4.3.0"], ["--only-binary", ":all:"]),
    "cython": (["cython==3.1.4"], ["--only-binary", ":all:"]),
}
ZEROMQ_DEB = "4.3.4-6"                 # Debian bookworm's zeromq3 source package
DEBIAN = {
    "dsc": ("zeromq3_4.3.4-6.dsc", "dfc0e1a03950bff1891b60de3eb41605e9d1d804af063e4b565602165be8c3fe"),
    "orig": ("zeromq3_4.3.4.orig.tar.gz", "0ff5a531c9ffaf0dfdc7dc78d13d1383088f454896d252934c429b2554d10559"),
    "debian": ("zeromq3_4.3.4-6.debian.tar.xz", "fbb0dcb4ffbf483d416d9af722db74ad4edd7004625ce10381e8cd3a71b6cd58"),
}
APT_PKGS = ["gcc-arm-linux-gnueabihf", "g++-arm-linux-gnueabihf", "binutils-arm-linux-gnueabihf", "cmake",
            "dpkg-dev", "make"]
CROSS = "arm-linux-gnueabihf"
BUILD_REV = "1"        # bump when the build steps below change, so the cache key changes
# What goes into the archive, from git (tests, bench, sim and dev files stay out).
SHIPPED = ["services", "common", "service", "scripts/run-service", "scripts/pythonpath.sh", "supervisord.conf",
           "config.example.ini", "gui/dbus-opendtu.json", "install.sh", "uninstall.sh", "restart.sh", "README.md",
           "LICENSE", "VERSION", "requirements.txt", "log/.gitkeep", "run/.gitkeep"]


def say(msg: str) -> None:
    print(f"bundle: {msg}", flush=True)


def run(cmd, **kw) -> None:
    subprocess.run(cmd, check=True, **kw)


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cache_key() -> str:
    pins = json.dumps([PYPI, DEBIAN, ZEROMQ_DEB, BUILD_REV], sort_keys=True)
    return hashlib.sha256(pins.encode()).hexdigest()[:16]


def work_dir() -> str:
    return os.path.join(CACHE, f"work-{cache_key()}")


# --- inputs ---------------------------------------------------------------------------------------------------
def ensure_apt() -> None:
    missing = [p for p in APT_PKGS if subprocess.run(["dpkg-query", "-W", "-f=${Status}", p], capture_output=True,
                                                     text=True).stdout != "install ok installed"]
    if missing:
        say(f"installing Debian packages: {' '.join(missing)}")
        run(["apt-get", "update", "-qq"])
        run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}, stdout=subprocess.DEVNULL)


def checked(path: str, want: str) -> str:
    got = sha256(path)
    if got != want:
        os.unlink(path)
        raise SystemExit(f"bundle: {os.path.basename(path)}: sha256 {got} is not the pinned {want}")
    return path


def fetch_pypi(key: str) -> str:
    name, digest = PYPI[key]
    folder = os.path.join(CACHE, "downloads")
    path = os.path.join(folder, name)
    if not os.path.exists(path):
        reqs, extra = PIP_ARGS[key]
        say(f"pip download {name}")
        run([sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "--no-deps",
             "-d", folder, *extra, *reqs])
    return checked(path, digest)


def ensure_deb_src() -> None:
    if subprocess.run(["apt-get", "source", "--print-uris", f"zeromq3={ZEROMQ_DEB}"], capture_output=True,
                      text=True).returncode == 0:
        return
    say("enabling Debian source packages (deb-src) for bookworm")
    sources = "/etc/apt/sources.list.d/dbus-opendtu-deb-src.sources"
    with open(sources, "w") as handle:
        handle.write("Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: bookworm\nComponents: main\n"
                     "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n")
    run(["apt-get", "update", "-qq"])


def fetch_zeromq() -> str:
    """Debian's zeromq3 source, checked, unpacked with Debian's patches applied; returns the source folder."""
    folder = os.path.join(CACHE, "downloads", "zeromq3")
    os.makedirs(folder, exist_ok=True)
    if not all(os.path.exists(os.path.join(folder, name)) for name, _ in DEBIAN.values()):
        ensure_deb_src()
        say(f"apt-get source zeromq3={ZEROMQ_DEB}")
        run(["apt-get", "source", "-qq", "--download-only", f"zeromq3={ZEROMQ_DEB}"], cwd=folder)
    for name, digest in DEBIAN.values():
        checked(os.path.join(folder, name), digest)
    src = os.path.join(work_dir(), "zeromq3")
    shutil.rmtree(src, ignore_errors=True)
    os.makedirs(os.path.dirname(src), exist_ok=True)
    run(["dpkg-source", "-q", "-x", os.path.join(folder, DEBIAN["dsc"][0]), src], stdout=subprocess.DEVNULL)
    return src


# --- the armv7l build ------------------------------------------------------------------------------------------
def cross_pyconfig(include: str) -> str:
    """Python's headers are the same on every machine but pyconfig.h, which holds the machine's type sizes: rewrite
    the build Python's SIZEOF_*/ALIGNOF_* for 32-bit ARM by asking the cross compiler, and drop the x86-only
    features. The limited API (abi3) uses little of it; the emulated-ARM tests check the result."""
    with open(os.path.join(include, "pyconfig.h")) as handle:
        text = handle.read()
    names = re.findall(r"^#define ((?:SIZEOF|ALIGNOF)_\w+) \d+$", text, re.M)

    def ctype(macro: str) -> str:
        kind, rest = macro.split("_", 1)
        rest = rest.lower()
        special = {"void_p": "void *", "_bool": "_Bool", "max_align_t": "max_align_t"}
        if rest in special:
            return special[rest]
        return rest if rest.endswith("_t") else rest.replace("_", " ")

    probe = ["#define _GNU_SOURCE", "#define _FILE_OFFSET_BITS 64", "#include <stddef.h>", "#include <stdint.h>",
             "#include <stdio.h>", "#include <wchar.h>", "#include <pthread.h>", "#include <sys/types.h>",
             "#include <time.h>"]
    for macro in names:
        op = "sizeof" if macro.startswith("SIZEOF") else "_Alignof"
        probe.append(f"char probe_{macro}[{op}({ctype(macro)})];")
    work = work_dir()
    with open(os.path.join(work, "probe.c"), "w") as handle:
        handle.write("\n".join(probe) + "\n")
    run([f"{CROSS}-gcc", "-c", "probe.c", "-o", "probe.o"], cwd=work)
    out = subprocess.run([f"{CROSS}-nm", "-S", "probe.o"], cwd=work, capture_output=True, text=True,
                         check=True).stdout
    sizes = {m.group(2): int(m.group(1), 16) for m in re.finditer(r"^\w+ (\w+) \w (?:probe_)(\w+)$", out, re.M)}
    missing = set(names) - set(sizes)
    if missing:
        raise SystemExit(f"bundle: could not probe {sorted(missing)}")
    for macro, size in sizes.items():
        text = re.sub(rf"^#define {macro} \d+$", f"#define {macro} {size}", text, flags=re.M)
    for x86 in ("HAVE_GCC_ASM_FOR_X64", "HAVE_GCC_ASM_FOR_X87", "HAVE_GCC_UINT128_T", "PY_HAVE_PERF_TRAMPOLINE",
                "HAVE_BUILTIN_ATOMIC"):
        text = re.sub(rf"^#define {x86} .*$", f"/* {x86}: not on 32-bit ARM */", text, flags=re.M)
    folder = os.path.join(work, "python-include-armhf")    # a copy: Python.h finds pyconfig.h beside itself
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(include, folder)
    with open(os.path.join(folder, "pyconfig.h"), "w") as handle:
        handle.write(text)
    return folder


def build_libzmq(src: str) -> str:
    """Static, position-independent libzmq for armhf: tcp and ipc only (no CURVE, libsodium, TLS, PGM, NORM)."""
    build = os.path.join(work_dir(), "libzmq-build")
    prefix = os.path.join(work_dir(), "libzmq-armhf")
    if os.path.exists(os.path.join(prefix, "lib", "libzmq.a")):
        return prefix
    shutil.rmtree(build, ignore_errors=True)
    say("building libzmq (static, armhf)")
    run(["cmake", "-S", src, "-B", build, "-G", "Unix Makefiles", "-DCMAKE_BUILD_TYPE=Release",
         "-DCMAKE_SYSTEM_NAME=Linux", "-DCMAKE_SYSTEM_PROCESSOR=arm",
         f"-DCMAKE_C_COMPILER={CROSS}-gcc", f"-DCMAKE_CXX_COMPILER={CROSS}-g++",
         "-DCMAKE_FIND_ROOT_PATH=/usr/" + CROSS, "-DCMAKE_FIND_ROOT_PATH_MODE_PROGRAM=NEVER",
         "-DCMAKE_FIND_ROOT_PATH_MODE_LIBRARY=ONLY", "-DCMAKE_FIND_ROOT_PATH_MODE_INCLUDE=ONLY",
         "-DCMAKE_FIND_ROOT_PATH_MODE_PACKAGE=ONLY", "-DCMAKE_POSITION_INDEPENDENT_CODE=ON",
         f"-DCMAKE_INSTALL_PREFIX={prefix}", "-DBUILD_SHARED=OFF", "-DBUILD_STATIC=ON", "-DBUILD_TESTS=OFF",
         "-DWITH_LIBSODIUM=OFF", "-DENABLE_CURVE=OFF", "-DWITH_TLS=OFF", "-DENABLE_WS=OFF", "-DENABLE_DRAFTS=OFF",
         "-DWITH_OPENPGM=OFF", "-DWITH_NORM=OFF", "-DWITH_VMCI=OFF", "-DWITH_LIBBSD=OFF", "-DWITH_DOCS=OFF",
         "-DWITH_DOC=OFF", "-DWITH_PERF_TOOL=OFF", "-DENABLE_CPACK=OFF", "-DENABLE_PRECOMPILED=OFF",
         "-DZMQ_HAVE_TIPC=OFF", "-DPOLLER=epoll", "-DLIBZMQ_WERROR=OFF"],
        stdout=subprocess.DEVNULL)
    run(["cmake", "--build", build, "-j", str(os.cpu_count() or 2)], stdout=subprocess.DEVNULL)
    run(["cmake", "--install", build], stdout=subprocess.DEVNULL)
    return prefix


def build_pyzmq_armv7l(out: str) -> None:
    """pyzmq's Cython backend compiled for armhf against the static libzmq, as a cp312-abi3 extension."""
    work = work_dir()
    os.makedirs(work, exist_ok=True)
    src = fetch_zeromq()
    libzmq = build_libzmq(src)
    tools = os.path.join(work, "cython")
    if not os.path.exists(os.path.join(tools, "Cython")):
        with zipfile.ZipFile(fetch_pypi("cython")) as whl:
            whl.extractall(tools)
    pyzmq = os.path.join(work, f"pyzmq-{PYZMQ}")
    shutil.rmtree(pyzmq, ignore_errors=True)
    with tarfile.open(fetch_pypi("pyzmq_sdist")) as tar:
        tar.extractall(work, filter="data")
    ext_c = os.path.join(work, "_zmq.c")
    say("cython pyzmq backend")
    run([sys.executable, "-m", "cython", "--output-file", ext_c, "--module-name", "zmq.backend.cython._zmq",
         os.path.join(pyzmq, "zmq", "backend", "cython", "_zmq.py")],
        env={**os.environ, "PYTHONPATH": tools})
    include = sysconfig.get_paths()["include"]
    include = cross_pyconfig(include)
    so = os.path.join(work, "_zmq.abi3.so")
    say("compiling _zmq.abi3.so (armhf)")
    run([f"{CROSS}-g++", "-x", "c", "-O2", "-fPIC", "-shared", "-DPy_LIMITED_API=0x030C0000", "-DZMQ_STATIC=1",
         "-DNDEBUG", "-I" + include, "-I" + os.path.join(libzmq, "include"),
         "-I" + os.path.join(pyzmq, "zmq", "utils"), ext_c, "-x", "none",
         os.path.join(libzmq, "lib", "libzmq.a"), "-static-libstdc++", "-static-libgcc", "-lpthread",
         "-Wl,--as-needed", "-Wl,--build-id=none", "-s", "-o", so])
    # the pure-Python part of pyzmq, from the sdist (the same files the wheels carry), and the new extension
    shutil.copytree(os.path.join(pyzmq, "zmq"), os.path.join(out, "zmq"),
                    ignore=shutil.ignore_patterns("tests", "*.c", "*.pyx", "_zmq.py"))
    shutil.copy2(so, os.path.join(out, "zmq", "backend", "cython", "_zmq.abi3.so"))
    shutil.copy2(os.path.join(pyzmq, "LICENSE.md"), os.path.join(out, "zmq", "LICENSE.md"))
    shutil.copy2(os.path.join(src, "debian", "copyright"),
                 os.path.join(out, "zmq", "LICENSE.libzmq"))


# --- vendor/ ---------------------------------------------------------------------------------------------------
def build_vendor() -> str:
    """vendor/ for the pinned inputs, from the cache when it is there."""
    vendor = os.path.join(CACHE, f"vendor-{cache_key()}")
    if os.path.exists(os.path.join(vendor, ".done")):
        return vendor
    ensure_apt()
    shutil.rmtree(vendor, ignore_errors=True)
    py = os.path.join(vendor, "py")
    os.makedirs(py)
    with zipfile.ZipFile(fetch_pypi("supervisor")) as whl:
        for member in whl.namelist():
            if member.startswith("supervisor/") and "/tests/" not in member:
                whl.extract(member, py)
    with tarfile.open(fetch_pypi("msgpack_sdist")) as tar:       # pure Python only: no _cmsgpack, no .pyx
        top = tar.getnames()[0].split("/")[0]
        for member in tar.getmembers():
            rel = member.name[len(top) + 1:]
            if (rel.startswith("msgpack/") and rel.endswith(".py")) or rel == "COPYING":
                member.name = rel if rel != "COPYING" else "msgpack/COPYING"
                tar.extract(member, py, filter="data")
    aarch64 = os.path.join(vendor, "aarch64")
    with zipfile.ZipFile(fetch_pypi("pyzmq_aarch64")) as whl:
        whl.extractall(aarch64)
    build_pyzmq_armv7l(os.path.join(vendor, "armv7l"))
    open(os.path.join(vendor, ".done"), "w").close()
    return vendor


# --- the archive -----------------------------------------------------------------------------------------------
def git_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z", "--", *SHIPPED], cwd=ROOT, capture_output=True, check=True)
    return sorted(p for p in out.stdout.decode().split("\0") if p)


def source_epoch() -> int:
    out = subprocess.run(["git", "log", "-1", "--format=%ct"], cwd=ROOT, capture_output=True, text=True)
    return int(out.stdout.strip() or 0)


def make_archive(vendor: str, version: str) -> str:
    """A reproducible tar.gz: sorted entries, owner root, fixed times, no gzip time stamp."""
    top = f"{NAME}"
    epoch = source_epoch()
    entries = [(os.path.join(ROOT, rel), rel) for rel in git_files()]
    for dirpath, dirnames, filenames in os.walk(vendor):
        dirnames.sort()
        for name in sorted(filenames):
            if name == ".done" or name.endswith(".pyc"):
                continue
            path = os.path.join(dirpath, name)
            entries.append((path, os.path.join("vendor", os.path.relpath(path, vendor))))
    entries.sort(key=lambda e: e[1])
    os.makedirs(DIST, exist_ok=True)
    target = os.path.join(DIST, f"{NAME}-{version}.tar.gz")
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, rel in entries:
            info = tar.gettarinfo(path, arcname=f"{top}/{rel}")
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mtime = epoch
            info.mode = 0o755 if os.access(path, os.X_OK) else 0o644
            with open(path, "rb") as handle:
                tar.addfile(info, handle)
    with open(target, "wb") as handle, gzip.GzipFile(filename="", mode="wb", fileobj=handle, mtime=0,
                                                       compresslevel=9) as gz:
        gz.write(raw.getvalue())
    with open(target + ".sha256", "w") as handle:
        handle.write(f"{sha256(target)}  {os.path.basename(target)}\n")
    return target


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    started = time.monotonic()
    with open(os.path.join(ROOT, "VERSION")) as handle:
        version = handle.read().strip()
    vendor = build_vendor()
    target = make_archive(vendor, version)
    size_kib = os.path.getsize(target) / 1024
    say(f"{os.path.relpath(target, ROOT)}: {size_kib:.0f} KiB, sha256 {sha256(target)} "
        f"({time.monotonic() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
