"""Request and Response values, and the request builders."""

from __future__ import annotations

import codecs
import json as jsonlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Final, final
from urllib.parse import quote

from ._body import BodyChunks, BodyFactory, StreamBody, byte_count
from ._errors import HTTPStatusError, InvalidRequestError
from ._headers import Headers, HeadersInput
from ._redaction import redacted_url
from ._validation import dot_segment

if TYPE_CHECKING:
    from ._attempts import AttemptRecord

__all__ = [
    "JSON",
    "ContentInput",
    "QueryInput",
    "Request",
    "Response",
    "delete",
    "get",
    "head",
    "options",
    "patch",
    "post",
    "put",
    "request",
]

#: A JSON-serialisable value.
JSON = None | bool | int | float | str | Sequence["JSON"] | Mapping[str, "JSON"]
_Scalar = str | int | float
#: A request body: bytes, text (sent as UTF-8), or a streamed body (see :class:`StreamBody`).
ContentInput = bytes | str | BodyChunks | BodyFactory
#: Query parameters: a mapping (values may be sequences for repeated keys) or a
#: sequence of pairs. (Any iterable of pairs works; a sequence in the type lets
#: type checkers infer ``{"q": "a", "n": 2}`` as a mapping.)
QueryInput = Mapping[str, _Scalar | Sequence[_Scalar]] | Sequence[tuple[str, _Scalar]]

_EMPTY_HEADERS: Final = Headers()
_METHOD: Final = re.compile(r"[A-Z][A-Z0-9_-]{0,31}", re.ASCII)
_PLACEHOLDER: Final = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SCHEME: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
# Characters kept as they are in the literal parts of a path template.
_PATH_SAFE: Final = "/:@!$&'()*+,;=-._~%"
_IDEMPOTENT_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})

# Sets one slot of an instance, bypassing the frozen dataclass's __setattr__.
_SlotSetter = Callable[[object, object], None]


@final
@dataclass(frozen=True, slots=True)
class Request:
    """An HTTP request, relative to the client's endpoint until an attempt binds it.

    Build one with :func:`get`, :func:`post`, ...; stages derive new requests
    with :func:`dataclasses.replace` and never mutate one.
    """

    #: Upper-case HTTP method.
    method: str
    #: Percent-encoded path and query; relative to the endpoint, or absolute once bound.
    url: str
    #: Request headers.
    headers: Headers = _EMPTY_HEADERS
    #: Body bytes (empty for none), or a :class:`StreamBody` sent as it is produced.
    content: bytes | StreamBody = b""
    #: The path template the URL was built from (``"users/{id}"``): a bounded metrics label.
    route: str = ""

    def __post_init__(self) -> None:
        # Not run for the requests attempts bind (_bound): only for built ones.
        headers = self.headers
        if headers is _EMPTY_HEADERS:  # most requests: nothing to check
            return
        if headers.__class__ is not Headers:
            # A mapping or pairs, as the builders take: checked the same way.
            headers = Headers(headers)
            _REQUEST_SLOTS[2](self, headers)
        _check_framing(headers, self.content)

    def __repr__(self) -> str:
        # Logged often: no credential header values and no query values.
        return (
            f"Request(method={self.method!r}, url={redacted_url(self.url)!r}, "
            f"headers={self.headers!r}, content={self.content!r}, route={self.route!r})"
        )

    @property
    def idempotent_by_method(self) -> bool:
        """Whether the method is safe to repeat (RFC 9110 section 9.2.2)."""
        return self.method in _IDEMPOTENT_METHODS

    # Hot-path trick, kept to this method: every attempt binds a request, and
    # setting the slots through their own descriptors (_REQUEST_SLOTS) skips
    # the frozen dataclass's per-field object.__setattr__.
    def _bound(self, url: str, headers: Headers) -> Request:
        """This request with an absolute ``url`` and the attempt's ``headers`` (internal)."""
        new = _new(Request)
        set_method, set_url, set_headers, set_content, set_route = _REQUEST_SLOTS
        set_method(new, self.method)
        set_url(new, url)
        set_headers(new, headers)
        set_content(new, self.content)
        set_route(new, self.route)
        return new


