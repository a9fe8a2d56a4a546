"""Strategies: how many attempts a call makes, and when."""

from .._classifier import Classifier, Verdict, default_classifier
from ._adaptive import AdaptiveDelays, adaptive_delays
from ._attempt_timeout import AttemptTimeout, pass_deadline_through, split_deadline_between_attempts
from ._base import Strategy
from ._budget import RetryBudget
from ._delays import Delays, constant_delays, exponential_delays, linear_delays
from ._parallel import HedgeDelays, ParallelStrategy, parallel_strategy
from ._sequential import SequentialStrategy, sequential_strategy
from ._single import SingleAttemptStrategy, single_attempt_strategy

__all__ = [
    "AdaptiveDelays",
    "AttemptTimeout",
    "Classifier",
    "Delays",
    "HedgeDelays",
    "ParallelStrategy",
    "RetryBudget",
    "SequentialStrategy",
    "SingleAttemptStrategy",
    "Strategy",
    "Verdict",
    "adaptive_delays",
    "constant_delays",
    "default_classifier",
    "exponential_delays",
    "linear_delays",
    "parallel_strategy",
    "pass_deadline_through",
    "sequential_strategy",
    "single_attempt_strategy",
    "split_deadline_between_attempts",
]
