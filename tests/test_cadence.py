"""How often things go out (issue 16, a footprint a GX can carry): the status gate, the controller's setpoint repeat
and status heartbeat, venus_publisher's next redraw time and its ctypes GLib loop."""
import os

from common import messages as m
from common.cadence import STATUS_HEARTBEAT_S, StatusGate
from services.controller import core
from services.venus_publisher.model import Inputs, Params
from tests.test_controller_support import Driver, battery, dtu_status, grid, inverter


def test_status_gate_sends_changes_at_once_and_repeats_only_as_a_heartbeat():
    gate = StatusGate(5.0, volatile=("last_ok_t_mono",))
    assert gate.offer({"ok": True, "last_ok_t_mono": 1.0}, 1.0)                  # the first one
    assert not gate.offer({"ok": True, "last_ok_t_mono": 2.0}, 2.0)              # only the time moved
    assert gate.offer({"ok": False, "last_ok_t_mono": 2.0}, 3.0)                 # news
    assert not gate.offer({"ok": False, "last_ok_t_mono": 2.0}, 7.9)
    assert gate.next_t() == 8.0 and gate.heartbeat_due(8.0)
    assert gate.offer({"ok": False, "last_ok_t_mono": 2.0}, 8.0)                 # the heartbeat


def _driver():
    d = Driver(balcony_configured=False, relay_first_decision_s=1e6)
    d.step([dtu_status(["A"]), battery(), inverter("A", d.now - 0.5)])
    return d


def test_setpoint_repeats_ride_on_the_meter_samples_and_never_lag_more_than_the_slack():
    d = _driver()
    sent, by_timer = [], []
    for k in range(1, 31):              # a 1 Hz meter whose samples come a little early or late
        t = d.now + 1.0 + (0.03 if k % 2 else -0.03)
        while True:                     # what the service does: sleep until next_wake_t or the next sample
            wake = core.next_wake_t(d.state, d.params, d.now)
            if wake >= t:
                break
            if d.step([], dt=wake - d.now).get(m.CTRL_SETPOINT):
                sent.append(d.now)
                by_timer.append(d.now)
        if d.step([grid(300, t), battery(), inverter("A", t - 0.5)], dt=t - d.now).get(m.CTRL_SETPOINT):
            sent.append(d.now)
    assert by_timer == []               # no wake-up of its own for a repeat
    gaps = [b - a for a, b in zip(sent, sent[1:])]
    assert gaps and max(gaps) <= d.params.setpoint_repeat_s + core.REPEAT_SLACK_S + 1e-9
    assert min(gaps) >= d.params.setpoint_repeat_s - 2 * core.REPEAT_SLACK_S - 1e-9


def test_ctrl_status_is_a_heartbeat_unless_something_changes():
    d = _driver()
    statuses = []
    for _ in range(20):                 # steady: grid and battery fresh every second
        got = d.step([grid(300, d.now + 1.0), battery(), inverter("A", d.now + 0.5)], dt=1.0)
        statuses += got.get(m.CTRL_STATUS, [])
    assert 3 <= len(statuses) <= 8      # every 5 s (and the decisions of the first seconds)
    got = d.step([battery()], dt=d.params.grid_stale_s + 0.5)    # the grid goes stale: at once
    assert "grid" in got[m.CTRL_STATUS][-1]["stale"]


def test_venus_publisher_wakes_when_a_shown_value_turns_stale():
    params = Params(grid_stale_s=5.0, dtu_stale_s=30.0, status_stale_s=15.0)
    inputs = Inputs(started_t=0.0)
    assert inputs.next_stale_t(1.0, params) == 15.0                              # the start-up grace ends
    inputs.on_message(m.METER_GRID, {"power_w": 1.0, "sample_t_mono": 19.5, "phases": []}, 20.0)
    assert inputs.next_stale_t(20.0, params) == 24.5                             # the sample's own time counts
    assert STATUS_HEARTBEAT_S * 2 <= params.status_stale_s


def test_the_glib_module_runs_timeouts_idles_fd_watches_and_removes_sources():
    from services.venus_publisher import glib as GLib
    loop = GLib.MainLoop()
    seen = []
    read_fd, write_fd = os.pipe()

    def on_fd(fd, condition):
        seen.append(("fd", os.read(fd, 10)))
        return True

    def failing():
        raise ValueError("a bug")

    def tick(name):
        seen.append(name)
        return len([s for s in seen if s == name]) < 2      # twice, then the source goes

    watch = GLib.io_add_watch(read_fd, GLib.PRIORITY_DEFAULT, GLib.IO_IN, on_fd)
    GLib.idle_add(lambda: seen.append("idle") and False)
    GLib.timeout_add(10, tick, "tick")
    GLib.timeout_add(30, failing)                           # logged, the source removed, the loop goes on
    GLib.timeout_add(40, lambda: os.write(write_fd, b"x") and False)
    never = GLib.timeout_add(60_000, lambda: seen.append("never"))
    GLib.timeout_add(150, loop.quit)
    GLib.timeout_add(5_000, loop.quit)                      # bounds the test if the first quit did not run
    loop.run()
    assert seen.count("tick") == 2 and "idle" in seen and ("fd", b"x") in seen and "never" not in seen
    assert GLib.source_remove(never) and GLib.source_remove(watch)
    os.close(read_fd)
    os.close(write_fd)
