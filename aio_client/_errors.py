"""The error tree of aio_client.

Every error the library raises on purpose descends from :class:`AioClientError`
and also from the builtin it resembles, so ``except TimeoutError`` and
``except ConnectionError`` keep working in code that does not know us::

    AioClientError                                may_have_reached_server, attempts
    ├── ConfigError (ValueError)                  bad setting at construction
    ├── InvalidRequestError (ValueError)          bad request built by the caller
    ├── DeadlineExceededError (TimeoutError)      the call's budget ran out
    ├── TransportError                            the exchange with the server failed
    │   ├── ConnectError (ConnectionError)        could not connect: never sent
    │   ├── NetworkError (ConnectionError)        connection broke mid-exchange
    │   └── ProtocolError                         the server's answer was malformed
    ├── ResponseTooLargeError                     the body passed max_response_size
    ├── CircuitOpenError                          a breaker refused the call
    ├── FanOutStoppedError                        a fan-out stopped before this call ended
    ├── HTTPStatusError                           raised by Response.raise_for_status()
    └── TokenCancelledError                       CancelToken.raise_if_cancelled()

``may_have_reached_server`` tells a caller whether a non-idempotent request
could have had effects: it is ``False`` only when the library knows the request
never left the process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from ._attempts import AttemptRecord
    from ._cancel import CancelReason
    from ._models import Response

__all__ = [
    "AioClientError",
    "CircuitOpenError",
    "ConfigError",
    "ConnectError",
    "DeadlineExceededError",
    "FanOutStoppedError",
    "HTTPStatusError",
    "InvalidRequestError",
    "NetworkError",
    "ProtocolError",
    "RefusedError",
    "ResponseTooLargeError",
    "TokenCancelledError",
    "TransportError",
]


class AioClientError(Exception):
    """Root of every error aio_client raises on purpose."""

    #: Default for the class; instances may say otherwise.
    may_have_reached_server: bool = True

    def __init__(
        self,
        message: str,
        *,
        may_have_reached_server: bool | None = None,
        attempts: tuple[AttemptRecord, ...] = (),
    ) -> None:
        super().__init__(message)
        if may_have_reached_server is not None:
            self.may_have_reached_server = may_have_reached_server
        #: Every physical attempt of the call, in start order.
        self.attempts = attempts

    def with_attempts(self, attempts: tuple[AttemptRecord, ...]) -> AioClientError:
        """Attach the call's attempt history (returns ``self``)."""
        self.attempts = attempts
        return self


class ConfigError(AioClientError, ValueError):
    """A setting is outside its allowed range; raised at construction."""

    may_have_reached_server = False


class InvalidRequestError(AioClientError, ValueError):
    """The request cannot be built or sent as given (absolute URL, CR/LF in a header...)."""

    may_have_reached_server = False


class DeadlineExceededError(AioClientError, TimeoutError):
    """The call's deadline passed (or too little of it was left to send)."""


class TransportError(AioClientError):
    """The exchange with the server failed below HTTP."""


class ConnectError(TransportError, ConnectionError):
    """No connection could be made; the request was never sent."""

    may_have_reached_server = False


class NetworkError(TransportError, ConnectionError):
    """The connection broke (reset, closed) after the request may have been sent."""


class ProtocolError(TransportError):
    """The server answered with something that is not valid HTTP."""


class ResponseTooLargeError(AioClientError):
    """The response body is larger than the call's size limit; the connection was closed.

    Raised before reading when ``Content-Length`` announces more than the
    limit, and while reading otherwise (counted on the decoded body, so a
    compressed body that unpacks past the limit is stopped too). Not retried
    by the default classifier: the same request would get the same body.
    """

    def __init__(
        self,
        message: str,
        *,
        limit: int,
        attempts: tuple[AttemptRecord, ...] = (),
    ) -> None:
        super().__init__(message, may_have_reached_server=True, attempts=attempts)
        #: The limit (bytes) the body went past.
        self.limit = limit


class RefusedError(AioClientError):
    """A local policy (breaker, bulkhead, rate limiter) refused the call; nothing was sent.

    ``except RefusedError`` catches every such refusal, so a caller can back
    off for :attr:`retry_after` seconds whichever policy said no.
    """

    may_have_reached_server = False

    def __init__(
        self,
        message: str,
        *,
        retry_after: float,
        attempts: tuple[AttemptRecord, ...] = (),
    ) -> None:
        super().__init__(message, may_have_reached_server=False, attempts=attempts)
        #: Seconds until the policy may let a call through; ``0.0`` when it cannot tell.
        self.retry_after = retry_after


class CircuitOpenError(RefusedError):
    """A circuit breaker is open and refused the call without sending it.

    :attr:`retry_after` is the seconds until the breaker lets a probe through.
    """


class FanOutStoppedError(AioClientError):
    """A fan-out stopped early and cancelled this call, or never started it.

    :attr:`reason` names the setting that stopped it: ``"min_success"`` (enough
    calls succeeded) or ``"fail_fast"`` (another call failed).
    ``may_have_reached_server`` is ``False`` only for a call never started.
    """

    def __init__(
        self,
        message: str,
        *,
        reason: Literal["min_success", "fail_fast"],
        may_have_reached_server: bool,
    ) -> None:
        super().__init__(message, may_have_reached_server=may_have_reached_server)
        #: The fan-out setting that stopped the call.
        self.reason = reason


class HTTPStatusError(AioClientError):
    """Raised by :meth:`Response.raise_for_status` for a 4xx or 5xx response."""

    def __init__(self, message: str, *, response: Response) -> None:
        super().__init__(message, may_have_reached_server=True)
        #: The response that carried the error status.
        self.response = response


class TokenCancelledError(AioClientError):
    """Raised by :meth:`CancelToken.raise_if_cancelled` once the token has fired.

    Code that cannot be cancelled from outside (a synchronous handler in a
    worker thread) raises it to stop; :attr:`reason` says why.
    """

    may_have_reached_server = False

    def __init__(self, message: str, *, reason: CancelReason) -> None:
        super().__init__(message, may_have_reached_server=False)
        #: Why the token fired.
        self.reason = reason