@final
@dataclass(frozen=True, slots=True, init=False)
class Response:
    """A fully read HTTP response.

    The body is buffered, so a response needs no closing and can be kept.
    ``Response(status, headers=None, content=b"", url="", elapsed=0.0, attempt=1)``:
    ``headers`` may be anything :class:`Headers` accepts (a mapping, pairs).
    """

    #: HTTP status code.
    status: int
    #: Response headers.
    headers: Headers = _EMPTY_HEADERS
    #: Body bytes.
    content: bytes = b""
    #: Absolute URL the response came from.
    url: str = ""
    #: Seconds from the start of the attempt that produced it to the end of the body.
    elapsed: float = 0.0
    #: Number (1-based) of the attempt that produced it.
    attempt: int = 1
    #: Every physical attempt of the call that returned it, in start order
    #: (filled by the client; query values and credentials redacted).
    attempts: tuple[AttemptRecord, ...] = field(default=(), repr=False, compare=False)

    def __repr__(self) -> str:
        # Logged often: no credential header values and no query values.
        return (
            f"Response(status={self.status!r}, headers={self.headers!r}, "
            f"content={self.content!r}, url={redacted_url(self.url)!r}, "
            f"elapsed={self.elapsed!r}, attempt={self.attempt!r})"
        )

    def __init__(
        self,
        status: int,
        headers: HeadersInput | None = None,
        content: bytes = b"",
        url: str = "",
        elapsed: float = 0.0,
        attempt: int = 1,
        attempts: tuple[AttemptRecord, ...] = (),
    ) -> None:
        set_status, set_headers, set_content, set_url, set_elapsed, set_attempt, set_attempts = (
            _RESPONSE_SLOTS
        )
        set_status(self, status)
        if headers is None:
            set_headers(self, _EMPTY_HEADERS)
        else:
            set_headers(self, headers if isinstance(headers, Headers) else Headers(headers))
        set_content(self, content)
        set_url(self, url)
        set_elapsed(self, elapsed)
        set_attempt(self, attempt)
        set_attempts(self, attempts)

    @property
    def text(self) -> str:
        """The body decoded with the ``Content-Type`` charset (UTF-8 by default)."""
        return self.content.decode(self._charset(), errors="replace")

    def json(self) -> JSON:
        """The body parsed as JSON (raises ``ValueError`` if it is not JSON)."""
        parsed: JSON = jsonlib.loads(self.content)
        return parsed

    @property
    def is_success(self) -> bool:
        """Whether the status is 2xx."""
        return 200 <= self.status < 300

    def raise_for_status(self) -> Response:
        """Raise :class:`HTTPStatusError` for a 4xx/5xx status; return ``self`` otherwise."""
        if self.status >= 400:
            kind = "client" if self.status < 500 else "server"
            error = HTTPStatusError(
                f"{kind} error {self.status} for {redacted_url(self.url) or 'request'}",
                response=self,
            )
            raise error.with_attempts(self.attempts)
        return self

    def _charset(self) -> str:
        content_type = self.headers.get("content-type", "") or ""
        for part in content_type.split(";")[1:]:
            key, _, value = part.strip().partition("=")
            if key.lower() == "charset" and value:
                charset = value.strip("\"' ")
                try:
                    codecs.lookup(charset)
                except LookupError:
                    break
                return charset
        return "utf-8"

    # Hot-path tricks, kept to _received() and with_attempt(): every call builds
    # a response, so these fill the slots through their own descriptors
    # (_RESPONSE_SLOTS), skipping the frozen dataclass's per-field
    # object.__setattr__, and a response fresh from a transport, which nobody
    # else holds yet, is stamped in place instead of copied. It is recognised by
    # the identity of its elapsed time, _UNSTAMPED.
    @classmethod
    def _received(cls, status: int, headers: Headers, content: bytes, url: str) -> Response:
        """A response a transport just read, not yet stamped (internal, hot path)."""
        new = _new(cls)
        set_status, set_headers, set_content, set_url, set_elapsed, set_attempt, set_attempts = (
            _RESPONSE_SLOTS
        )
        set_status(new, status)
        set_headers(new, headers)
        set_content(new, content)
        set_url(new, url)
        set_elapsed(new, _UNSTAMPED)
        set_attempt(new, 1)
        set_attempts(new, ())
        return new

    def with_attempt(self, attempt: int, elapsed: float, url: str) -> Response:
        """This response stamped with the attempt that produced it (internal).

        A response fresh from a transport is stamped in place; any other (a
        handler's or a stage's, perhaps shared) is copied.
        """
        set_status, set_headers, set_content, set_url, set_elapsed, set_attempt, set_attempts = (
            _RESPONSE_SLOTS
        )
        if self.elapsed is _UNSTAMPED:
            set_elapsed(self, elapsed)
            set_attempt(self, attempt)
            return self
        new = _new(Response)
        set_status(new, self.status)
        set_headers(new, self.headers)
        set_content(new, self.content)
        set_url(new, self.url or url)
        set_elapsed(new, elapsed)
        set_attempt(new, attempt)
        set_attempts(new, ())
        return new


