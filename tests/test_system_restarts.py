"""End to end: kill -9 of each service; supervisord restarts it and the loop works again."""
from __future__ import annotations

import os
import signal
import time

import pytest

from scripts.stack import SERVICES
from tests.support import wait_for
from tests.system_support import (assert_never_over_cap, module_stack, settle)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    yield from module_stack(tmp_path_factory, "restarts")


@pytest.mark.parametrize("service", SERVICES)
def test_kill_9_each_service_and_the_loop_works_again(stack, service):
    settle(stack, 300)
    state, pid = stack.status()[service]
    assert state == "RUNNING"
    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    new = wait_for(lambda: (lambda s: s[0] == "RUNNING" and s[1] != pid and s)(stack.status()[service]), 20, 0.2,
                   f"{service} restarted by supervisord")
    restarted_s = time.monotonic() - killed_at
    log_len = len(stack.sim_state()["limit_log"])
    stack.set_load(550)
    wait_for(lambda: len(stack.sim_state()["limit_log"]) > log_len, 10 + 5, 0.2,
             f"a new limit command after {service} came back")
    took = settle(stack, 550)
    print(f"{service}: restarted in {restarted_s:.1f} s (pid {pid} -> {new[1]}), settled {took:.1f} s after the step")
    assert_never_over_cap(stack)
