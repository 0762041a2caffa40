"""The bus: round trips between processes over real sockets, hostile frames, publisher restarts, busmon."""
import json
import os
import signal
import stat

import msgpack
import pytest
import zmq

from common import messages as m
from common.bus import Publisher, RundirError, Subscriber, decode, DropReason, encode, endpoint, ensure_rundir
from common.config import CONFIG_EXIT_CODE
from common.service import run_service
from tests.support import PYTHON, base_sections, wait_for, write_config

RELAY_BODY = {"on": True, "reason": "test"}


def start_peer(procs, rundir, service="controller", topic=m.CTRL_RELAY, body=RELAY_BODY, interval_s=0.05):
    proc = procs.python(f"peer-{service}", "tests.bus_peer", service, rundir, topic, json.dumps(body), str(interval_s))
    wait_for(lambda: "ready" in proc.output(), 20, what="peer ready")
    return proc


def recv_until(sub, predicate, timeout_s=20.0):    # a peer process starts slowly on a loaded machine
    got = []

    def poll():
        msg = sub.recv(timeout_s=0.1)
        if msg is not None:
            got.append(msg)
            return predicate(msg)
        return False

    wait_for(poll, timeout_s, interval_s=0, what="a matching message")
    return got


def test_round_trip_between_two_processes(procs, rundir):
    sub = Subscriber(rundir, topics=["ctrl."])
    assert sub.services == ["controller"]
    start_peer(procs, rundir)
    got = recv_until(sub, lambda msg: msg.seq >= 3)
    msg = got[-1]
    assert (msg.topic, msg.src, msg.body) == (m.CTRL_RELAY, "controller", RELAY_BODY)
    assert msg.t_mono > 0 and msg.t_wall > 1.6e9
    sub.close()


def test_garbage_unknown_version_and_bad_bodies_are_dropped_and_counted(rundir):
    # A rogue PUB bound where the controller would be: every kind of hostile frame, then one good message.
    ctx = zmq.Context.instance()
    rogue = ctx.socket(zmq.PUB)
    rogue.bind(endpoint(rundir, "controller"))
    sub = Subscriber(rundir, topics=[""], services=["controller"])
    good = encode("controller", 7, m.CTRL_RELAY, RELAY_BODY)
    bad_frames = [
        [b"ctrl.relay", b"\xc1\xff garbage"],                                   # not msgpack
        [b"ctrl.relay", msgpack.packb({"v": 99, "src": "controller", "seq": 1, "t_mono": 1.0, "t_wall": 1.0,
                                       "body": RELAY_BODY})],                    # unknown version
        [b"ctrl.relay", msgpack.packb({"v": 1, "src": "controller", "seq": 2, "t_mono": 1.0, "t_wall": 1.0,
                                       "body": {"on": "yes", "reason": "x"}})],  # bad type
        [b"ctrl.relay", msgpack.packb({"v": 1, "src": "controller", "seq": 3, "t_mono": 1.0, "t_wall": 1.0,
                                       "body": {"reason": "x"}})],               # missing field
        [b"ctrl.relay", msgpack.packb({"v": 1, "src": "dtu_poller", "seq": 4, "t_mono": 1.0, "t_wall": 1.0,
                                       "body": RELAY_BODY})],                    # wrong owner
        [b"ctrl.nonsense", msgpack.packb({"v": 1, "src": "controller", "seq": 5, "t_mono": 1.0, "t_wall": 1.0,
                                          "body": {}})],                         # unknown topic
        [b"ctrl.relay"],                                                          # one frame
        [b"ctrl.relay", msgpack.packb([1, 2, 3])],                               # not a map
    ]

    def send_all_and_get_good():
        for frames in bad_frames:
            rogue.send_multipart(frames)
        rogue.send_multipart(good)
        return sub.recv(timeout_s=0.2)

    msg = wait_for(send_all_and_get_good, 10, interval_s=0, what="the good message after the bad ones")
    assert msg.body == RELAY_BODY and msg.seq == 7
    dropped = sub.stats.dropped
    for kind in ("garbage", "version", "schema", "topic", "frames"):
        assert dropped[kind] >= 1, (kind, dict(dropped))
    rogue.close(0)
    sub.close()