# For the hot paths of the classes above (module globals are the cheapest
# lookup): the slots exist only once the dataclasses are built.
_new = object.__new__


def _slot_setters(cls: type) -> tuple[_SlotSetter, ...]:
    """The setters of a slotted dataclass's slots, in field order (for the hot paths)."""
    return tuple(cls.__dict__[field.name].__set__ for field in fields(cls))


_REQUEST_SLOTS: Final = _slot_setters(Request)
_RESPONSE_SLOTS: Final = _slot_setters(Response)
# The elapsed time of a response no attempt has stamped yet: told apart by
# identity, so no value a caller passes can be mistaken for it.
_UNSTAMPED: Final = float("0")


def request(
    method: str,
    path: str,
    *,
    path_params: Mapping[str, str | int] | None = None,
    query: QueryInput | None = None,
    headers: HeadersInput | None = None,
    json: JSON = None,
    content: ContentInput | None = None,
) -> Request:
    """Build a request for ``path`` (relative to the client's endpoint).

    ``path`` is a template such as ``"users/{id}"``: each ``{name}`` is filled
    from ``path_params`` with the value percent-escaped, so a value cannot add
    path segments. ``json`` and ``content`` are exclusive; ``json`` sets
    ``Content-Type: application/json``. ``content`` is bytes, text (sent as
    UTF-8), or a body streamed as it is produced (see :class:`StreamBody`): an
    iterable of bytes, sync or async, sent once; or a function returning a
    fresh one, which retries and hedges may send again.
    ``Content-Type: application/json``.
    """
    if not isinstance(method, str) or not _METHOD.fullmatch(method.upper()):
        raise InvalidRequestError(f"method must be an HTTP method name; got {method!r}")
    method = method.upper()
    url = _expand_path(path, path_params)
    if query is not None:
        encoded = _encode_query(query)
        if encoded:
            url = f"{url}?{encoded}"
    built_headers = Headers(headers) if headers else _EMPTY_HEADERS
    body = b""
    if json is not None:
        if content is not None:
            raise InvalidRequestError("pass either json= or content=, not both")
        try:
            body = jsonlib.dumps(json, separators=(",", ":"), allow_nan=False).encode()
        except (TypeError, ValueError) as exc:
            raise InvalidRequestError(f"json= is not JSON-serialisable: {exc}") from None
        if "content-type" not in built_headers:
            built_headers = built_headers.replace({"content-type": "application/json"})
    elif content is not None:
        if isinstance(content, str):
            body = content.encode()
        elif isinstance(content, (bytes, bytearray, memoryview)):
            body = bytes(content)
        else:
            return Request(method, url, built_headers, StreamBody(content), path)
    return Request(method=method, url=url, headers=built_headers, content=body, route=path)


