"""aio_client: a resilient async HTTP client for service-to-service calls.

Deadlines that propagate across hops, priorities, retries and hedging inside a
shared budget, circuit breaking, and metrics, over aiohttp, httpx or an
in-memory transport.
"""

from ._attempts import AttemptKind, AttemptRecord
from ._body import StreamBody
from ._call import AttemptInfo, Call, current_attempt
from ._cancel import CancelReason, CancelToken, current_token
from ._circuit_state import CircuitState
from ._client import Client, EndpointProvider, RequestContext, StreamContext
from ._deadline import Deadline, ambient, current_deadline, current_priority
from ._errors import (
    AioClientError,
    CircuitOpenError,
    ConfigError,
    ConnectError,
    DeadlineExceededError,
    FanOutStoppedError,
    HTTPStatusError,
    InvalidRequestError,
    NetworkError,
    ProtocolError,
    RefusedError,
    ResponseTooLargeError,
    TokenCancelledError,
    TransportError,
)
from ._fan_out import FanOut, fan_out
from ._headers import Headers, HeadersInput
from ._lazy import lazy_names as _lazy_names
from ._models import (
    QueryInput,
    Request,
    Response,
    delete,
    get,
    head,
    options,
    patch,
    post,
    put,
    request,
)
from ._pipeline import Handler, Stage
from ._priority import Priority
from ._redaction import redact_headers
from ._stream import ServerSentEvent, StreamedResponse
from .policies._breaker import CircuitBreaker
from .policies._bulkhead import Bulkhead
from .policies._errors import BulkheadFullError, RateLimitedError
from .policies._fallback import Fallback
from .policies._rate_limit import RateLimiter
from .policies._retry import retry
from .policies._timeout import Timeout
from .strategies._adaptive import adaptive_delays
from .strategies._attempt_timeout import pass_deadline_through, split_deadline_between_attempts
from .strategies._base import Strategy
from .strategies._budget import RetryBudget
from .strategies._delays import constant_delays, exponential_delays, linear_delays
from .strategies._parallel import parallel_strategy
from .strategies._sequential import sequential_strategy
from .strategies._single import single_attempt_strategy

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
    "CircuitOpenError",
    "CircuitState",
    "Client",
    "ConfigError",
    "ConnectError",
    "Deadline",
    "DeadlineExceededError",
    "EndpointProvider",
    "Fallback",
    "FanOut",
    "FanOutStoppedError",
    "HTTPStatusError",
    "Handler",
    "Headers",
    "HeadersInput",
    "InvalidRequestError",
    "NetworkError",
    "Priority",
    "ProtocolError",
    "QueryInput",
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
    "TokenCancelledError",
    "TransportError",
    "adaptive_delays",
    "ambient",
    "constant_delays",
    "current_attempt",
    "current_deadline",
    "current_priority",
    "current_token",
    "delete",
    "exponential_delays",
    "fan_out",
    "get",
    "head",
    "linear_delays",
    "options",
    "parallel_strategy",
    "pass_deadline_through",
    "patch",
    "post",
    "put",
    "redact_headers",
    "request",
    "retry",
    "sequential_strategy",
    "single_attempt_strategy",
    "split_deadline_between_attempts",
]

__version__ = "0.1.0"

# aiocircuitbreaker's names have their one home in aio_client.compat.aiocircuitbreaker
# (an exact drop-in); these two still resolve here for code that used them:
# ``circuit`` makes an aio_client CircuitBreaker from aiocircuitbreaker's
# arguments, ``CircuitBreakerError`` is CircuitOpenError.
_ELSEWHERE = {
    "circuit": ("aio_client.policies._circuit", "circuit"),
    "CircuitBreakerError": ("aio_client._errors", "CircuitOpenError"),
}


__getattr__ = _lazy_names(__name__, _ELSEWHERE)
