"""Strategies: how many attempts a call makes, and when.

The strategies, delays and the retry budget have their home in ``aio_client``
(``aio_client.parallel_strategy(...)``); this package's ``__all__`` lists the
names for writing your own strategy, delays or classifier.
"""

from .._classifier import Classifier, Verdict, default_classifier
from .._lazy import lazy_names as _lazy_names
from ._attempt_timeout import AttemptTimeout
from ._delays import Delays
from ._parallel import HedgeDelays

__all__ = [
    "AttemptTimeout",
    "Classifier",
    "Delays",
    "HedgeDelays",
    "Verdict",
    "default_classifier",
]

# Names whose one home is ``aio_client``, still found here by code that imports
# them from here (name -> module, attribute).
_ELSEWHERE = {
    "AdaptiveDelays": ("._adaptive", "AdaptiveDelays"),
    "ParallelStrategy": ("._parallel", "ParallelStrategy"),
    "RetryBudget": ("._budget", "RetryBudget"),
    "SequentialStrategy": ("._sequential", "SequentialStrategy"),
    "SingleAttemptStrategy": ("._single", "SingleAttemptStrategy"),
    "Strategy": ("._base", "Strategy"),
    "adaptive_delays": ("._adaptive", "adaptive_delays"),
    "constant_delays": ("._delays", "constant_delays"),
    "exponential_delays": ("._delays", "exponential_delays"),
    "linear_delays": ("._delays", "linear_delays"),
    "parallel_strategy": ("._parallel", "parallel_strategy"),
    "pass_deadline_through": ("._attempt_timeout", "pass_deadline_through"),
    "sequential_strategy": ("._sequential", "sequential_strategy"),
    "single_attempt_strategy": ("._single", "single_attempt_strategy"),
    "split_deadline_between_attempts": ("._attempt_timeout", "split_deadline_between_attempts"),
}


__getattr__ = _lazy_names(__name__, _ELSEWHERE)
