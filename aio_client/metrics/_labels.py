"""What the Prometheus and OpenTelemetry sinks share: bounded label values, buckets.

Every value a sink puts in a label or a metric attribute comes from a small,
fixed set, or from a :class:`BoundedValues` that admits a limited number of
distinct values and reads every later one as :data:`OTHER`. So no traffic
pattern (10,000 distinct paths, a scanner, a misused ``route``) can grow the
number of series without bound. No raw URL, query or header value is ever a
label: routes are templates, endpoints are ``scheme://host:port``.
"""

from __future__ import annotations

from typing import Final, NamedTuple, final

from .._circuit_state import CircuitState
from .._endpoints import DEFAULT_PORTS, bracketed, format_endpoint, split_endpoint
from .._validation import positive_int as validate_limit

__all__ = [
    "BREAKER_STATE_VALUES",
    "DEFAULT_BUCKETS",
    "KNOWN_METHODS",
    "NONE",
    "NO_ENDPOINT",
    "OTHER",
    "BoundedValues",
    "Endpoint",
    "EndpointLabels",
    "method_label",
    "outcome_label",
    "status_class",
    "validate_limit",
]

#: Histogram bounds (seconds) for service-to-service latencies: 1 ms to 30 s.
DEFAULT_BUCKETS: Final = (
    *(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5),
    *(1.0, 2.5, 5.0, 10.0, 30.0),
)
#: A breaker state as a gauge value.
BREAKER_STATE_VALUES: Final = {
    CircuitState.CLOSED: 0.0,
    CircuitState.HALF_OPEN: 1.0,
    CircuitState.OPEN: 2.0,
}
#: What a value reads as once its label has admitted as many distinct values as allowed.
OTHER: Final = "<other>"
#: A label with no value: a call built without a route template, a call that
#: never reached an endpoint.
NONE: Final = "<none>"
#: Methods kept as they are; any other reads as ``_OTHER`` (the OpenTelemetry convention).
KNOWN_METHODS: Final = frozenset(
    {"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE"}
)
_OTHER_METHOD: Final = "_OTHER"
_STATUS_CLASSES: Final = ("1xx", "2xx", "3xx", "4xx", "5xx")


def method_label(method: str) -> str:
    """``method`` if it is a standard HTTP method, else ``"_OTHER"``."""
    return method if method in KNOWN_METHODS else _OTHER_METHOD


def status_class(status: int) -> str:
    """``"2xx"``, ``"5xx"``...; ``"other"`` outside 100-599."""
    index = status // 100 - 1
    return _STATUS_CLASSES[index] if 0 <= index < 5 else "other"


def outcome_label(status: int | None, ending: str) -> str:
    """The status class of a response, else why the call or attempt ended."""
    return status_class(status) if status is not None else ending


@final
class BoundedValues:
    """Admits the first ``limit`` distinct values of a label; later ones read as :data:`OTHER`.

    Not thread-safe beyond what the GIL gives a set; a value admitted stays
    admitted, so a label's mapping never changes once decided.
    """

    __slots__ = ("_limit", "_seen")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        """``value`` if admitted (now or before), else :data:`OTHER`."""
        seen = self._seen
        if value in seen:
            return value
        if len(seen) < self._limit:
            seen.add(value)
            return value
        return OTHER

    def __len__(self) -> int:
        return len(self._seen)


class Endpoint(NamedTuple):
    """What the sinks say about an endpoint (a client's base URL)."""

    #: ``scheme://host:port``, or :data:`OTHER` / :data:`NONE`.
    key: str
    #: Host name or address, without brackets (``server.address``).
    host: str
    #: Port, the scheme's default when the URL has none (``server.port``).
    port: int
    #: ``http`` or ``https``.
    scheme: str
    #: The base URL without user info (safe for ``url.full``).
    base: str


#: The endpoint of a call that never reached one.
NO_ENDPOINT: Final = Endpoint(NONE, "", 0, "", "")


@final
class EndpointLabels:
    """Base URL → :class:`Endpoint`, computed once per base URL and bounded.

    At most ``limit`` distinct endpoint keys are admitted (later ones read as
    :data:`OTHER`); at most ``4 * limit`` base URLs are remembered.
    """

    __slots__ = ("_cache", "_keys", "_max_cached")

    def __init__(self, limit: int) -> None:
        self._keys = BoundedValues(limit)
        self._cache: dict[str, Endpoint] = {}
        self._max_cached = 4 * limit

    def __call__(self, base: str) -> Endpoint:
        """The endpoint of base URL (or absolute URL) ``base``."""
        found = self._cache.get(base)
        if found is not None:
            return found
        endpoint = self._parse(base)
        if len(self._cache) < self._max_cached:
            self._cache[base] = endpoint
        return endpoint

    def of_url(self, url: str) -> Endpoint:
        """The endpoint of an absolute URL, not remembered (for rare paths)."""
        return self._parse(url)

    def key(self, name: str) -> str:
        """Fold an already-made key (a breaker's name) through the same limit."""
        return self._keys(name) if name else NONE

    def _parse(self, url: str) -> Endpoint:
        try:
            scheme, host, port, port_valid, _, path = split_endpoint(url)
        except ValueError:
            return NO_ENDPOINT
        if not port_valid or not scheme or not host:
            return NO_ENDPOINT
        key = self._keys(format_endpoint(scheme, host, port))
        shown = bracketed(host)
        netloc = f"{shown}:{port}" if port is not None else shown
        base = f"{scheme}://{netloc}{path.rstrip('/')}"
        if port is None:
            port = DEFAULT_PORTS.get(scheme, 0)
        return Endpoint(key, host, port, scheme, base)
