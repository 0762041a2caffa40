"""The one HTTP/1.1 transport of the device clients (OpenDTU, Shelly): a total deadline per request, a bounded
body, one error tree.

Every request has ONE deadline, `timeout_s` after it starts, that covers connect, send, the status line and
headers and the whole body. It is enforced at the socket: before each send and each recv the socket's timeout is
set to the time left, so a peer that drips one byte at a time cannot hold a request beyond its deadline (plus the
time one recv call takes to notice). The deadline runs on the real monotonic clock (sockets do); the arrival time
of an answer comes from the injected clock. Not bounded: name resolution (use IP addresses, as a GX setup does)
and, for https, each step of the TLS handshake is bounded by the time left, not their sum. One connection per
request (`Connection: close`), no proxies or .netrc from the environment (http.client; `requests` costs several
times the CPU per call for nothing used here).

Errors: `HttpError` and its subclasses carry `kind`, the short name the services publish as `error_kind` in
dtu.status / meter.status / relay.state. Device clients subclass them (DtuTimeout is an HttpTimeout) so a caller
may catch either the device's base class or the common one. Everything a device can cause is one of these;
anything else escaping a client is a bug.
"""
from __future__ import annotations

import base64
import io
import json
import math
import socket
import sys
import time
from dataclasses import dataclass
from typing import Any, Optional
from urllib.parse import unquote, urlsplit

from common.clock import SYSTEM_CLOCK
from common.logsetup import redact_url

# http.client imports ssl at once for its HTTPSConnection; ssl (with OpenSSL's start-up) costs about 1.5 MiB of memory
# in each of the two polling processes, and the devices speak plain HTTP. So http.client is loaded without it, and
# ssl only when an https:// URL is used (_TlsConnection below).
if "ssl" in sys.modules:
    import http.client
else:
    sys.modules["ssl"] = None          # makes http.client's `import ssl` fail: it then leaves out HTTPSConnection
    try:
        import http.client
    finally:
        del sys.modules["ssl"]

USER_AGENT = "dbus-opendtu"


# ------------------------------------------------------------------ errors

class HttpError(Exception):
    """Base of every problem a device or the network causes. `kind` is what a service publishes as error_kind."""
    kind = "error"


class HttpConnectionError(HttpError):
    """Refused, reset, unreachable, closed before a complete answer, not HTTP."""
    kind = "connection"


class HttpTimeout(HttpError):
    """The request's deadline passed (connect, send, headers or body)."""
    kind = "timeout"


class HttpAuthError(HttpError):
    """401, no or wrong credentials, or credentials withheld because the scheme does not fit the device."""
    kind = "auth"


class HttpRateLimited(HttpError):
    kind = "rate_limited"

    def __init__(self, message: str, retry_after_s: Optional[float] = None):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class HttpStatusError(HttpError):
    """Any other status that is not success."""
    kind = "http"

    def __init__(self, message: str, status: Optional[int] = None):
        super().__init__(message)
        self.status = status


class InvalidResponse(HttpError):
    """The body is not what the API promises: too large, not UTF-8, HTML (`kind` "html"), not JSON, NaN/Infinity,
    null, wrong shapes, numbers out of their plausible range."""
    kind = "invalid"

    def __init__(self, message: str, kind: str = "invalid"):
        super().__init__(message)
        self.kind = kind


# ------------------------------------------------------------------ requests

@dataclass
class Answer:
    """A complete HTTP answer: status, headers (case-insensitive `get`), body bytes, arrival time (clock)."""
    status_code: int
    headers: Any
    content: bytes
    t_mono: float = 0.0


class _DeadlineSocket:
    """A connected socket whose every send and recv gets at most the time left until the deadline."""

    def __init__(self, sock: socket.socket, deadline: float):
        self._sock = sock
        self._deadline = deadline
        self._readers = 0             # as socket.makefile: the socket closes when it and its readers are closed
        self._closed = False

    def _arm(self) -> None:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("request deadline passed")
        self._sock.settimeout(left)

    def sendall(self, data) -> None:
        self._arm()
        self._sock.sendall(data)

    def recv_into(self, buffer, nbytes: int = 0) -> int:
        self._arm()
        return self._sock.recv_into(buffer, nbytes)

    def makefile(self, mode: str = "rb", *args, **kwargs):
        self._readers += 1
        return io.BufferedReader(_DeadlineReader(self))

    def close(self) -> None:
        self._closed = True
        if self._readers == 0:
            self._sock.close()

    def reader_closed(self) -> None:
        self._readers -= 1
        if self._closed:
            self.close()

    def __getattr__(self, name):
        return getattr(self._sock, name)


class _DeadlineReader(io.RawIOBase):
    def __init__(self, sock: _DeadlineSocket):
        super().__init__()
        self._sock = sock

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        return self._sock.recv_into(buffer)

    def close(self) -> None:
        if not self.closed:
            super().close()
            self._sock.reader_closed()


class _TlsConnection(http.client.HTTPConnection):
    """What http.client.HTTPSConnection does for us (certificate and host name verified, HTTP/1.1 offered by
    ALPN), with ssl imported on first use."""
    default_port = 443

    def connect(self):
        import ssl
        super().connect()
        context = ssl.create_default_context()
        context.set_alpn_protocols(["http/1.1"])
        self.sock = context.wrap_socket(self.sock, server_hostname=self.host)


def _connection_class(https: bool):
    base = _TlsConnection if https else http.client.HTTPConnection

    class DeadlineConnection(base):
        deadline = 0.0

        def connect(self):
            self.timeout = max(0.001, self.deadline - time.monotonic())
            super().connect()
            self.sock = _DeadlineSocket(self.sock, self.deadline)
    return DeadlineConnection


