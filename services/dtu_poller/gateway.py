"""Which gateway ([opendtu] type = auto | opendtu | ahoy) and its clients: one interface, two implementations.

OpenDtuClient and AhoyClient expose the same public methods, so PollLoop, Reader and WriterLoop run unchanged on
either; what differs is collected here in `Gateway`: the name in logs, who may command (OpenDTU needs the admin
password; AhoyDTU only when its admin password is set, `menu_protEn`), the poll interval (AhoyDTU refreshes all
inverters every `refresh` s, 15 s by default: polling it much faster only re-reads the same sample) and the
writer's ack timeout (AhoyDTU has no pending/failure state: its client times out and resends itself, so the
writer must wait longer than the client's whole budget).

`type = auto` asks the gateway (ahoy.detect_gateway) at start and again after it was unreachable; a host that is
neither gives one error naming the host and both answers.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from typing import Any, Callable, Optional

from common import http
from common.clock import SYSTEM_CLOCK
from common.config import inverter_options
from common.http import HttpError, HttpTimeout, InvalidResponse
from services.dtu_poller.ahoy import AhoyClient, Request, detect_gateway, parse_generic
from services.dtu_poller.client import (MAX_BODY_BYTES, DtuConnectionError, DtuInvalidResponse, DtuTimeout,
                                        OpenDtuClient, base_url, decode_json)
from services.dtu_poller.writer import WriterParams

log = logging.getLogger("dtu_poller")

NAMES = {"opendtu": "OpenDTU", "ahoy": "AhoyDTU"}
AHOY_POLLS_PER_REFRESH = 3     # a new AhoyDTU sample is seen at most refresh/3 after it arrived there
AHOY_ACK_MARGIN_S = 5.0        # the writer's ack timeout: the AhoyClient's whole budget (all resends) plus this


class GatewayChanged(Exception):
    """The host answers as the other kind of gateway now: the service restarts to use it."""


def ahoy_request(host: str, timeout_s: float, clock=SYSTEM_CLOCK) -> Request:
    """ahoy.Request over common.http's Transport (a total deadline per request, a bounded body): a dict body is
    sent as raw JSON; any status with a JSON body is returned; no answer is DtuTimeout / DtuConnectionError, a body
    that is not JSON DtuInvalidResponse (kind html for HTML)."""
    transport = http.Transport(base_url(host), timeout_s, MAX_BODY_BYTES, clock)

    def request(method: str, path: str, json_body: Optional[dict] = None) -> tuple[int, Any]:
        body = None if json_body is None else json.dumps(json_body)
        headers = {"Content-Type": "application/json"} if body is not None else {}
        try:
            answer = transport.request(method, transport.prefix + path, headers, body)
        except InvalidResponse as exc:
            raise DtuInvalidResponse(str(exc), exc.kind) from None
        except HttpTimeout as exc:
            raise DtuTimeout(str(exc)) from None
        except HttpError as exc:
            raise DtuConnectionError(str(exc)) from None
        ctype = (answer.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise DtuInvalidResponse(f"{method} {path}: HTTP {answer.status_code}, Content-Type "
                                     f"{ctype or 'missing'!r}, not JSON", "html" if "html" in ctype else "invalid")
        return answer.status_code, decode_json(answer.content)
    return request


@dataclass
class Gateway:
    kind: str                  # opendtu | ahoy
    poll_client: Any
    write_client: Any
    params: WriterParams       # can_control, ack_timeout_s and the name adapted to the gateway
    poll_interval_s: float
    sample_period_s: Optional[Callable[[], float]] = None   # AhoyDTU: its refresh (PollLoop aligns to it)

    @property
    def name(self) -> str:
        return NAMES[self.kind]


def detect(cfg, clock=SYSTEM_CLOCK) -> str:
    """The configured type, or (auto) what the gateway says it is. Raises DtuError (unreachable, or neither)."""
    o = cfg.opendtu
    if o.type != "auto":
        return o.type
    return detect_gateway(ahoy_request(o.host, o.timeout, clock), base_url(o.host))


def open_gateway(cfg, kind: str, clock=SYSTEM_CLOCK, request: Optional[Request] = None) -> Gateway:
    """Both clients of `kind`, and what differs. AhoyDTU is asked for its protection and refresh (DtuError when
    it does not answer). `request`: AhoyDTU's transport instead of HTTP to [opendtu] host (the benchmark calls a
    simulator in-process, in simulated time)."""
    o = cfg.opendtu
    params = replace(WriterParams.from_config(cfg), gateway=NAMES[kind])
    if kind == "opendtu":
        clients = [OpenDtuClient(o.host, o.username, o.password, o.timeout, clock) for _ in range(2)]
        return Gateway(kind, clients[0], clients[1], params, o.poll_interval)

    def rating_bound(serial: str, index: int) -> Optional[float]:
        return inverter_options(cfg, serial, index).max_power_w or None
    poll, write = (AhoyClient(request or ahoy_request(o.host, o.timeout, clock), base_url(o.host), o.password,
                              clock, rating_bound=rating_bound) for _ in range(2))
    protected = parse_generic(write.get_json("/api/generic")).protected
    refresh_s = write.read_refresh_s()
    params = replace(params, can_control=bool(o.password) or not protected,
                     ack_timeout_s=max(params.ack_timeout_s, write.limit_ack_budget_s + AHOY_ACK_MARGIN_S))
    return Gateway(kind, poll, write, params, max(o.poll_interval, refresh_s / AHOY_POLLS_PER_REFRESH),
                   sample_period_s=lambda: poll.refresh_s)


def read_only_reason(gateway: Gateway) -> Optional[str]:
    """Why this gateway cannot be commanded (None: it can)."""
    if gateway.params.can_control:
        return None
    if gateway.kind == "ahoy":
        return "AhoyDTU has an admin password but [opendtu] password is empty: read-only access, no control possible"
    return "no [opendtu] password: read-only access, no control possible"


def rechecker(cfg, gateway: Gateway, clock=SYSTEM_CLOCK):
    """For PollLoop: after the gateway was unreachable, ask again which it is (type = auto only). Raises
    GatewayChanged when it is the other kind now, DtuError when it cannot tell."""
    if cfg.opendtu.type != "auto":
        return None

    def recheck() -> None:
        kind = detect(cfg, clock)
        if kind != gateway.kind:
            raise GatewayChanged(f"{base_url(cfg.opendtu.host)} answers as {NAMES[kind]} now, not as "
                                 f"{gateway.name}: restarting to use it")
    return recheck

