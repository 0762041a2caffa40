"""Shared HTTP plumbing for the device simulators: a threaded server on 127.0.0.1 with the transport-level faults.

* `refused`: the listening socket is closed (connections are really refused); clearing the fault reopens the same
  port.
* `hang`: a request is read and then held without an answer until the fault clears or `hang_s` passes; then the
  connection is closed without a response.
* `drip`: the complete answer (status line, headers, body) is sent one byte every `drip_s` (0.3 s), so a client
  without a total deadline per request waits for minutes.
* `absurd`: every number in a successful JSON answer is replaced: an integer by a 400-digit integer, a float by
  the literal 1.8e308 (beyond the largest double: it reads as inf; `float()` of the integer overflows).
Every other fault is shaped by the device (`handle`).
"""
from __future__ import annotations

import base64
import gzip
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger("sim.http")

WEBAPP_HTML = gzip.compress(
    b"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>OpenDTU</title>"
    b"<script defer src=\"/js/app.js\"></script></head><body><noscript>OpenDTU needs JavaScript</noscript>"
    b"<div id=\"app\"></div></body></html>", mtime=0)


@dataclass
class Request:
    method: str
    path: str
    query: dict            # name -> first value
    headers: dict          # lower-case name -> value
    body: bytes
    raw_path: str = ""


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: Optional[str] = "application/json"
    headers: list = field(default_factory=list)


def json_response(obj, status: int = 200, headers: Optional[list] = None) -> Response:
    body = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")
    return Response(status, body, "application/json", headers or [])


def text_response(text: str, status: int = 200, content_type: str = "text/plain", headers=None) -> Response:
    return Response(status, text.encode("utf-8"), content_type, headers or [])


def basic_credentials(req: Request) -> Optional[tuple[str, str]]:
    value = req.headers.get("authorization", "")
    if not value.lower().startswith("basic "):
        return None
    try:
        user, _, password = base64.b64decode(value[6:].strip()).decode("utf-8").partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    return user, password


ABSURD_INT = 10 ** 400 - 1
ABSURD_FLOAT = "1.8e308"          # as written in the JSON text; json.loads reads it as inf
_FLOAT_MARK = "\x00absurd-float\x00"


def absurd_json(obj) -> bytes:
    """`obj` as JSON with every number (not bool) replaced by ABSURD_INT or the literal ABSURD_FLOAT."""
    def walk(value):
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return value
        return ABSURD_INT if isinstance(value, int) else _FLOAT_MARK
    text = json.dumps(walk(obj))
    return text.replace(json.dumps(_FLOAT_MARK), ABSURD_FLOAT).encode("utf-8")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 64


class _Handler(BaseHTTPRequestHandler):
    server_version = "SimHTTP/1.0"
    sys_version = ""

    def log_message(self, format, *args):  # noqa: A002 - stdlib signature
        log.debug("%s %s", self.address_string(), format % args)

    def _any(self):
        self.server.sim._serve(self)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _any


class SimHttpServer:
    """Base class: `start()` returns self, `.port`, `.url`, `.stop()`; subclasses implement `handle(req)`."""

    TRANSPORT_FAULTS = ("refused", "hang", "drip", "absurd")

    def __init__(self, host: str = "127.0.0.1", port: int = 0, hang_s: float = 30.0, drip_s: float = 0.3):
        self.host = host
        self._port = port
        self.hang_s = hang_s
        self.drip_s = drip_s
        self.fault: Optional[str] = None
        self._cond = threading.Condition()
        self._httpd: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None
        self._stopped = False
        self.requests_served = 0

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self._port}"

    def start(self):
        self._stopped = False
        self._open()
        return self

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._close()

    def _open(self) -> None:
        if self._httpd is not None:
            return
        httpd = _Server((self.host, self._port), _Handler)
        httpd.sim = self
        self._port = httpd.server_address[1]
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"{type(self).__name__}:{self._port}", daemon=True)
        self._thread.start()

    def _close(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def _set_transport_fault(self, kind: Optional[str]) -> None:
        """Set the server-wide fault (any kind); handles opening/closing for `refused`."""
        with self._cond:
            old, self.fault = self.fault, kind
            self._cond.notify_all()
        if kind == "refused" and old != "refused":
            self._close()
        elif old == "refused" and kind != "refused" and not self._stopped:
            for _ in range(50):                 # the port may linger for a moment
                try:
                    self._open()
                    break
                except OSError:
                    time.sleep(0.1)

    def _serve(self, h: _Handler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length > 0 else b""
        split = urlsplit(h.path)
        query = {k: v[0] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        req = Request(h.command, split.path, query, {k.lower(): v for k, v in h.headers.items()}, body, h.path)
        if self.fault == "hang":
            deadline = time.monotonic() + self.hang_s
            with self._cond:
                while self.fault == "hang" and not self._stopped and time.monotonic() < deadline:
                    self._cond.wait(max(0.0, min(1.0, deadline - time.monotonic())))
            h.close_connection = True
            return
        try:
            resp = self.handle(req)
        except Exception:  # a simulator bug must not kill the server thread silently
            log.exception("simulator error on %s %s", req.method, req.raw_path)
            resp = text_response("simulator error", 500)
        self.requests_served += 1
        fault = self.fault
        if fault == "absurd" and resp.status == 200 and resp.content_type == "application/json":
            try:
                resp.body = absurd_json(json.loads(resp.body))
            except ValueError:
                pass
        head = [f"HTTP/1.1 {resp.status} {h.responses.get(resp.status, ('',))[0]}",
                f"Server: {h.version_string()}", f"Date: {h.date_time_string()}"]
        if resp.content_type:
            head.append(f"Content-Type: {resp.content_type}")
        head += [f"{name}: {value}" for name, value in resp.headers]
        head += [f"Content-Length: {len(resp.body)}", "Connection: close", "", ""]
        data = "\r\n".join(head).encode("latin-1") + (resp.body if req.method != "HEAD" else b"")
        h.close_connection = True
        if fault != "drip":
            h.wfile.write(data)
            return
        for i in range(len(data)):
            with self._cond:
                if self._stopped or self.fault != "drip":
                    break
                self._cond.wait(self.drip_s)
            try:
                h.wfile.write(data[i:i + 1])
                h.wfile.flush()
            except OSError:             # the client gave up: that is the point
                return
        else:
            return
        try:
            h.wfile.write(data[i:])     # the fault cleared: the rest at once
        except OSError:
            pass

    def handle(self, req: Request) -> Response:  # pragma: no cover - abstract
        raise NotImplementedError
