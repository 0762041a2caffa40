"""Where a Shelly password may go (#14.10, #15.5): a Gen2 password never as Basic, whatever a device claims;
relay URLs with `user:pass@` send Basic from the user info, never in the request line or a log. Scripted devices
on 127.0.0.1 record every request."""
import base64
import logging
import threading
import types

import pytest

from common.config import _url
from common.logsetup import redact_url
from services.shelly_poller.client import Credentials, ShellyAuthError, connect_meter
from services.shelly_poller.poller import MeterPoller, RelayWorker, relay_credentials
from services.shelly_poller.relay import RelayClient
from sim.httpbase import Request, Response, SimHttpServer, json_response, text_response
from sim.plant import Plant
from sim.shelly import ShellySimulator

PASSWORD = "Gen2-s3cret"
GEN1_INFO = {"type": "SHEM", "mac": "C45BBE000001", "auth": True, "fw": "20230913-114150/v1.14.0"}
GEN2_INFO = {"id": "shellyproem50-c45bbe000002", "model": "SPEM-002CEBEU50", "gen": 2, "app": "ProEM",
             "auth_en": True}
RELAY_ON = {"ison": True, "has_timer": True, "timer_remaining": 900, "timer_duration": 900}


class Device(SimHttpServer):
    """Answers /shelly with `info`; any other path: 401 with `challenge` unless Basic `user:password` came."""

    def __init__(self, info, challenge='Basic realm="shelly"', user="admin", password=PASSWORD, port=0,
                 answer=RELAY_ON):
        super().__init__(port=port)
        self.info, self.challenge, self.user, self.password, self.answer = info, challenge, user, password, answer
        self.seen: list[Request] = []

    def handle(self, req: Request) -> Response:
        self.seen.append(req)
        if req.path == "/shelly":
            return json_response(self.info)
        expected = "Basic " + base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        if req.headers.get("authorization") != expected:
            return text_response("401 Unauthorized", 401, headers=[("WWW-Authenticate", self.challenge)])
        return json_response(self.answer)

    def basic_sent(self) -> bool:
        return any(r.headers.get("authorization", "").lower().startswith("basic") for r in self.seen)

    def auth_sent(self) -> bool:
        return any("authorization" in r.headers for r in self.seen)


@pytest.fixture
def device():
    started = []

    def make(*args, **kw):
        server = Device(*args, **kw).start()
        started.append(server)
        return server
    yield make
    for server in started:
        server.stop()


def host(server):
    return f"127.0.0.1:{server.port}"


# ---------------------------------------------------------------- meters

def test_a_device_that_turns_gen1_gets_no_password_pinned_to_gen2(device):
    spoof = device(GEN1_INFO)
    with pytest.raises(ShellyAuthError) as err:
        connect_meter(host(spoof), Credentials("admin", PASSWORD, gen=2), timeout_s=2.0)
    assert "not sent" in str(err.value) and PASSWORD not in str(err.value)
    assert not spoof.auth_sent()
    with pytest.raises(ShellyAuthError):             # configured gen1 with a password pinned to Gen2: the same
        connect_meter(host(spoof), Credentials("admin", PASSWORD, gen=2), type_="gen1", timeout_s=2.0)
    assert not spoof.auth_sent()


def test_a_gen2_meter_answers_a_basic_challenge_with_nothing(device):
    spoof = device(GEN2_INFO)               # says Gen2 Pro EM, then asks for Basic
    meter = connect_meter(host(spoof), Credentials("admin", PASSWORD), timeout_s=2.0)
    with pytest.raises(ShellyAuthError):
        meter.read()
    assert not spoof.auth_sent()


def test_the_poller_pins_the_generation_it_detected_and_keeps_it_across_redetection():
    plant = Plant.demo(n_inverters=1, seed=1, scenario="quiet")
    real = ShellySimulator(plant, "pro_em", "grid", password=PASSWORD).start()
    port = real.port
    section = types.SimpleNamespace(host=f"127.0.0.1:{port}", username="admin", password=PASSWORD, type="auto",
                                    channel=0, poll_interval=1.0, timeout=2.0)
    sent = []
    poller = MeterPoller("grid", section, lambda t, b: sent.append((t, b)), threading.Event())
    try:
        poller.poll_once()
        assert poller.meter.gen == 2 and poller.status_body()["ok"]
        assert poller.credentials.gen == 2
    finally:
        real.stop()
    spoof = Device(GEN1_INFO, port=port).start()      # same address, now claiming to be a Gen1 EM
    try:
        poller.meter = None                            # as after REDETECT_AFTER_ERRORS nonsensical answers
        poller.poll_once()
        status = poller.status_body()
        assert (status["ok"], status["error_kind"]) == (False, "auth")
        assert not spoof.auth_sent()
    finally:
        spoof.stop()


