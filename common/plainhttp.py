"""Keep the HTTP pollers small: OpenDTU and the Shellys serve plain HTTP, yet `http.client` imports `ssl`, which
maps libssl and libcrypto and costs about 2.7 MiB of PSS per process. A poller whose configured URLs are all
http:// blocks that import before it loads its HTTP client; `http.client` then just has no HTTPSConnection. A
https:// URL in the config keeps ssl (for a DTU behind a TLS proxy)."""
from __future__ import annotations

import sys
from typing import Iterable, Optional


def skip_ssl_unless_needed(urls: Iterable[Optional[str]]) -> bool:
    """Block `import ssl` unless a URL is https:// (or ssl or http.client is loaded already). True when blocked.
    Call it before importing http.client."""
    if any(str(url).strip().lower().startswith("https://") for url in urls if url):
        return False
    if "ssl" in sys.modules or "http.client" in sys.modules:
        return False
    sys.modules["ssl"] = None        # `import ssl` raises ImportError, which http.client expects and handles
    return True