def test_nan_and_bool_for_number_are_rejected():
    body = {k: None for k in m.SCHEMAS[m.VENUS_BATTERY]}
    body.update(present=True, service="x", soc_pct=float("nan"))
    with pytest.raises(m.SchemaError):
        m.check_body(m.VENUS_BATTERY, body)
    with pytest.raises(m.SchemaError):
        m.check_body(m.VENUS_SETTING, {"request_id": "a", "name": "max_feed_in", "value": True})
    frames = encode("venus_publisher", 1, m.VENUS_SETTING, {"request_id": "a", "name": "max_feed_in", "value": 700})
    assert decode(frames).body["value"] == 700
    with pytest.raises(DropReason):
        decode([frames[0], frames[1][:-3]])


def test_publisher_refuses_foreign_topics_and_bad_bodies(rundir):
    pub = Publisher("shelly_poller", rundir)
    with pytest.raises(m.SchemaError):
        pub.publish(m.CTRL_RELAY, RELAY_BODY)
    with pytest.raises(m.SchemaError):
        pub.publish(m.RELAY_STATE, {"command_on": True})
    pub.close()


def test_subscriber_survives_kill_9_and_restart_of_its_publisher(procs, rundir):
    sub = Subscriber(rundir, topics=["ctrl.relay"])
    first = start_peer(procs, rundir)
    recv_until(sub, lambda msg: msg.seq >= 5)
    procs.stop(first, signal.SIGKILL)
    assert first.popen.returncode == -signal.SIGKILL
    start_peer(procs, rundir, body={"on": False, "reason": "second life"})
    got = recv_until(sub, lambda msg: msg.body["reason"] == "second life" and msg.seq >= 3, timeout_s=20)
    assert got[-1].body["on"] is False
    assert sub.stats.restarts["controller"] >= 1
    sub.close()


def test_seq_gaps_are_counted(rundir):
    ctx = zmq.Context.instance()
    rogue = ctx.socket(zmq.PUB)
    rogue.bind(endpoint(rundir, "controller"))
    sub = Subscriber(rundir, topics=[""], services=["controller"])
    wait_for(lambda: (rogue.send_multipart(encode("controller", 1, m.CTRL_RELAY, RELAY_BODY)),
                      sub.recv(timeout_s=0.1))[1], 10, interval_s=0, what="first message")
    for seq in (2, 3, 10):
        rogue.send_multipart(encode("controller", seq, m.CTRL_RELAY, RELAY_BODY))
    got = [sub.recv(timeout_s=10) for _ in range(3)]
    assert [msg.seq for msg in got] == [2, 3, 10]
    assert sub.stats.gaps["controller"] == 6
    rogue.close(0)
    sub.close()


def test_busmon_prints_messages_from_a_live_publisher(procs, rundir):
    start_peer(procs, rundir, service="venus_publisher", topic=m.VENUS_SETTING,
               body={"request_id": "r1", "name": "max_feed_in", "value": 650})
    mon = procs.python("busmon", "common.busmon", "--rundir", rundir, "venus.", "--count", "3")
    wait_for(lambda: not mon.alive(), 20, what="busmon to print 3 lines and stop")
    lines = [line for line in mon.output().splitlines() if line.strip()]
    assert len(lines) == 3, lines
    for line in lines:
        assert "venus_publisher" in line and "venus.setting" in line and '"value":650' in line and "#" in line
    mon_json = procs.python("busmon-json", "common.busmon", "--rundir", rundir, "--json", "--count", "2")
    wait_for(lambda: not mon_json.alive(), 20, what="busmon --json")
    records = [json.loads(line) for line in mon_json.output().splitlines() if line.strip()]
    assert len(records) == 2 and all(r["src"] == "venus_publisher" and r["body"]["value"] == 650 for r in records)
    assert records[1]["seq"] > records[0]["seq"]


def test_busmon_filters_and_stats(procs, rundir):
    start_peer(procs, rundir, interval_s=0.02)
    quiet = procs.python("busmon-filter", "common.busmon", "--rundir", rundir, "meter.", "--duration", "1.5")
    stats = procs.python("busmon-stats", "common.busmon", "--rundir", rundir, "--stats", "--duration", "2",
                         "--every", "1")
    wait_for(lambda: not quiet.alive() and not stats.alive(), 30, what="busmon runs to end")
    assert "ctrl.relay" not in quiet.output()
    assert "ctrl.relay" in stats.output() and "/s" in stats.output()


# ------------------------------------------------------------------ times and the run folder (issue 14.8)

def _envelope(t_mono, topic=m.CTRL_RELAY, body=None, t_wall=1.7e9):
    return [topic.encode(), msgpack.packb({"v": 1, "src": "controller", "seq": 1, "t_mono": t_mono,
                                           "t_wall": t_wall, "body": body or RELAY_BODY})]