# ---------------------------------------------------------------- the relay

def relay_url(server, userinfo=""):
    return f"http://{userinfo}127.0.0.1:{server.port}/relay/0?turn=on&timer=900"


def test_a_relay_sharing_a_gen2_meters_password_never_sends_it_as_basic(device):
    relay = device(GEN1_INFO)            # even a device that says Gen1 and challenges Basic
    gen2_meter = types.SimpleNamespace(host=host(relay), username="admin", password=PASSWORD, type="gen2")
    creds, role = relay_credentials(relay_url(relay), {"grid": gen2_meter})
    assert (creds.gen, role) == (2, "grid")
    result = RelayClient(relay_url(relay), 2.0, creds).switch(True)
    assert (result.ok, result.error_kind) == (False, "auth")
    assert not relay.basic_sent()


def test_a_relay_of_unknown_generation_sends_basic_only_to_a_device_that_says_gen1(device):
    gen2 = device(GEN2_INFO)
    result = RelayClient(relay_url(gen2), 2.0, Credentials("admin", PASSWORD)).switch(True)
    assert (result.ok, result.error_kind) == (False, "auth") and not gen2.basic_sent()
    gen1 = device(GEN1_INFO)
    client = RelayClient(relay_url(gen1), 2.0, Credentials("admin", PASSWORD))
    assert client.switch(True).ok and gen1.basic_sent()
    assert client.credentials.gen == 1
    served = len(gen1.seen)
    assert client.switch(True).ok and len(gen1.seen) == served + 1      # pinned: Basic up front, no new probe


def test_relay_url_user_info_is_sent_as_basic_and_never_on_the_request_line(device, caplog):
    relay = device(GEN1_INFO, user="relayuser", password="p@ss:w/rd")
    url = relay_url(relay, "relayuser:p%40ss%3Aw%2Frd@")
    assert _url(url) == url                                  # the config accepts it
    assert relay_credentials(url, {"grid": None})[1] == "url"
    section = types.SimpleNamespace(keepalive_url=url, switchoff_url=url.replace("turn=on&timer=900", "turn=off"),
                                    timeout=2.0)
    caplog.set_level(logging.DEBUG)
    worker = RelayWorker(section, {"grid": None, "balcony": None}, lambda t, b: None, threading.Event(),
                         rundir="/nonexistent")
    result = worker.clients[True].switch(True)
    assert result.ok, result
    assert [r.raw_path for r in relay.seen] == ["/relay/0?turn=on&timer=900"]    # Basic up front, once
    assert "relayuser" not in relay.seen[0].raw_path and "p%40ss" not in relay.seen[0].raw_path
    assert "p%40ss" not in caplog.text and "p@ss" not in caplog.text and "credentials from the URL" in caplog.text


def test_log_redaction_hides_the_whole_user_info():
    assert redact_url("GET http://user:pa@ss@h:80/relay/0?turn=on failed") == "GET http://***@h:80/relay/0?turn=on failed"
    assert redact_url("http://h/relay/0?mail=a@b and http://u:p@h2/x") == "http://h/relay/0?mail=a@b and http://***@h2/x"


@pytest.mark.parametrize("url", ["http://user:p/w@host/relay/0", "http://host:port/relay/0", "http://u:p@/relay/0",
                                 "ftp://host/relay/0"])
def test_the_config_refuses_urls_whose_host_cannot_be_read(url):
    with pytest.raises(ValueError):
        _url(url)


def test_wrong_user_info_is_an_auth_error_that_shows_no_password(device):
    relay = device(GEN1_INFO, user="relayuser", password="right")
    result = RelayClient(relay_url(relay, "relayuser:Wr0ng-pw@"), 2.0).switch(True)
    assert (result.ok, result.error_kind) == (False, "auth") and "Wr0ng-pw" not in result.detail
