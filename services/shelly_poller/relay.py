"""The relay that carries the life signal: one GET of a configured URL per command, the answer verified.

Credentials: the URL's own `user:pass@` (the original project's form; Gen1 Basic, sent in a header, never in
the request line), else those of the meter with the same host:port. The scheme follows the credentials' pinned
generation (Basic for Gen1, Digest for Gen2+); when the generation is not known (a meter of `type = auto`), the
first 401 settles it: a Digest challenge is answered with Digest, a Basic one only after `GET /shelly` says
Gen1; a challenge that does not fit the generation is an auth error and no credentials are sent.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional
from urllib.parse import urlsplit

from common import plausible
from common.clock import SYSTEM_CLOCK
from common.http import split_base
from services.shelly_poller.device import BasicAuth, Credentials, ShellyHttp, num
from services.shelly_poller.exceptions import ShellyError
from services.shelly_poller.gen2 import DigestAuth
from services.shelly_poller.models import parse_device_info


@dataclass(frozen=True)
class RelayResult:
    ok: bool                         # the device confirmed the asked state (and, for on, a running timer)
    on: Optional[bool]               # state the device reported; None if unknown
    timer_remaining_s: Optional[float] = None
    error_kind: Optional[str] = None
    detail: Optional[str] = None


def parse_relay_answer(answer: Any, want_on: bool) -> RelayResult:
    """Judge a relay URL's answer. Gen1 `/relay/N` (and the Gen1-style endpoint of Gen2): relay state with
    `ison` and the timer. Gen2 `Switch.Set`: `{"was_on": ...}` (or wrapped in `result`), which only says the
    command was accepted; the caller then reads Switch.GetStatus to learn the state."""
    if isinstance(answer, dict) and isinstance(answer.get("result"), dict):
        answer = answer["result"]
    if not isinstance(answer, dict):
        return RelayResult(False, None, None, "invalid", "answer is not a JSON object")
    if "ison" in answer:
        ison = answer.get("ison")
        if not isinstance(ison, bool):
            return RelayResult(False, None, None, "invalid", "ison is not a boolean")
        remaining = num(answer, "timer_remaining", plausible.TIMER_S)
        has_timer = answer.get("has_timer") is True
        if ison != want_on:
            return RelayResult(False, ison, remaining, "unconfirmed",
                               f"asked {'on' if want_on else 'off'}, relay reports {'on' if ison else 'off'}")
        if want_on and not (has_timer and remaining is not None and remaining > 0):
            return RelayResult(False, ison, remaining, "no_timer",
                               "relay on without a running flip-back timer: the life signal would not expire "
                               "(keepalive_url needs timer=...)")
        return RelayResult(True, ison, remaining if want_on else None)
    if "was_on" in answer:
        was_on = answer.get("was_on")
        if not isinstance(was_on, bool):
            return RelayResult(False, None, None, "invalid", "was_on is not a boolean")
        return RelayResult(True, None, None, None, "Switch.Set accepted")
    return RelayResult(False, None, None, "invalid", "answer has neither ison nor was_on")


def parse_switch_status(answer: Any, want_on: bool) -> RelayResult:
    """Gen2 `Switch.GetStatus`: `output`, and `timer_started_at`/`timer_duration` while a timer runs."""
    if not isinstance(answer, dict) or not isinstance(answer.get("output"), bool):
        return RelayResult(False, None, None, "invalid", "Switch.GetStatus: no output state")
    on = answer["output"]
    duration = num(answer, "timer_duration", plausible.TIMER_S)
    if on != want_on:
        return RelayResult(False, on, None, "unconfirmed",
                           f"asked {'on' if want_on else 'off'}, switch reports {'on' if on else 'off'}")
    if want_on and not duration:
        return RelayResult(False, on, None, "no_timer",
                           "switch on without a flip-back timer: the life signal would not expire "
                           "(keepalive_url needs toggle_after=...)")
    # just armed: the remaining time is the whole duration
    return RelayResult(True, on, duration if want_on else None)


def url_credentials(url: str) -> Optional[Credentials]:
    """The `user:pass@` of a relay URL as Gen1 credentials (the original project's form), else None."""
    try:
        userinfo = split_base(url)[3]
    except ValueError:
        return None
    return Credentials(userinfo[0] or "admin", userinfo[1], gen=1) if userinfo and userinfo[1] else None


class RelayClient:
    """Carries out one relay command: GET the configured URL, verify the answer, report a RelayResult."""

    def __init__(self, url: str, timeout_s: float, credentials: Credentials = Credentials(), clock=SYSTEM_CLOCK):
        parts = urlsplit(url)
        hostport = parts.netloc.rpartition("@")[2]
        self.url = parts._replace(netloc=hostport).geturl()          # no user info on the wire or in logs
        self.credentials = url_credentials(url) or credentials
        self.timeout_s = timeout_s
        self.clock = clock
        self.http = ShellyHttp(f"{parts.scheme}://{hostport}", timeout_s=timeout_s, auth=self._pinned_auth(),
                               clock=clock, resolve_auth=self._auth_for_challenge)
        self.host = self.http.host

    def _pinned_auth(self):
        c = self.credentials
        if not c.password or c.gen is None:
            return None
        return BasicAuth(c.username, c.password) if c.gen == 1 else DigestAuth(c.password)

    def _auth_for_challenge(self, challenge: str):
        """Only when the generation is not pinned: settle it now (and pin it for this client's life)."""
        c = self.credentials
        if not c.password or c.gen is not None:
            return None
        if challenge.lower().startswith("digest"):
            self.credentials = c.pinned(2)
            return DigestAuth(c.password)
        if challenge.lower().startswith("basic"):
            probe = ShellyHttp(self.http.base, timeout_s=self.timeout_s, clock=self.clock)
            try:
                info = parse_device_info(self.host, probe.get("/shelly")[0])
            except ShellyError:
                return None
            self.credentials = c.pinned(info.gen)
            return BasicAuth(c.username, c.password) if info.gen == 1 else None
        return None

    def close(self) -> None:
        self.http.close()

    def switch(self, want_on: bool) -> RelayResult:
        try:
            answer, _ = self.http.get(self.url)
        except ShellyError as exc:
            return RelayResult(False, None, None, exc.kind, str(exc))
        result = parse_relay_answer(answer, want_on)
        if not result.ok or result.on is not None:
            return result
        # Gen2 Switch.Set accepted: read the switch back to learn its state and timer
        parts = urlsplit(self.url)
        switch_id = _query_value(parts.query, "id") or "0"
        try:
            status, _ = self.http.get("/rpc/Switch.GetStatus", {"id": switch_id})
        except ShellyError as exc:
            if want_on and _query_value(parts.query, "toggle_after") is None:
                return RelayResult(False, None, None, "no_timer",
                                   "Switch.Set without toggle_after: the life signal would not expire")
            return RelayResult(True, None, None, None,
                               f"Switch.Set accepted; state not verified ({exc.kind}: {exc})")
        return parse_switch_status(status, want_on)


def _query_value(query: str, key: str) -> Optional[str]:
    for part in query.split("&"):
        name, _, value = part.partition("=")
        if name == key:
            return value
    return None
