import os
import shutil
import tempfile

import pytest

from common.dbus_private import PrivateDbus
from tests.support import Processes


@pytest.fixture
def rundir():
    """A short folder (ipc:// paths must stay under 107 bytes), removed afterwards."""
    path = tempfile.mkdtemp(prefix="do-", dir="/tmp")
    os.chmod(path, 0o700)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def procs(tmp_path):
    manager = Processes(str(tmp_path))
    yield manager
    manager.stop_all()


@pytest.fixture
def private_dbus():
    with PrivateDbus() as bus:
        yield bus
