"""Policy: what to do with an answer that scores above the threshold.

The policy sees numbers, never tensors: :meth:`Policy.decide` maps a score and a threshold to an
:class:`Action`, and :meth:`Policy.retry_decoding` says how attempt ``k`` should differ.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal, get_args

from guardrail.errors import InvalidInputError

__all__ = ["Action", "Policy"]

OnHallucination = Literal["flag", "retry", "abstain"]
RetryStrategy = Literal["resample", "feedback"]

DEFAULT_FEEDBACK = (
    "Your previous answer may be wrong. Answer the question again, briefly, and if you are "
    "not sure, say that you do not know."
)


class Action(str, Enum):
    """What happened to an answer."""

    ALLOW = "allow"  # scored at or below the threshold; returned as is
    FLAG = "flag"  # scored above the threshold; returned, marked
    ABSTAIN = "abstain"  # scored above the threshold; replaced by the abstention text


@dataclass(frozen=True)
class Policy:
    """What to do when an answer scores above the threshold.

    Args:
        on_hallucination: ``"flag"`` returns the answer marked; ``"abstain"`` returns
            ``abstain_text``; ``"retry"`` regenerates up to ``max_attempts`` attempts in all,
            keeps the lowest-scoring one and, if it is still above the threshold, applies
            ``after_retries``.
        max_attempts: attempts in all under ``"retry"`` (the first included), >= 2.
        after_retries: ``"flag"`` or ``"abstain"``, for an exhausted retry.
        abstain_text: the answer returned when abstaining.
        retry_strategy: ``"resample"`` samples each retry with ``retry_temperature`` and a
            seed derived from ``seed`` and the attempt number; ``"feedback"`` also adds
            ``feedback`` as a follow-up message. Greedy retries would repeat the answer.
        retry_temperature: sampling temperature of retries, > 0.
        feedback: the follow-up message of the ``"feedback"`` strategy.
        seed: base seed of the retries, so a run is reproducible.
    """

    on_hallucination: OnHallucination = "flag"
    max_attempts: int = 3
    after_retries: Literal["flag", "abstain"] = "flag"
    abstain_text: str = "I don't know."
    retry_strategy: RetryStrategy = "resample"
    retry_temperature: float = 0.8
    feedback: str = DEFAULT_FEEDBACK
    seed: int = 0

    def __post_init__(self) -> None:
        _one_of("on_hallucination", self.on_hallucination, get_args(OnHallucination))
        _one_of("after_retries", self.after_retries, ("flag", "abstain"))
        _one_of("retry_strategy", self.retry_strategy, get_args(RetryStrategy))
        if not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise InvalidInputError(f"`max_attempts` must be an int >= 1, got {self.max_attempts!r}")
        if self.on_hallucination == "retry" and self.max_attempts < 2:
            raise InvalidInputError(f"`max_attempts` must be >= 2 to retry, got {self.max_attempts}")
        if not self.retry_temperature > 0:
            raise InvalidInputError(f"`retry_temperature` must be > 0, got {self.retry_temperature!r}")
        if not isinstance(self.abstain_text, str) or not self.abstain_text.strip():
            raise InvalidInputError(f"`abstain_text` must be a non-empty string, got {self.abstain_text!r}")

    @property
    def attempts(self) -> int:
        """How many attempts a question may get."""
        return self.max_attempts if self.on_hallucination == "retry" else 1

    def decide(self, score: float, threshold: float) -> Action:
        """The action for the final (best) attempt's ``score``."""
        if not score > threshold:
            return Action.ALLOW
        final = self.after_retries if self.on_hallucination == "retry" else self.on_hallucination
        return Action.FLAG if final == "flag" else Action.ABSTAIN

    def retry_decoding(self, attempt: int) -> dict[str, Any]:
        """How attempt ``attempt`` (1-based; 1 is the first answer) differs from greedy."""
        if attempt == 1:
            return {}
        change: dict[str, Any] = {"temperature": self.retry_temperature, "seed": self.seed + attempt}
        if self.retry_strategy == "feedback":
            change["feedback"] = self.feedback
        return change


def _one_of(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise InvalidInputError(f"`{name}` must be one of {allowed}, got {value!r}")
