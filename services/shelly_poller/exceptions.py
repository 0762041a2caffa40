"""Errors of the Shelly clients (as aioshelly keeps them apart): every problem a device or the network causes is
a ShellyError, a subclass of common.http's error of the same `kind` (the short name meter.status and relay.state
publish as error_kind). Anything else escaping a client is a bug of ours."""
from __future__ import annotations

from common.http import (HttpAuthError, HttpConnectionError, HttpError, HttpRateLimited, HttpStatusError,
                         HttpTimeout, InvalidResponse)


class ShellyError(HttpError):
    """Any problem talking to a Shelly; the message names the device."""

    def __init__(self, host: str, message: str):
        self.host = host
        self.message = message
        super().__init__(f"Shelly {host}: {message}")


class ShellyConnectionError(ShellyError, HttpConnectionError):
    pass


class ShellyTimeout(ShellyError, HttpTimeout):
    pass


class ShellyAuthError(ShellyError, HttpAuthError):
    """401, or credentials withheld because the auth scheme does not fit the device's pinned generation."""


class ShellyRateLimited(ShellyError, HttpRateLimited):
    pass


class ShellyHttpError(ShellyError, HttpStatusError):
    def __init__(self, host: str, message: str, status: int | None = None, code: int | None = None):
        super().__init__(host, message)
        self.status, self.code = status, code


class ShellyInvalidResponse(ShellyError, InvalidResponse):
    """The body is not what the API promises: HTML, garbage, null, NaN, missing or implausible fields."""

    def __init__(self, host: str, message: str, kind: str = "invalid"):
        super().__init__(host, message)
        self.kind = kind            # "html" for an HTML page, else "invalid"


class ShellyInvalidReading(ShellyError):
    """The device itself says the reading is not valid (`is_valid: false`, `errors: [...]`)."""
    kind = "invalid_reading"


class ShellyUnsupportedDevice(ShellyError):
    kind = "unsupported"


def as_shelly(host: str, exc: HttpError) -> ShellyError:
    """The transport's error as the ShellyError of the same kind."""
    if isinstance(exc, InvalidResponse):
        return ShellyInvalidResponse(host, str(exc), exc.kind)
    cls = ShellyTimeout if isinstance(exc, HttpTimeout) else ShellyConnectionError
    return cls(host, str(exc))
