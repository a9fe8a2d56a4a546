"""What reaches the wire: requests are checked when built, the same for every transport."""

from __future__ import annotations

import pytest

import aio_client as ac
from aio_client.transports import MemoryTransport

SECRET = "s3cr3t-value"


async def _ok(_: ac.Request, /) -> ac.Response:
    return ac.Response(200)


@pytest.mark.parametrize(
    "name",
    [
        "transfer-encoding\t",
        "x\tname",
        "x(y)",
        "a,b",
        "x y",
        "x:y",
        "na\u00efve",
        "",
        "x\r\ninjected",
        "x/y",
        "[x]",
    ],
)
def test_header_names_must_be_tokens(name: str) -> None:
    """A header name that is not an RFC 9110 token is refused when the request is built."""
    with pytest.raises(ac.InvalidRequestError, match="invalid header name"):
        ac.get("x", headers={name: "v"})


@pytest.mark.parametrize("name", ["x-ok", "X_Ok.1", "!#$%&'*+-.^_`|~", "Content-Type"])
def test_token_header_names_are_accepted(name: str) -> None:
    """Every RFC 9110 token character is allowed in a name; names are stored lower-cased."""
    assert ac.get("x", headers={name: "v"}).headers[name] == "v"


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("a\r\nInjected: 1", "control character"),
        ("a\nb", "control character"),
        ("a\x00b", "control character"),
        ("a\x7fb", "control character"),
        ("caf\u00e9", "non-ASCII"),
        ("\u2713", "non-ASCII"),
        (" padded", "either end"),
        ("padded\t", "either end"),
    ],
)
def test_header_values_are_visible_ascii(value: str, fragment: str) -> None:
    """Control characters, non-ASCII and edge whitespace in a value are refused, naming it."""
    with pytest.raises(ac.InvalidRequestError, match=fragment) as info:
        ac.get("x", headers={"X-Thing": value})
    assert "x-thing" in str(info.value).lower()


@pytest.mark.parametrize("value", ["", "a b", "a\tb", "Bearer abc.def-ghi~", '"quoted", x=1'])
def test_ordinary_header_values_are_accepted(value: str) -> None:
    """Empty values and inner spaces or tabs are fine."""
    assert ac.get("x", headers={"X-Thing": value}).headers["x-thing"] == value


def test_a_bad_secret_header_value_is_not_shown() -> None:
    """The error for a malformed Authorization value shows none of its characters."""
    with pytest.raises(ac.InvalidRequestError) as info:
        ac.get("x", headers={"Authorization": f"Bearer {SECRET}\u00e9"})
    assert SECRET not in str(info.value)
    assert "U+00E9" not in str(info.value)


@pytest.mark.parametrize("headers", [123, "x: y", b"x", [("a",)], [("a", "b", "c")], {"a": 1}])
def test_headers_of_the_wrong_shape_are_typed_errors(headers: object) -> None:
    """headers= that is not a mapping or (name, value) pairs of str raises InvalidRequestError."""
    with pytest.raises(ac.InvalidRequestError, match="header"):
        ac.get("x", headers=headers)  # type: ignore[arg-type]


@pytest.mark.parametrize("query", [123, 1.5, "a=b", b"a=b", [("a",)], [1, 2]])
def test_query_of_the_wrong_shape_is_a_typed_error(query: object) -> None:
    """query= not a mapping or (key, value) pairs raises InvalidRequestError, not TypeError."""
    with pytest.raises(ac.InvalidRequestError, match="query"):
        ac.get("x", query=query)  # type: ignore[arg-type]


def test_replace_takes_header_names_in_any_case() -> None:
    """Headers.replace() matches names case-insensitively and validates what it is given."""
    headers = ac.Headers({"Authorization": "old", "Accept": "*/*"})
    replaced = headers.replace({"AUTHORIZATION": "new"})
    assert replaced["authorization"] == "new"
    assert replaced.get_list("Authorization") == ["new"]
    assert replaced["accept"] == "*/*"
    with pytest.raises(ac.InvalidRequestError, match="invalid header name"):
        headers.replace({"bad name": "x"})
    with pytest.raises(ac.InvalidRequestError, match="control character"):
        headers.replace({"X-A": "a\r\nb"})


# --- endpoints -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://svc/api v1",
        "http://svc/api\tv1",
        "http://svc/api\r\nv1",
        "http://svc/api\x00",
        " http://svc",
        "http://svc/\x7f",
    ],
)
def test_endpoints_with_whitespace_or_control_characters_are_refused(endpoint: str) -> None:
    """Whitespace and control characters in a base URL are refused, not stripped or sent."""
    with pytest.raises(ac.ConfigError, match="whitespace or control characters"):
        ac.Client(MemoryTransport(_ok), endpoint)


@pytest.mark.parametrize(
    "endpoint", [f"http://user:{SECRET}@svc", "https://user@svc:8443/api", f"http://:{SECRET}@svc"]
)
def test_endpoints_with_credentials_are_refused_without_showing_them(endpoint: str) -> None:
    """user:password@ in a base URL is refused; the message says to use a header and hides them."""
    with pytest.raises(ac.ConfigError, match="Authorization") as info:
        ac.Client(MemoryTransport(_ok), endpoint)
    assert SECRET not in str(info.value)
    assert "user" not in str(info.value).replace("user:password", "")


@pytest.mark.parametrize(
    "endpoint", ["ftp://svc", "http://", "http://svc:99999", "http://svc:x", "http://svc?q=1"]
)
def test_other_malformed_endpoints_are_refused(endpoint: str) -> None:
    """Other schemes, no host, bad ports, queries: ConfigError naming the endpoint."""
    with pytest.raises(ac.ConfigError, match="endpoint"):
        ac.Client(MemoryTransport(_ok), endpoint)


