"""aio_client: a resilient async HTTP client for service-to-service calls.

Deadlines that propagate across hops, priorities, retries and hedging inside a
shared budget, circuit breaking, and metrics, over aiohttp, httpx or an
in-memory transport.
"""

from ._attempts import AttemptKind, AttemptRecord
from ._body import StreamBody
from ._call import AttemptInfo, Call, current_attempt
from ._cancel import CancelReason, CancelToken, current_token
from ._client import Client, EndpointProvider, RequestContext, StreamContext
from ._deadline import Deadline, ambient, current_deadline, current_priority
from ._errors import (
    AioClientError,
    CircuitOpenError,
    ConfigError,
    ConnectError,
    DeadlineExceededError,
    HTTPStatusError,
    InvalidRequestError,
    NetworkError,
    ProtocolError,
    RefusedError,
    ResponseTooLargeError,
    TransportError,
)
from ._headers import Headers
from ._models import Request, Response, delete, get, head, options, patch, post, put, request
from ._pipeline import Handler, Stage
from ._priority import Priority
from ._stream import ServerSentEvent, StreamedResponse
from .policies import (
    Bulkhead,
    BulkheadFullError,
    CircuitBreaker,
    CircuitBreakerError,
    CircuitState,
    Fallback,
    RateLimitedError,
    RateLimiter,
    Timeout,
    circuit,
    retry,
)
from .strategies import (
    RetryBudget,
    Strategy,
    adaptive_delays,
    constant_delays,
    exponential_delays,
    linear_delays,
    parallel_strategy,
    pass_deadline_through,
    sequential_strategy,
    single_attempt_strategy,
    split_deadline_between_attempts,
)

__all__ = [
    "AioClientError",
    "AttemptInfo",
    "AttemptKind",
    "AttemptRecord",
    "Bulkhead",
    "BulkheadFullError",
    "Call",
    "CancelReason",
    "CancelToken",
    "CircuitBreaker",
    "CircuitBreakerError",
    "CircuitOpenError",
    "CircuitState",
    "Client",
    "ConfigError",
    "ConnectError",
    "Deadline",
    "DeadlineExceededError",
    "EndpointProvider",
    "Fallback",
    "HTTPStatusError",
    "Handler",
    "Headers",
    "InvalidRequestError",
    "NetworkError",
    "Priority",
    "ProtocolError",
    "RateLimitedError",
    "RateLimiter",
    "RefusedError",
    "Request",
    "RequestContext",
    "Response",
    "ResponseTooLargeError",
    "RetryBudget",
    "ServerSentEvent",
    "Stage",
    "Strategy",
    "StreamBody",
    "StreamContext",
    "StreamedResponse",
    "Timeout",
    "TransportError",
    "adaptive_delays",
    "ambient",
    "circuit",
    "constant_delays",
    "current_attempt",
    "current_deadline",
    "current_priority",
    "current_token",
    "delete",
    "exponential_delays",
    "get",
    "head",
    "linear_delays",
    "options",
    "parallel_strategy",
    "pass_deadline_through",
    "patch",
    "post",
    "put",
    "request",
    "retry",
    "sequential_strategy",
    "single_attempt_strategy",
    "split_deadline_between_attempts",
]

__version__ = "0.1.0"