@pytest.mark.parametrize("t_mono", [float("nan"), float("inf"), float("-inf"), -1.0, 1000.0 + 5.5, 1e300])
def test_an_envelope_time_that_has_not_been_is_dropped(t_mono):
    with pytest.raises(DropReason) as why:
        decode(_envelope(t_mono), now_mono=1000.0)
    assert why.value.args[0] in ("time", "envelope")
    assert decode(_envelope(1004.9), now_mono=1000.0).t_mono == 1004.9      # within the tolerance


def test_a_body_time_from_the_future_is_dropped():
    body = {"device": "SHEM", "power_w": 300.0, "sign": "positive_is_import", "phases": [{"power_w": 300.0}],
            "sample_t_mono": 5000.0}
    frames = [m.METER_GRID.encode(), msgpack.packb({"v": 1, "src": "shelly_poller", "seq": 1, "t_mono": 999.0,
                                                    "t_wall": 1.7e9, "body": body})]
    with pytest.raises(DropReason, match="sample_t_mono"):
        decode(frames, now_mono=1000.0)
    assert decode(frames, now_mono=4999.0).body["sample_t_mono"] == 5000.0


def test_the_subscriber_drops_and_counts_times_from_the_future(rundir):
    ctx = zmq.Context.instance()
    rogue = ctx.socket(zmq.PUB)
    rogue.bind(endpoint(rundir, "controller"))
    sub = Subscriber(rundir, topics=[""], services=["controller"])
    good = encode("controller", 7, m.CTRL_RELAY, RELAY_BODY)

    def send_and_get_good():
        rogue.send_multipart(_envelope(float("nan")))
        rogue.send_multipart(_envelope(1e12))
        rogue.send_multipart(good)
        return sub.recv(timeout_s=0.2)

    msg = wait_for(send_and_get_good, 10, interval_s=0, what="the good message after the bad ones")
    assert msg.seq == 7
    assert sub.stats.dropped["time"] >= 1 and sub.stats.dropped["envelope"] + sub.stats.dropped["time"] >= 2
    rogue.close(0)
    sub.close()


def test_the_run_folder_is_created_0700_and_our_own_loose_one_tightened(tmp_path):
    fresh = tmp_path / "run" / "bus"
    ensure_rundir(str(fresh))
    assert stat.S_IMODE(os.stat(fresh).st_mode) == 0o700
    os.chmod(fresh, 0o777)
    ensure_rundir(str(fresh))
    assert stat.S_IMODE(os.stat(fresh).st_mode) == 0o700


def test_a_run_folder_we_cannot_trust_is_refused(tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(RundirError, match="symbolic link"):
        ensure_rundir(str(link))
    plain = tmp_path / "file"
    plain.write_text("")
    with pytest.raises(RundirError, match="not a folder"):
        ensure_rundir(str(plain))


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a folder to another user needs root")
def test_a_run_folder_of_another_user_is_refused_and_the_service_exits_2(tmp_path, capsys):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    os.chmod(foreign, 0o777)
    os.chown(foreign, 12345, 12345)
    with pytest.raises(RundirError, match="owned by uid 12345"):
        ensure_rundir(str(foreign))
    assert stat.S_IMODE(os.stat(foreign).st_mode) == 0o777          # not ours: left as it is
    path = write_config(str(tmp_path), base_sections(str(foreign)))
    assert run_service("controller", lambda cfg, log: 0, ["--config", path]) == CONFIG_EXIT_CODE
    assert "owned by uid 12345" in capsys.readouterr().err


@pytest.mark.parametrize("value", [1.8e308, -1.8e308, 10 ** 400, 10 ** 16, float("inf")])
def test_numbers_beyond_the_bus_limit_are_rejected_wherever_they_are(value):
    grid = {"device": "SHEM", "power_w": value, "sign": "positive_is_import", "phases": [{"power_w": 1.0}],
            "sample_t_mono": 1.0}
    with pytest.raises(m.SchemaError):
        m.check_body(m.METER_GRID, grid)
    with pytest.raises(m.SchemaError):
        m.check_body(m.METER_GRID, {**grid, "power_w": 1.0, "phases": [{"power_w": value}]})
    status = {"ok": True, "error_kind": None, "error_count": 0, "serials": [], "can_control": True}
    with pytest.raises(m.SchemaError):
        m.check_body(m.DTU_STATUS, {**status, "data_age_s": {"A": value}})
    assert m.check_body(m.METER_GRID, {**grid, "power_w": -1e15})["power_w"] == -1e15
