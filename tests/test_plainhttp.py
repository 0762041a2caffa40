"""The pollers do not load ssl (libssl, ~2.7 MiB PSS each) unless a configured URL is https://."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support import base_sections, wait_for, write_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PROBE = """
import sys
from common.plainhttp import skip_ssl_unless_needed
print(skip_ssl_unless_needed(sys.argv[1:]))
import http.client
print(hasattr(http.client, "HTTPSConnection"))
try:
    import ssl
    print("ssl")
except ImportError:
    print("no ssl")
"""


@pytest.mark.parametrize("urls, expected", [
    (["http://192.168.1.5", "192.168.1.6:8080", ""], ["True", "False", "no ssl"]),
    (["192.168.1.5", "HTTPS://dtu.example"], ["False", "True", "ssl"]),
])
def test_ssl_is_blocked_only_without_https_urls(urls, expected):
    out = subprocess.run([sys.executable, "-c", PROBE, *urls], capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert out.stdout.split() == [w for line in expected for w in line.split()], out.stderr


def _libssl_mapped(pid: int) -> bool:
    with open(f"/proc/{pid}/maps") as handle:
        return "libssl" in handle.read()


@pytest.mark.parametrize("opendtu_host, ssl_expected", [("127.0.0.1:9", False), ("https://127.0.0.1:9", True)])
def test_dtu_poller_process_loads_ssl_only_for_an_https_dtu(procs, rundir, opendtu_host, ssl_expected):
    path = write_config(rundir, base_sections(rundir, opendtu={"host": opendtu_host}))
    proc = procs.python("dtu", "services.dtu_poller", "--config", path)
    wait_for(lambda: "polling" in proc.output(), 15, 0.1, "dtu_poller started polling")
    assert proc.alive() and _libssl_mapped(proc.pid) is ssl_expected


def test_shelly_poller_process_does_not_load_ssl(procs, rundir):
    path = write_config(rundir, base_sections(rundir))
    proc = procs.python("shelly", "services.shelly_poller", "--config", path)
    wait_for(lambda: "no life signal" in proc.output(), 15, 0.1, "shelly_poller started")
    assert proc.alive() and not _libssl_mapped(proc.pid)
