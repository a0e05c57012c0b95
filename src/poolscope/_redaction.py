"""What a URL may show in telemetry: parameter names, never their values or credentials.

A query string often carries a prompt, an e-mail address or a token, and a URL
may carry a password. The HTTP semantic conventions redact both; poolscope does
so for the server span (unless ``capture_request_details``) and for the client
spans of the blocking HTTP calls it records.
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import unquote_plus, urlsplit

from . import semconv

__all__ = ["redact_query", "telemetry_url"]

_PARAMETER_NAME: Final = re.compile(r"[A-Za-z0-9_.\-\[\]]{1,64}")


def redact_query(query: str) -> str:
    """Keep the parameter names, replace every value.

    A part without ``=`` is all value (``?sk-live-…``), and so is a "name" that
    does not look like one (``?alice@example.com=``): both become ``REDACTED``.
    """
    parts = []
    for part in query.split("&"):
        name, equals, _ = part.partition("=")
        name = unquote_plus(name)
        if equals and _PARAMETER_NAME.fullmatch(name):
            parts.append(f"{name}={semconv.REDACTED}")
        elif part:
            parts.append(semconv.REDACTED)
    return "&".join(parts)


def telemetry_url(url: str, *, keep_query: bool) -> str:
    """``url`` as ``url.full`` may carry it: credentials always replaced (as the
    conventions require), query values unless ``keep_query``, no fragment."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{semconv.REDACTED}:{semconv.REDACTED}@{netloc.rpartition('@')[2]}"
    query = parts.query if keep_query else redact_query(parts.query)
    base = f"{parts.scheme}://{netloc}{parts.path}"
    return f"{base}?{query}" if query else base
