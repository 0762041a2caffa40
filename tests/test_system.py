"""End to end: the four services under supervisord (the repository's supervisord.conf) against the simulators,
on a private D-Bus. One stack per module; each test first brings the plant to a settled state it asserts."""
from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from common import messages as m
from scripts.stack import SERVICES, Stack
from tests.support import wait_for

TARGET_W = 25
CAP_W = 700                # [control] max_feed_in default; the balcony system produces 0 W in the quiet scenario
SETTLED_BAND_W = 45        # |grid - target| counted as settled
SETTLE_S = 45              # stated settling time after a load step (README)
MIN_PERCENT = 1.0          # [control] min_percent default: the safe minimum
QUANTUM_W = 8              # 1 % of the largest inverter (800 W): rounding of a relative limit


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("stack"))
    rundir = f"/tmp/do-sys-{os.getpid()}"
    st = Stack(folder, rundir, scenario="quiet", sim_args=["--failure-timeout", "4", "--limit-readback", "2",
                                                              "--retry-after", "5"],
               config_extra={"relay": {"interval": 60},
                             # faster staleness than the defaults, so that each fault shows its reaction quickly
                             "control": {"relay_first_decision_s": 3, "dtu_stale_s": 8, "stop_hold_s": 5}})
    try:
        st.start()
        yield st
    finally:
        st.stop()
        subprocess.run(["rm", "-rf", rundir], check=False)


def grid_now(st: Stack) -> float:
    return st.sim_state()["grid_w"]


def settle(st: Stack, load_w: float, timeout_s: float = SETTLE_S) -> float:
    """Set the load and wait until the grid stays within the band of the target for 2 s; returns seconds taken."""
    st.set_load(load_w)
    start = time.monotonic()
    inside_since = [None]

    def settled():
        grid = grid_now(st)
        if abs(grid - TARGET_W) <= SETTLED_BAND_W:
            inside_since[0] = inside_since[0] or time.monotonic()
            return time.monotonic() - inside_since[0] >= 2
        inside_since[0] = None
        return False

    wait_for(settled, timeout_s, 0.2, f"grid within {SETTLED_BAND_W} W of {TARGET_W} W at load {load_w} W")
    return time.monotonic() - start - 2


def commanded_totals_w(limit_log: list[dict]) -> list[float]:
    """Σ over inverters of the latest accepted limit command, after each command."""
    latest: dict[str, float] = {}
    totals = []
    for entry in limit_log:
        if entry.get("accepted", True):
            latest[entry["serial"]] = entry["w"]
            totals.append(sum(latest.values()))
    return totals


def assert_never_over_cap(st: Stack, cap_w: float = CAP_W) -> None:
    totals = commanded_totals_w(st.sim_state()["limit_log"])
    assert totals, "no limit command reached the DTU"
    assert max(totals) <= cap_w + QUANTUM_W, f"commanded {max(totals)} W > cap {cap_w} W"


def export_wh(st: Stack) -> float:
    return st.sim_state()["energy_wh"]["grid_export"]


def test_the_loop_closes_after_load_steps(stack):
    first = settle(stack, 300, timeout_s=90)
    up_start = export_wh(stack)
    stack.set_load(1800)                                    # +1500 W: more than the cap can cover
    wait_for(lambda: stack.sim_state()["ac_total_w"] >= CAP_W - 120, SETTLE_S, 0.2, "output up to the cap")
    state = stack.sim_state()
    assert state["ac_total_w"] <= CAP_W + QUANTUM_W + 10
    before_drop = export_wh(stack)
    down = settle(stack, 300)                                # -1500 W
    export_on_drop = export_wh(stack) - before_drop
    print(f"settled in {first:.1f} s from start, {down:.1f} s after -1500 W; export on the drop "
          f"{export_on_drop:.2f} Wh; export while rising {before_drop - up_start:.2f} Wh")
    assert before_drop - up_start < 0.05
    assert export_on_drop < 2.0                              # ~700 W for < 10 s
    assert_never_over_cap(stack)


def test_settings_written_on_dbus_reach_the_controller_and_cap_the_output(stack):
    env = {**os.environ, **stack.env()}
    out = subprocess.run(["dbus-send", "--system", "--print-reply", "--dest=com.victronenergy.acload.http_59",
                          "/MaxFeedIn", "com.victronenergy.BusItem.SetValue", "variant:int32:400"],
                         capture_output=True, text=True, env=env, timeout=20)
    assert "int32 0" in out.stdout, out.stdout + out.stderr
    stack.set_load(1500)
    wait_for(lambda: abs(stack.sim_state()["ac_total_w"] - 400) <= 40, SETTLE_S, 0.2, "output at the new cap 400 W")
    log_len = len(stack.sim_state()["limit_log"])
    time.sleep(3)   # observe a window at the new cap: no command above it
    later = stack.sim_state()["limit_log"][log_len:]
    assert all(total <= 400 + QUANTUM_W for total in commanded_totals_w(stack.sim_state()["limit_log"])[log_len:]), later
    bad = subprocess.run(["dbus-send", "--system", "--print-reply", "--dest=com.victronenergy.acload.http_59",
                          "/MaxFeedIn", "com.victronenergy.BusItem.SetValue", "variant:int32:900"],
                         capture_output=True, text=True, env=env, timeout=20)
    assert "int32 0" not in bad.stdout
    ok = subprocess.run(["dbus-send", "--system", "--print-reply", "--dest=com.victronenergy.acload.http_59",
                         "/MaxFeedIn", "com.victronenergy.BusItem.SetValue", f"variant:int32:{CAP_W}"],
                        capture_output=True, text=True, env=env, timeout=20)
    assert "int32 0" in ok.stdout
    settle(stack, 300)


