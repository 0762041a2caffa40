"""Logging shared by all services: one line per event, to stderr, passwords never printed."""
from __future__ import annotations

import logging
import re
import sys

# the user info ends at the LAST @ before the path: a password may hold an @ (urlsplit reads it so too)
_URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/?#\s]*@")


def redact_url(url: str) -> str:
    """http://user:secret@host/x -> http://***@host/x"""
    return _URL_USERINFO.sub(r"\g<scheme>***@", url)


class RedactingFilter(logging.Filter):
    """Replaces every registered secret, and any user:password@ in URLs, with ***."""

    def __init__(self, secrets=()):
        super().__init__()
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        clean = redact_url(text)
        for secret in self.secrets:
            clean = clean.replace(secret, "***")
        if clean != text:
            record.msg, record.args = clean, None
        return True


def setup_logging(service: str, level: str = "INFO", secrets=()) -> logging.Logger:
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter(secrets))
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    return logging.getLogger(service)
