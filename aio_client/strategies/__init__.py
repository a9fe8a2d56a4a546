"""Strategies: how many attempts a call makes, and when."""

from ._attempt_timeout import AttemptTimeout, pass_deadline_through, split_deadline_between_attempts
from ._base import Strategy
from ._budget import RetryBudget
from ._classifier import Classifier, Verdict, default_classifier
from ._delays import Delays, constant_delays, exponential_delays, linear_delays
from ._sequential import SequentialStrategy, sequential_strategy
from ._single import SingleAttemptStrategy, single_attempt_strategy

__all__ = [
    "AttemptTimeout",
    "Classifier",
    "Delays",
    "RetryBudget",
    "SequentialStrategy",
    "SingleAttemptStrategy",
    "Strategy",
    "Verdict",
    "constant_delays",
    "default_classifier",
    "exponential_delays",
    "linear_delays",
    "pass_deadline_through",
    "sequential_strategy",
    "single_attempt_strategy",
    "split_deadline_between_attempts",
]