def _check_framing(headers: Headers, content: bytes | StreamBody) -> None:
    """Refuse framing headers the body contradicts; a streamed body learns its length.

    The transport frames the body: a ``Transfer-Encoding`` from the caller is
    refused, and a ``Content-Length`` must be one non-negative integer equal
    to the body's size (a streamed body is held to it as it is sent). A wrong
    one would cut the body short, leave the server waiting for the rest, or
    frame the request two ways at once.
    """
    declared: list[str] = []
    for name, value in headers._pairs():
        if name == "content-length":
            declared.append(value)
        elif name == "transfer-encoding":
            raise InvalidRequestError(
                "do not set Transfer-Encoding: the transport frames the body itself "
                "(a streamed body is sent chunked unless it has a Content-Length)"
            )
    if not declared:
        return
    if len(declared) > 1 or not (declared[0].isascii() and declared[0].isdigit()):
        raise InvalidRequestError(
            f"Content-Length must be one non-negative integer; got {', '.join(declared)!r}"
        )
    length = int(declared[0])
    if isinstance(content, StreamBody):
        content._length = length
    elif length != len(content):
        raise InvalidRequestError(
            f"Content-Length {length} does not match the body's {byte_count(len(content))} "
            "(leave it out: the transport sets it)"
        )


def get(
    path: str,
    *,
    path_params: Mapping[str, str | int] | None = None,
    query: QueryInput | None = None,
    headers: HeadersInput | None = None,
) -> Request:
    """Build a GET request; see :func:`request`."""
    return request("GET", path, path_params=path_params, query=query, headers=headers)


def head(
    path: str,
    *,
    path_params: Mapping[str, str | int] | None = None,
    query: QueryInput | None = None,
    headers: HeadersInput | None = None,
) -> Request:
    """Build a HEAD request; see :func:`request`."""
    return request("HEAD", path, path_params=path_params, query=query, headers=headers)


def options(
    path: str,
    *,
    path_params: Mapping[str, str | int] | None = None,
    query: QueryInput | None = None,
    headers: HeadersInput | None = None,
) -> Request:
    """Build an OPTIONS request; see :func:`request`."""
    return request("OPTIONS", path, path_params=path_params, query=query, headers=headers)


def delete(
    path: str,
    *,
    path_params: Mapping[str, str | int] | None = None,
    query: QueryInput | None = None,
    headers: HeadersInput | None = None,
) -> Request:
    """Build a DELETE request; see :func:`request`."""
    return request("DELETE", path, path_params=path_params, query=query, headers=headers)


def post(
    path: str,
    *,
    path_params: Mapping[str, str | int] | None = None,
    query: QueryInput | None = None,
    headers: HeadersInput | None = None,
    json: JSON = None,
    content: ContentInput | None = None,
) -> Request:
    """Build a POST request; see :func:`request`."""
    return request(
        "POST",
        path,
        path_params=path_params,
        query=query,
        headers=headers,
        json=json,
        content=content,
    )


def put(
    path: str,
    *,
    path_params: Mapping[str, str | int] | None = None,
    query: QueryInput | None = None,
    headers: HeadersInput | None = None,
    json: JSON = None,
    content: ContentInput | None = None,
) -> Request:
    """Build a PUT request; see :func:`request`."""
    return request(
        "PUT",
        path,
        path_params=path_params,
        query=query,
        headers=headers,
        json=json,
        content=content,
    )


