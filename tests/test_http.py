"""common.http: the total deadline per request (enforced at the socket), the bounded body, the error tree and its
kind strings, strict JSON; over real sockets on 127.0.0.1."""
import base64
import os
import shutil
import socket
import subprocess
import sys
import threading
import time

import pytest

from common import http
from common.http import (HttpAuthError, HttpConnectionError, HttpError, HttpRateLimited, HttpStatusError,
                         HttpTimeout, InvalidResponse, Transport)
from services.dtu_poller import client as dtu
from services.shelly_poller import exceptions as shelly
from services.shelly_poller.client import Credentials, Gen1Meter
from sim.httpbase import Request, Response, SimHttpServer, json_response

MARGIN_S = 0.25          # one recv noticing the deadline, thread scheduling on a loaded machine


class Scripted(SimHttpServer):
    """A device whose answers a test writes; records every request."""

    def __init__(self, answer):
        super().__init__(drip_s=0.3)
        self.answer = answer
        self.seen: list[Request] = []

    def set_fault(self, kind):
        self._set_transport_fault(kind)

    def handle(self, req: Request) -> Response:
        self.seen.append(req)
        return self.answer(req)


@pytest.fixture
def scripted():
    started = []

    def make(answer):
        server = Scripted(answer).start()
        started.append(server)
        return server
    yield make
    for server in started:
        server.stop()


class RawPeer:
    """A TCP peer that sends `head` at once, then `body` one byte every `drip_s` (or closes after `head`)."""

    def __init__(self, head: bytes, body: bytes = b"", drip_s: float = 0.3):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.head, self.body, self.drip_s = head, body, drip_s
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        conn, _ = self.sock.accept()
        with conn:
            conn.recv(65536)
            try:
                conn.sendall(self.head)
                for i in range(len(self.body)):
                    if self.stop.wait(self.drip_s):
                        break
                    conn.sendall(self.body[i:i + 1])
            except OSError:
                pass

    def close(self):
        self.stop.set()
        self.thread.join(2)
        self.sock.close()


def timed(fn):
    started = time.monotonic()
    try:
        fn()
    except HttpError as exc:
        return exc, time.monotonic() - started
    raise AssertionError("no error")


# ---------------------------------------------------------------- the deadline

def test_a_peer_dripping_the_whole_answer_is_a_timeout_at_the_deadline(scripted):
    server = scripted(lambda req: json_response({"power": 1.0, "pad": "x" * 200}))
    server.set_fault("drip")
    exc, elapsed = timed(lambda: Transport(server.url, 0.5, 1 << 20).request("GET", "/status"))
    assert type(exc) is HttpTimeout and exc.kind == "timeout"
    assert 0.45 <= elapsed < 0.5 + MARGIN_S, elapsed
    assert "/status" in str(exc)


def test_a_peer_dripping_only_the_body_is_a_timeout_at_the_deadline():
    body = b'{"power": 1.0, "pad": "' + b"x" * 100 + b'"}'
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
    peer = RawPeer(head, body)
    try:
        exc, elapsed = timed(lambda: Transport(f"http://127.0.0.1:{peer.port}", 0.5, 1 << 20).request("GET", "/"))
    finally:
        peer.close()
    assert type(exc) is HttpTimeout
    assert 0.45 <= elapsed < 0.5 + MARGIN_S, elapsed


@pytest.mark.parametrize("make", [
    lambda url: dtu.OpenDtuClient(url, timeout_s=0.5).livedata_summary,
    lambda url: Gen1Meter(url, Credentials(), 0.5).read,
], ids=["opendtu", "shelly"])
def test_both_device_clients_keep_the_deadline_and_name_it_in_their_own_error(scripted, make):
    server = scripted(lambda req: json_response({"inverters": [], "emeters": []}))
    server.set_fault("drip")
    exc, elapsed = timed(make(server.url))
    assert isinstance(exc, HttpTimeout) and isinstance(exc, (dtu.DtuTimeout, shelly.ShellyTimeout))
    assert elapsed < 0.5 + MARGIN_S, elapsed


def test_a_complete_answer_arrives_with_its_status_headers_and_time(scripted):
    server = scripted(lambda req: json_response({"ok": True}, 404, [("X-Test", "1")]))
    answer = Transport(server.url + "/ignored-prefix", 2.0, 1 << 20).request("GET", "/x?a=1")
    assert (answer.status_code, answer.headers.get("x-test")) == (404, "1")
    assert http.decode_json(answer.content) == {"ok": True}
    assert answer.t_mono > 0 and server.seen[0].raw_path == "/x?a=1"


# ---------------------------------------------------------------- other transport errors

def test_a_body_beyond_the_bound_is_invalid(scripted):
    server = scripted(lambda req: Response(200, b"[" + b"1," * 5000 + b"1]"))
    with pytest.raises(InvalidResponse) as err:
        Transport(server.url, 2.0, 4096).request("GET", "/")
    assert err.value.kind == "invalid" and "4096" in str(err.value)