async def test_an_endpoint_provider_is_held_to_the_same_rules() -> None:
    """An endpoint provider returning a URL with credentials fails the call with ConfigError."""
    sent: list[ac.Request] = []

    async def record(request: ac.Request, /) -> ac.Response:
        sent.append(request)
        return ac.Response(200)

    client = ac.Client(MemoryTransport(record), lambda: f"http://u:{SECRET}@svc")
    with pytest.raises(ac.ConfigError, match="credentials") as info:
        await client.get("x")
    assert SECRET not in str(info.value)
    assert sent == []


# --- templates and path parameters -------------------------------------------------------


@pytest.mark.parametrize(
    "template",
    [
        "../admin",
        "./x",
        "a/../b",
        "a/./b",
        "a/..",
        "%2e%2e/admin",
        "%2E/x",
        ".%2e/x",
        "a/%2e%2E",
        "{id}/../x",
    ],
)
def test_templates_cannot_leave_the_base_path(template: str) -> None:
    """'.' and '..' segments in a template, literal or percent-encoded, are refused."""
    with pytest.raises(ac.InvalidRequestError, match="base path"):
        ac.get(template, path_params={"id": 1} if "{id}" in template else None)


@pytest.mark.parametrize("template", ["a.b", "..a", "a..", "...", "v1.2/x", ".well-known/x"])
def test_dots_inside_segments_are_fine(template: str) -> None:
    """Segments that merely contain dots are ordinary path text."""
    assert ac.get(template).url == template


@pytest.mark.parametrize("value", [".", ".."])
def test_path_params_that_are_dot_segments_are_refused(value: str) -> None:
    """A path parameter equal to '.' or '..' is refused, naming the parameter."""
    with pytest.raises(ac.InvalidRequestError, match=r"path_params\['name'\]"):
        ac.get("files/{name}", path_params={"name": value})


def test_a_literal_percent_next_to_a_param_cannot_spell_a_dot_segment() -> None:
    """'%{x}' with x='2E' would make '%2E' on the wire: refused too."""
    with pytest.raises(ac.InvalidRequestError, match="base path"):
        ac.get("a/%{x}/b", path_params={"x": "2E"})


def test_client_helpers_build_through_the_same_checks() -> None:
    """client.get('../admin') raises InvalidRequestError before anything is sent."""
    client = ac.Client(MemoryTransport(_ok), "http://svc/api/v1")
    with pytest.raises(ac.InvalidRequestError):
        client.get("../admin")
    with pytest.raises(ac.InvalidRequestError):
        client.post("x", headers={"X-A": "caf\u00e9"})
    with pytest.raises(ac.InvalidRequestError):
        client.get("x", query=123)  # type: ignore[arg-type]


# -- framing: the transport's job ------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{"Transfer-Encoding": "chunked"}, {"transfer-encoding": "gzip, chunked"}],
)
def test_transfer_encoding_from_the_caller_is_refused(headers: dict[str, str]) -> None:
    """The transport frames the body: a caller's Transfer-Encoding would frame it twice."""
    with pytest.raises(ac.InvalidRequestError, match="Transfer-Encoding"):
        ac.post("x", content=b"hello", headers=headers)
    with pytest.raises(ac.InvalidRequestError, match="Transfer-Encoding"):
        ac.post("x", content=lambda: iter([b"hello"]), headers=headers)


@pytest.mark.parametrize(
    ("content", "value", "fragment"),
    [
        (b"12345", "1", "does not match the body's 5 bytes"),
        (b"1", "5", "does not match the body's 1 byte"),
        (None, "999", "does not match the body's 0 bytes"),
        (b"12345", "-5", "one non-negative integer"),
        (b"12345", "5.0", "one non-negative integer"),
        (b"12345", "5e0", "one non-negative integer"),
    ],
)
def test_a_content_length_the_body_contradicts_is_refused(
    content: bytes | None, value: str, fragment: str
) -> None:
    """A wrong Content-Length would cut the body or leave the server waiting: refused."""
    with pytest.raises(ac.InvalidRequestError, match=fragment):
        ac.request("PUT", "x", content=content, headers={"Content-Length": value})


def test_a_content_length_given_twice_is_refused() -> None:
    """Two Content-Length values frame the request two ways."""
    with pytest.raises(ac.InvalidRequestError, match="one non-negative integer"):
        ac.put("x", content=b"12345", headers=[("Content-Length", "5"), ("content-length", "5")])


def test_a_matching_content_length_is_kept() -> None:
    """A Content-Length equal to the body is accepted, built or made directly."""
    assert (
        ac.put("x", content=b"12345", headers={"Content-Length": "5"}).headers["content-length"]
        == "5"
    )
    assert ac.get("x", headers={"Content-Length": "0"}).content == b""
    made = ac.Request("PUT", "x", ac.Headers({"content-length": "2"}), b"ok")
    assert made.content == b"ok"
    with pytest.raises(ac.InvalidRequestError, match="does not match"):
        ac.Request("PUT", "x", ac.Headers({"content-length": "3"}), b"ok")


def test_a_request_made_directly_checks_its_headers_like_the_builders() -> None:
    """Request(...) takes a mapping or pairs of headers, checked as the builders check them."""
    made = ac.Request("GET", "x", {"X-Ok": "yes"})  # type: ignore[arg-type]
    assert made.headers == ac.Headers({"x-ok": "yes"})
    with pytest.raises(ac.InvalidRequestError, match="invalid header name"):
        ac.Request("GET", "x", {"x\ny": "v"})  # type: ignore[arg-type]
    with pytest.raises(ac.InvalidRequestError, match="Transfer-Encoding"):
        ac.Request("POST", "x", [("Transfer-Encoding", "chunked")], b"x")  # type: ignore[arg-type]