def patch(
    path: str,
    *,
    path_params: Mapping[str, str | int] | None = None,
    query: QueryInput | None = None,
    headers: HeadersInput | None = None,
    json: JSON = None,
    content: ContentInput | None = None,
) -> Request:
    """Build a PATCH request; see :func:`request`."""
    return request(
        "PATCH",
        path,
        path_params=path_params,
        query=query,
        headers=headers,
        json=json,
        content=content,
    )


def _expand_path(template: str, params: Mapping[str, str | int] | None) -> str:
    if not isinstance(template, str):
        raise InvalidRequestError(f"path must be a str; got {type(template).__name__}")
    if _SCHEME.match(template) or template.startswith("//"):
        raise InvalidRequestError(
            f"path must be relative to the client's endpoint; got the absolute URL {template!r}"
        )
    if any(ch in template for ch in "?#") or any(ord(ch) <= 0x20 for ch in template):
        raise InvalidRequestError(
            f"path {template!r} may not hold '?', '#', spaces or control characters; "
            "pass query parameters as query="
        )
    names = _PLACEHOLDER.findall(template)
    given = dict(params) if params else {}
    missing = [name for name in names if name not in given]
    if missing:
        raise InvalidRequestError(f"path {template!r} needs path_params {missing}")
    extra = sorted(set(given) - set(names))
    if extra:
        raise InvalidRequestError(f"path_params {extra} do not appear in path {template!r}")
    dots = dot_segment(template)
    if dots is not None:
        raise InvalidRequestError(
            f"path {template!r} has the segment {dots!r}: '.' and '..' segments (also "
            "percent-encoded) are refused, so a request cannot leave the endpoint's base path"
        )
    if not names:
        return quote(template, safe=_PATH_SAFE)
    parts: list[str] = []
    last = 0
    for match in _PLACEHOLDER.finditer(template):
        parts.append(quote(template[last : match.start()], safe=_PATH_SAFE))
        parts.append(_escape_segment(match.group(1), given[match.group(1)]))
        last = match.end()
    parts.append(quote(template[last:], safe=_PATH_SAFE))
    path = "".join(parts)
    dots = dot_segment(path)
    if dots is not None:
        # A literal '%' next to a value ("%{x}" with x="2E") can still spell one.
        raise InvalidRequestError(
            f"path {template!r} with these path_params makes the segment {dots!r}, which "
            "would leave the endpoint's base path"
        )
    return path


def _escape_segment(name: str, value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InvalidRequestError(f"path_params[{name!r}] must be str or int; got {value!r}")
    text = str(value)
    if not text:
        raise InvalidRequestError(f"path_params[{name!r}] must not be empty")
    if text in {".", ".."}:
        # Even sent as %2E, normalising proxies turn it back into a dot segment.
        raise InvalidRequestError(
            f"path_params[{name!r}] must not be '.' or '..': it would leave the "
            "endpoint's base path"
        )
    return quote(text, safe="")


def _encode_query(query: QueryInput) -> str:
    if isinstance(query, Mapping):
        pairs: Iterable[object] = query.items()
    elif isinstance(query, Iterable) and not isinstance(query, (str, bytes)):
        pairs = query
    else:
        raise InvalidRequestError(
            "query must be a mapping of keys to values or (key, value) pairs; "
            f"got {type(query).__name__}"
        )
    out: list[str] = []
    for pair in pairs:
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise InvalidRequestError(
                f"query pairs must be (key, value) tuples; got {type(pair).__name__}"
            )
        key, value = pair
        if not isinstance(key, str):
            raise InvalidRequestError(f"query keys must be str; got {key!r}")
        values = value if isinstance(value, (list, tuple)) else (value,)
        for item in values:
            out.append(f"{quote(key, safe='')}={quote(_query_value(key, item), safe='')}")
    return "&".join(out)


def _query_value(key: str, value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    raise InvalidRequestError(
        f"query[{key!r}] must be str, int, float or bool; got {type(value).__name__}"
    )