def test_refused_and_closed_connections_are_connection_errors():
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]
    with pytest.raises(HttpConnectionError) as err:
        Transport(f"http://127.0.0.1:{port}", 1.0, 1024).request("GET", "/")
    assert err.value.kind == "connection"
    for head in (b"", b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"):    # closed: no answer, half a body
        peer = RawPeer(head)
        try:
            started = time.monotonic()
            with pytest.raises(HttpConnectionError):
                Transport(f"http://127.0.0.1:{peer.port}", 2.0, 1024).request("GET", "/")
            assert time.monotonic() - started < 1.0
        finally:
            peer.close()


# ---------------------------------------------------------------- errors and their kinds

KINDS = {
    HttpConnectionError: "connection", HttpTimeout: "timeout", HttpAuthError: "auth",
    HttpRateLimited: "rate_limited", HttpStatusError: "http", InvalidResponse: "invalid",
}


@pytest.mark.parametrize("device_cls, common_cls", [
    (dtu.DtuConnectionError, HttpConnectionError), (dtu.DtuTimeout, HttpTimeout), (dtu.DtuAuthError, HttpAuthError),
    (dtu.DtuRateLimited, HttpRateLimited), (dtu.DtuHttpError, HttpStatusError),
    (dtu.DtuInvalidResponse, InvalidResponse),
    (shelly.ShellyConnectionError, HttpConnectionError), (shelly.ShellyTimeout, HttpTimeout),
    (shelly.ShellyAuthError, HttpAuthError), (shelly.ShellyRateLimited, HttpRateLimited),
    (shelly.ShellyHttpError, HttpStatusError), (shelly.ShellyInvalidResponse, InvalidResponse),
])
def test_device_errors_are_the_common_error_of_the_same_kind(device_cls, common_cls):
    assert issubclass(device_cls, common_cls) and device_cls.kind == common_cls.kind == KINDS[common_cls]
    base = dtu.DtuError if device_cls.__module__.endswith("client") else shelly.ShellyError
    assert issubclass(device_cls, base)


def test_device_errors_keep_their_constructors_and_extra_fields():
    assert dtu.DtuRateLimited("x", 60).retry_after_s == 60
    assert dtu.DtuHttpError("x", 500).status == 500
    assert dtu.DtuInvalidResponse("x", "html").kind == "html"
    assert (dtu.DtuRejected("warning", 5004).code, dtu.DtuRejected.kind) == (5004, "rejected")
    err = shelly.ShellyHttpError("h:80", "HTTP 500", status=500, code=-104)
    assert (err.status, err.code, str(err)) == (500, -104, "Shelly h:80: HTTP 500")
    assert shelly.ShellyInvalidResponse("h", "page", kind="html").kind == "html"
    assert shelly.ShellyInvalidReading.kind == "invalid_reading"
    assert shelly.ShellyUnsupportedDevice.kind == "unsupported"


# ---------------------------------------------------------------- helpers

@pytest.mark.parametrize("text", ['{"a": NaN}', '{"a": Infinity}', '[-Infinity]', '{"a": 1e999}', '[-1e400]',
                                  '{"a": ' + "9" * 400 + '}', "[" * 100000 + "]" * 100000, "{", "<html>",
                                  b'{"a": "\xff"}'])
def test_strict_json_refuses_what_no_device_may_send(text):
    with pytest.raises(InvalidResponse):
        http.decode_json(text)


def test_strict_json_reads_ordinary_answers():
    assert http.decode_json(b'{"p": -12.5, "n": 123456789012345678901234567890, "s": "\xc2\xb0C", "z": null}') == \
        {"p": -12.5, "n": 123456789012345678901234567890, "s": "°C", "z": None}


def test_split_base_keeps_the_user_info_apart():
    assert http.split_base("http://u%40x:p%3Aw%2F@h:81/pre/") == (False, "h:81", "/pre", ("u@x", "p:w/"))
    assert http.split_base("https://h") == (True, "h", "", None)
    with pytest.raises(ValueError):
        http.split_base("ftp://h")


def test_basic_auth_and_retry_after():
    assert http.basic_auth("admin", "openDTU42") == "Basic YWRtaW46b3BlbkRUVTQy"
    assert http.basic_auth("ä", "€") == "Basic " + base64.b64encode("ä".encode("latin-1") + b":" + "€".encode()).decode()
    assert [http.retry_after_s({"Retry-After": v}) for v in ("60", "nan", "-1", "1e9", "x")] == [60, None, None,
                                                                                                None, None]
    assert http.retry_after_s({}) is None


def _tls_server(tmp_path, body: bytes):
    """A one-answer HTTPS server on localhost with a self-signed certificate (made by the openssl tool)."""
    import ssl
    import subprocess
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)

    def serve():
        try:
            conn, _ = listener.accept()
            with context.wrap_socket(conn, server_side=True) as tls:
                tls.settimeout(5)
                data = b""
                while b"\r\n\r\n" not in data:
                    data += tls.recv(4096)
                tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                            + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
        except (OSError, ssl.SSLError):
            pass                   # a client that refused our certificate
        finally:
            listener.close()
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener.getsockname()[1], cert, thread


@pytest.mark.skipif(not shutil.which("openssl"), reason="needs the openssl tool")
def test_https_verifies_the_certificate_and_reads_the_answer(tmp_path, monkeypatch):
    # ssl is loaded only for https (see common/http.py); the certificate is checked as http.client's HTTPSConnection
    port, cert, thread = _tls_server(tmp_path, b'{"ok": true}')
    with pytest.raises(HttpConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        Transport(f"https://localhost:{port}", 5.0, 1000).request("GET", "/x")
    thread.join(10)
    port, cert, thread = _tls_server(tmp_path, b'{"ok": true}')
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))          # now the self-signed certificate is trusted
    answer = Transport(f"https://localhost:{port}", 5.0, 1000).request("GET", "/x")
    assert answer.status_code == 200 and answer.content == b'{"ok": true}'
    thread.join(10)


def test_the_device_clients_load_no_ssl():
    code = ("import sys, services.dtu_poller.client, services.shelly_poller.client, services.shelly_poller.relay; "
            "print(sorted(m for m in ('ssl', '_ssl') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=os.path.dirname(os.path.dirname(__file__)))
    assert out.stdout.strip() == "[]", out.stderr