def _set_max_feed_in(stack, watts: int) -> None:
    out = subprocess.run(["dbus-send", "--system", "--print-reply", "--dest=com.victronenergy.acload.http_59",
                          "/MaxFeedIn", "com.victronenergy.BusItem.SetValue", f"variant:int32:{watts}"],
                         capture_output=True, text=True, env={**os.environ, **stack.env()}, timeout=20)
    assert "int32 0" in out.stdout, out.stdout + out.stderr


def test_a_cap_of_0_w_stops_the_inverters_and_they_start_again(stack):
    """MaxFeedIn 0 is below every inverter's minimum limit: they are stopped over /api/power/config (a limit
    cannot go below min_percent), deliver nothing, and start again once the cap allows (after stop_hold_s, 5 s
    here)."""
    settle(stack, 300)
    _set_max_feed_in(stack, 0)
    try:
        wait_for(lambda: not any(inv["enabled"] for inv in stack.sim_state()["inverters"]), 20, 0.2,
                 "every inverter stopped")
        wait_for(lambda: stack.sim_state()["ac_total_w"] == 0, 20, 0.2, "no output at a cap of 0 W")
    finally:
        _set_max_feed_in(stack, CAP_W)
    wait_for(lambda: all(inv["enabled"] for inv in stack.sim_state()["inverters"]), 30, 0.2,
             "every inverter started again")
    settle(stack, 300)


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


FAULTS = [
    # (device, kind, what the bus must show)
    ("grid", "refused", "grid"), ("grid", "hang", "grid"), ("grid", "http401", "grid"), ("grid", "invalid", "grid"),
    ("opendtu", "refused", "dtu"), ("opendtu", "http429", "dtu"), ("opendtu", "http500", "dtu"),
    ("opendtu", "html", "dtu"), ("opendtu", "null", "dtu"), ("opendtu", "stale", "dtu"),
]


@pytest.mark.parametrize("device, kind, stale_input", FAULTS)
def test_fault_modes_fail_safe(stack, device, kind, stale_input):
    settle(stack, 300)
    sub = stack.subscriber([m.CTRL_STATUS, m.METER_STATUS, m.DTU_STATUS])
    export_before = export_wh(stack)
    stack.fault(device, kind)
    try:
        seen = {"status": False, "stale": False}

        def reaction():
            msg = sub.recv(timeout_s=0.2)
            if msg is None:
                return False
            if msg.topic == m.METER_STATUS and device == "grid" and msg.body["role"] == "grid" and not msg.body["ok"]:
                seen["status"] = True
            if msg.topic == m.DTU_STATUS and device == "opendtu" and not msg.body["ok"]:
                seen["status"] = True
            if msg.topic == m.CTRL_STATUS and stale_input in msg.body["stale"]:
                seen["stale"] = True
            return seen["stale"] and (seen["status"] or kind == "stale")

        wait_for(reaction, 45, 0, f"the controller to mark {stale_input} stale during {device} {kind}")
        # until then the last grid sample was fresh and may still have been acted on (a raise included); from the
        # stale mark on, a newer setpoint replaces any unsent one, so every POST must be a move down
        stale_log_len = len(stack.sim_state()["limit_log"])
        stack.set_load(100)                                  # a load drop during the fault: output must not rise
        time.sleep(3)  # observation window for the fault's effect on export
        exported = export_wh(stack) - export_before
        new_cmds = stack.sim_state()["limit_log"][stale_log_len:]
        print(f"{device} {kind}: export during the fault {exported:.2f} Wh; {len(new_cmds)} commands")
        assert exported < 1.0
        if device == "grid":
            # without a grid reading the only safe move is down: every command now is at most the inverter's
            # limit before the stale mark
            log = stack.sim_state()["limit_log"]
            before = {entry["serial"]: entry["pct"] for entry in log[:stale_log_len]}
            for entry in new_cmds:
                assert entry["pct"] <= before.get(entry["serial"], 100.0), (entry, before)
            last = {entry["serial"]: entry["pct"] for entry in log}
            assert last and all(pct == MIN_PERCENT for pct in last.values()), last   # the safe minimum
    finally:
        stack.fault(device, None)
        sub.close()
    settle(stack, 300, timeout_s=60)       # the DTU poller's backoff is at most 10 s
    assert_never_over_cap(stack)


