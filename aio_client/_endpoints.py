"""An absolute URL's endpoint, ``scheme://host:port``: the one parse every caller shares.

The breaker stage keys its breakers by it and the metrics sinks label by it,
so both must read a URL the same way. Each caller still decides what an
unusable URL means to it (see :attr:`EndpointParts.port_valid`).
"""

from __future__ import annotations

from typing import Final, NamedTuple
from urllib.parse import urlsplit

__all__ = ["DEFAULT_PORTS", "EndpointParts", "bracketed", "format_endpoint", "split_endpoint"]

#: The port a URL of each scheme means when it names none.
DEFAULT_PORTS: Final = {"http": 80, "https": 443}


class EndpointParts(NamedTuple):
    """What :func:`split_endpoint` reads from a URL."""

    #: Lower-case scheme; ``""`` for a relative URL.
    scheme: str
    #: Host name or address, lower-case and without brackets; ``""`` if none.
    host: str
    #: The port as written; ``None`` when absent or invalid.
    port: int | None
    #: ``False`` when a port is written but is not a valid one (``:http``, ``:99999``).
    port_valid: bool
    #: Whether the URL has an authority (``//host...``) at all.
    has_netloc: bool
    #: The URL's path, as written.
    path: str


def split_endpoint(url: str) -> EndpointParts:
    """The endpoint parts of ``url``; :class:`ValueError` if it cannot be split at all."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        return EndpointParts(
            parts.scheme.lower(), parts.hostname or "", None, False, bool(parts.netloc), parts.path
        )
    return EndpointParts(
        parts.scheme.lower(), parts.hostname or "", port, True, bool(parts.netloc), parts.path
    )


def bracketed(host: str) -> str:
    """``host`` as written in a URL: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host else host


def format_endpoint(scheme: str, host: str, port: int | None) -> str:
    """``scheme://host:port``, with the scheme's default port (else 0) when ``port`` is ``None``."""
    if port is None:
        port = DEFAULT_PORTS.get(scheme, 0)
    return f"{scheme}://{bracketed(host)}:{port}"
