"""What never appears in a repr, an error message or an attempt record.

Header values of :func:`sensitive_headers` (``Authorization``,
``Proxy-Authorization``, ``Cookie``, ``Set-Cookie`` and any name added with
:func:`redact_headers`) print as :data:`REDACTED`; URLs in records and messages
lose their credentials and their query values. The requests themselves are
never changed: redaction is for what is shown, not for what is sent.
"""

from __future__ import annotations

from typing import Final

from ._validation import header_name

__all__ = ["REDACTED", "redact_headers", "redacted_url", "sensitive_headers"]

#: What a hidden value prints as.
REDACTED: Final = "<redacted>"

_DEFAULT: Final = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})
# Replaced as a whole (never mutated), so readers on any thread see one set or the other.
_sensitive: frozenset[str] = _DEFAULT


def redact_headers(*names: str) -> None:
    """Hide the values of headers ``names`` too, in every repr and error message.

    Process-wide and additive (``X-Api-Key``, ``X-Auth-Token``...); names are
    case-insensitive. The four defaults cannot be removed.
    """
    global _sensitive
    _sensitive = _sensitive | {header_name(name).lower() for name in names}


def sensitive_headers() -> frozenset[str]:
    """The lower-cased names whose values are hidden."""
    return _sensitive


def is_sensitive(name: str) -> bool:
    """Whether the value of header ``name`` is hidden (internal)."""
    return name.lower() in _sensitive


def redacted_url(url: str) -> str:
    """``url`` without ``user:password@`` and with every query value replaced.

    ``http://u:p@h/x?token=abc&a`` becomes ``http://h/x?token=<redacted>&a``;
    the keys stay, so a log still says which parameters were sent.
    """
    if "?" not in url and "@" not in url:
        return url
    base, mark, query = url.partition("?")
    scheme, sep, rest = base.partition("://")
    if sep:
        authority, slash, path = rest.partition("/")
        if "@" in authority:
            base = f"{scheme}://{authority.rpartition('@')[2]}{slash}{path}"
    if not mark:
        return base
    query = query.partition("#")[0]
    pairs = (
        f"{key}={REDACTED}" if eq else key
        for key, eq, _ in (item.partition("=") for item in query.split("&"))
    )
    return f"{base}?{'&'.join(pairs)}"