def test_limit_failure_is_reported_not_applied(stack):
    settle(stack, 300)
    sub = stack.subscriber([m.DTU_ACK])
    stack.fault("opendtu", "limit_failure")
    try:
        stack.set_load(600)
        ack = wait_for(lambda: (lambda msg: msg is not None and msg.body["command"] == "limit"
                                and msg.body["outcome"] in ("failure", "timeout") and msg)(sub.recv(timeout_s=0.2)),
                       40, 0, "a failed limit acknowledgement")
        assert ack.body["serial"]
    finally:
        stack.fault("opendtu", None)
        sub.close()
    settle(stack, 300)


def test_battery_gone_means_minimum_output_and_no_keepalive(stack):
    settle(stack, 300)
    sub = stack.subscriber([m.CTRL_STATUS, m.VENUS_BATTERY, m.CTRL_RELAY])
    keepalives = []

    def take(pred):
        def check():
            msg = sub.recv(timeout_s=0.2)
            if msg is not None and msg.topic == m.CTRL_RELAY and msg.body["on"]:
                keepalives.append(msg.body)
            return msg is not None and pred(msg)
        return check

    stack.fault("battery", "absent")
    try:
        wait_for(take(lambda msg: msg.topic == m.VENUS_BATTERY and not msg.body["present"]), 30, 0,
                 "venus.battery present=false")
        wait_for(take(lambda msg: msg.topic == m.CTRL_STATUS and "battery" in msg.body["stale"]), 30, 0,
                 "the controller to mark the battery stale")
        wait_for(lambda: take(lambda msg: False)() or stack.sim_state()["ac_total_w"] <= 60, 30, 0.2,
                 "output down to the minimum")
        end = time.monotonic() + 3
        while time.monotonic() < end:
            take(lambda msg: False)()
        assert keepalives == [], "a relay keep-alive was sent without a battery"
    finally:
        stack.fault("battery", None)
        sub.close()


def test_garbage_on_the_bus_is_dropped_and_the_services_carry_on(stack):
    """A rogue publisher takes the shelly_poller's endpoint and sends garbage, an unknown version and bad bodies
    between valid grid samples: every subscriber drops them, nobody crashes, the valid samples still count."""
    import msgpack
    import zmq
    from common.bus import encode, endpoint

    settle(stack, 300)
    pids = {name: pid for name, (state, pid) in stack.status().items()}
    stack.supervisorctl("stop", "shelly_poller")
    rogue = zmq.Context.instance().socket(zmq.PUB)
    rogue.bind(endpoint(stack.rundir, "shelly_poller"))
    sub = stack.subscriber([m.CTRL_STATUS])
    try:
        valid = {"device": "SHEM", "power_w": 4000.0, "sign": "positive_is_import",
                 "phases": [{"power_w": 4000.0}], "sample_t_mono": 0.0}
        hostile = [
            [b"meter.grid", b"\xc1 not msgpack"],
            [b"meter.grid", msgpack.packb({"v": 2, "src": "shelly_poller", "seq": 1, "t_mono": 0, "t_wall": 0,
                                           "body": valid})],
            [b"meter.grid", msgpack.packb({"v": 1, "src": "shelly_poller", "seq": 2, "t_mono": 0, "t_wall": 0,
                                           "body": {**valid, "power_w": "lots"}})],
            [b"meter.grid", msgpack.packb({"v": 1, "src": "shelly_poller", "seq": 3, "t_mono": 0, "t_wall": 0,
                                           "body": {**valid, "power_w": float("nan")}})],
            [b"ctrl.setpoint", msgpack.packb({"v": 1, "src": "shelly_poller", "seq": 4, "t_mono": 0, "t_wall": 0,
                                              "body": {"limits": [{"serial": "x", "limit_pct": 100}]}})],
            [b"meter.grid"],
        ]
        seq = 10
        deadline = time.monotonic() + 8
        saw_high_grid = False
        while time.monotonic() < deadline:
            for frames in hostile:
                rogue.send_multipart(frames)
            seq += 1
            from common.clock import SYSTEM_CLOCK
            body = {**valid, "sample_t_mono": SYSTEM_CLOCK.monotonic()}
            rogue.send_multipart(encode("shelly_poller", seq, m.METER_GRID, body))
            msg = sub.recv(timeout_s=0.3)
            if msg is not None and msg.body["grid_w"] == 4000.0:
                saw_high_grid = True
        assert saw_high_grid, "the controller ignored the valid samples between the garbage"
        after = {name: pid for name, (state, pid) in stack.status().items() if state == "RUNNING"}
        for name in ("dtu_poller", "controller", "venus_publisher"):
            assert after.get(name) == pids[name], f"{name} restarted: garbage on the bus crashed it"
        assert_never_over_cap(stack)
    finally:
        rogue.close(0)
        sub.close()
        stack.supervisorctl("start", "shelly_poller")
    wait_for(lambda: stack.status()["shelly_poller"][0] == "RUNNING", 20, 0.2, "shelly_poller back")
    settle(stack, 300, timeout_s=60)