_CONNECTIONS = {False: _connection_class(False), True: _connection_class(True)}


def split_base(url: str) -> tuple[bool, str, str, Optional[tuple[str, str]]]:
    """`http(s)://[user:pass@]host[:port][/prefix]` -> (https, host[:port], prefix, (user, password) or None).

    The user info is returned apart (percent-decoded) so that it never reaches a request line or a log."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("not an http:// URL")
    userinfo, _, hostport = parts.netloc.rpartition("@")
    creds = None
    if userinfo:
        user, _, password = userinfo.partition(":")
        creds = (unquote(user), unquote(password))
    return parts.scheme == "https", hostport, parts.path.rstrip("/"), creds


class Transport:
    """Requests to one device (`base` = http://host[:port]); thread-safe as long as each call is separate."""

    def __init__(self, base: str, timeout_s: float, max_body_bytes: int, clock=SYSTEM_CLOCK):
        self._https, self.host, self.prefix, _ = split_base(base)
        self.timeout_s = float(timeout_s)
        self.max_body_bytes = int(max_body_bytes)
        self.clock = clock

    def request(self, method: str, target: str, headers: Optional[dict] = None,
                body: Optional[bytes | str] = None) -> Answer:
        """Send one request and read the complete answer within `timeout_s`; any status is returned.

        Raises HttpTimeout, HttpConnectionError, or InvalidResponse (body larger than max_body_bytes)."""
        deadline = time.monotonic() + self.timeout_s
        where = f"{method} {redact_url(target.split('?', 1)[0])}"
        conn = _CONNECTIONS[self._https](self.host, timeout=self.timeout_s)
        conn.deadline = deadline
        all_headers = {"Accept": "application/json", "User-Agent": USER_AGENT, "Connection": "close"}
        all_headers.update(headers or {})
        resp = None
        try:
            conn.request(method, target, body=body, headers=all_headers)
            resp = conn.getresponse()
            content = bytearray()
            while True:
                chunk = resp.read(16384)
                if not chunk:
                    break
                content += chunk
                if len(content) > self.max_body_bytes:
                    raise InvalidResponse(f"{where}: answer larger than {self.max_body_bytes} bytes")
            if resp.length:             # Content-Length promised more than arrived before the peer closed
                raise HttpConnectionError(f"{where}: answer cut short ({resp.length} bytes missing)")
            return Answer(resp.status, resp.headers, bytes(content), self.clock.monotonic())
        except (socket.timeout, TimeoutError):
            raise HttpTimeout(f"{where}: no complete answer within {self.timeout_s:g} s") from None
        except (OSError, http.client.HTTPException, ValueError) as exc:
            if time.monotonic() >= deadline:     # e.g. the peer closed while we waited: still a timeout
                raise HttpTimeout(f"{where}: no complete answer within {self.timeout_s:g} s") from None
            raise HttpConnectionError(f"{where}: {short_reason(exc)}") from None
        finally:
            if resp is not None:
                resp.close()
            conn.close()


def short_reason(exc: Exception) -> str:
    text = str(exc)
    for marker in ("Connection refused", "Name or service not known", "No route to host",
                   "Connection reset", "Network is unreachable", "Temporary failure in name resolution",
                   "Remote end closed connection", "Connection aborted"):
        if marker in text:
            return marker
    return type(exc).__name__ + (f" ({redact_url(clip(text, 80))})" if text else "")


def clip(text: Optional[str], limit: int = 80) -> str:
    text = (text or "").replace("\n", " ")
    return text if len(text) <= limit else text[:limit] + "..."


# ------------------------------------------------------------------ helpers for answers

def basic_auth(username: str, password: str) -> str:
    """The `Authorization` value for HTTP Basic (latin-1 as browsers send it, UTF-8 when that cannot)."""
    def enc(text: str) -> bytes:
        try:
            return text.encode("latin-1")
        except UnicodeEncodeError:
            return text.encode("utf-8")
    return "Basic " + base64.b64encode(enc(username) + b":" + enc(password)).decode("ascii")


def retry_after_s(headers: Any) -> Optional[float]:
    """A `Retry-After` in seconds (a plausible one: 0..1 day), else None."""
    raw = (headers.get("Retry-After") or "").strip()
    try:
        value = float(raw[:16])
    except ValueError:
        return None
    return value if math.isfinite(value) and 0 <= value <= 86400 else None


def _reject_constant(name: str):
    raise ValueError(f"JSON constant {name} not allowed")


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > 30:          # no device counts beyond 10^30; int() of 4300+ digits raises anyway
        raise ValueError(f"integer of {len(text)} digits")
    return int(text)


def decode_json(content: bytes | str, where: str = "answer") -> Any:
    """Strict JSON: UTF-8, no NaN/Infinity literals, no overflowing floats (1e999), no integers beyond 30 digits.
    Raises InvalidResponse."""
    try:
        text = content.decode("utf-8") if isinstance(content, (bytes, bytearray)) else content
        return json.loads(text, parse_constant=_reject_constant, parse_int=_bounded_int,
                          parse_float=_finite_float)
    except UnicodeDecodeError:
        raise InvalidResponse(f"{where}: body is not UTF-8") from None
    except (ValueError, RecursionError) as exc:
        raise InvalidResponse(f"{where}: not JSON ({clip(str(exc), 60)})") from None


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {clip(text, 20)} overflows")
    return value
