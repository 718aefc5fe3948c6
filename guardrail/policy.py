"""Policy: what to do with an answer that scores above the threshold, and how retries differ.

The policy sees numbers, never tensors. :meth:`Policy.decide` maps a score and a threshold to an
:class:`Action`; :meth:`Policy.step` says how attempt ``k`` is generated, as a typed
:class:`RetryStep` that knows its decoding, its feedback turn and its label. The loop that runs
attempts lives in :mod:`guardrail.attempts`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal, get_args

from guardrail.errors import InvalidInputError
from guardrail.validation import at_or_below, check_finite, check_int, check_text

__all__ = ["MAX_ATTEMPTS", "Action", "Policy", "RetryStep", "as_policy"]

OnHallucination = Literal["flag", "retry", "abstain"]
RetryStrategy = Literal["resample", "feedback"]

MAX_ATTEMPTS = 5
"""Most attempts a retry policy may make. Each retry is one more chance for a wrong answer to
score below the threshold by luck (with a per-attempt chance ``p`` of that, ``k`` attempts give
``1 - (1 - p)^k``), so retries are bounded rather than run until something passes."""

MAX_SEED = 2**63 - 1 - MAX_ATTEMPTS

DEFAULT_FEEDBACK = (
    "Your previous answer may be wrong. Answer the question again, briefly, and if you are "
    "not sure, say that you do not know."
)


class Action(str, Enum):
    """What happened to an answer."""

    ALLOW = "allow"  # scored at or below the threshold; returned as is
    FLAG = "flag"  # scored above the threshold (or could not be scored); returned, marked
    ABSTAIN = "abstain"  # scored above the threshold; replaced by the abstention text


@dataclass(frozen=True)
class RetryStep:
    """How one attempt at an answer is generated.

    Attempt 1 uses the caller's own decoding (greedy unless asked otherwise). A retry samples
    from the raw distribution at ``temperature`` with ``seed`` (top-k and top-p off), and under
    the ``"feedback"`` strategy continues the conversation: the previous answer as an assistant
    turn, then ``feedback`` as a user turn (for a raw prompt, the same two turns as text).

    Attributes:
        attempt: 1-based attempt number.
        temperature: sampling temperature of a retry; ``None`` for the first attempt.
        seed: torch seed of a retry.
        feedback: the follow-up message, or ``None``.
        previous_answer: the answer the feedback follows, or ``None``.
    """

    attempt: int = 1
    temperature: float | None = None
    seed: int | None = None
    feedback: str | None = None
    previous_answer: str | None = None

    def __post_init__(self) -> None:
        check_int("attempt", self.attempt, minimum=1)
        if self.temperature is not None:
            check_finite("temperature", self.temperature, positive=True)
        if self.seed is not None:
            check_int("seed", self.seed, minimum=0, maximum=2**63 - 1)
        if (self.feedback is None) != (self.previous_answer is None):
            raise InvalidInputError(
                f"`feedback` and `previous_answer` go together, got {self.feedback!r} and {self.previous_answer!r}"
            )

    @property
    def is_retry(self) -> bool:
        """Whether this attempt changes the caller's decoding."""
        return self.temperature is not None

    def generate_kwargs(self) -> dict[str, Any]:
        """``generate`` keyword arguments of this attempt (empty for the first)."""
        if self.temperature is None:
            return {}
        return {"do_sample": True, "temperature": self.temperature, "top_k": 0, "top_p": 1.0}

    def follow_up(self) -> tuple[dict[str, str], ...]:
        """The feedback turns appended after the prompt: ``()`` or (assistant, user)."""
        if self.feedback is None or self.previous_answer is None:
            return ()
        return ({"role": "assistant", "content": self.previous_answer}, {"role": "user", "content": self.feedback})

    def label(self, generation: Mapping[str, Any] | None = None) -> str:
        """E.g. ``"greedy"`` or ``"sample(temperature=0.8, seed=3) + feedback"``."""
        if self.temperature is None:
            options = generation or {}
            return f"sample(temperature={options.get('temperature', 1.0)})" if options.get("do_sample") else "greedy"
        label = f"sample(temperature={self.temperature}, seed={self.seed})"
        return label + " + feedback" if self.feedback is not None else label

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (to pass a step through a host's run metadata)."""
        return {
            "attempt": self.attempt,
            "temperature": self.temperature,
            "seed": self.seed,
            "feedback": self.feedback,
            "previous_answer": self.previous_answer,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RetryStep:
        """Inverse of :meth:`to_dict`; validates every field."""
        known = {"attempt", "temperature", "seed", "feedback", "previous_answer"}
        if not isinstance(data, Mapping) or set(data) - known:
            raise InvalidInputError(f"a retry step must be a mapping with keys {sorted(known)}, got {data!r}")
        return cls(**dict(data))


@dataclass(frozen=True)
class Policy:
    """What to do when an answer scores above the threshold.

    Args:
        on_hallucination: ``"flag"`` returns the answer marked; ``"abstain"`` returns
            ``abstain_text``; ``"retry"`` regenerates, up to ``max_attempts`` attempts in all,
            stops at the first attempt at or below the threshold, otherwise keeps the
            lowest-scoring one and applies ``after_retries``.
        max_attempts: attempts in all under ``"retry"`` (the first included), in
            ``[2, MAX_ATTEMPTS]``.
        after_retries: ``"flag"`` or ``"abstain"``, for an exhausted retry.
        abstain_text: the answer returned when abstaining.
        retry_strategy: ``"resample"`` samples each retry with ``retry_temperature`` and seed
            ``seed + attempt``; ``"feedback"`` also adds ``feedback`` as a follow-up turn after
            the previous answer. Greedy retries would repeat the answer.
        retry_temperature: sampling temperature of retries, in ``(0, 10]``.
        feedback: the follow-up message of the ``"feedback"`` strategy.
        seed: base seed of the retries (so a run is reproducible), in ``[0, 2**63 - 6]``.
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
        check_int("max_attempts", self.max_attempts, minimum=1, maximum=MAX_ATTEMPTS)
        if self.on_hallucination == "retry" and self.max_attempts < 2:
            raise InvalidInputError(f"`max_attempts` must be >= 2 to retry, got {self.max_attempts}")
        if check_finite("retry_temperature", self.retry_temperature, positive=True) > 10:
            raise InvalidInputError(f"`retry_temperature` must be in (0, 10], got {self.retry_temperature!r}")
        check_text("abstain_text", self.abstain_text)
        check_text("feedback", self.feedback)
        check_int("seed", self.seed, minimum=0, maximum=MAX_SEED)

    @property
    def attempts(self) -> int:
        """How many attempts a question may get."""
        return self.max_attempts if self.on_hallucination == "retry" else 1

    @property
    def streams_live(self) -> bool:
        """Whether a stream under this policy can reach the reader as it is generated: one
        attempt whose text is never replaced (``"flag"``). Under ``"retry"`` and ``"abstain"``
        the answer is judged first and the decided text streams in one piece."""
        return self.attempts == 1 and self.on_hallucination == "flag"

    def decide(self, score: float, threshold: float) -> Action:
        """The action for the final (chosen) attempt's ``score``.

        Only a finite score at or below a finite threshold is allowed: NaN, ``±inf`` scores and
        non-finite thresholds always flag (or abstain).
        """
        if at_or_below(score, threshold):
            return Action.ALLOW
        final = self.after_retries if self.on_hallucination == "retry" else self.on_hallucination
        return Action.FLAG if final == "flag" else Action.ABSTAIN

    def step(self, attempt: int, previous_answer: str | None = None) -> RetryStep:
        """How attempt ``attempt`` (1-based; 1 is the first answer) is generated."""
        check_int("attempt", attempt, minimum=1)
        if attempt == 1:
            return RetryStep()
        feedback = self.feedback if self.retry_strategy == "feedback" and previous_answer else None
        return RetryStep(
            attempt=attempt,
            temperature=self.retry_temperature,
            seed=self.seed + attempt,
            feedback=feedback,
            previous_answer=previous_answer if feedback else None,
        )


def as_policy(value: object, *, abstain_text: str | None = None) -> Policy:
    """A :class:`Policy` from a policy, ``None`` (flag) or an ``on_hallucination`` name.

    Args:
        value: a :class:`Policy`, ``None``, ``"flag"``, ``"retry"`` or ``"abstain"``.
        abstain_text: the abstention text of a policy built here (default: the policy's own).
    """
    if isinstance(value, Policy):
        return value
    if value is None or isinstance(value, str):
        _one_of("policy", value or "flag", get_args(OnHallucination))
        extra = {} if abstain_text is None else {"abstain_text": abstain_text}
        return Policy(on_hallucination=value or "flag", **extra)  # type: ignore[arg-type]
    raise InvalidInputError(
        f"`policy` must be a guardrail.Policy or one of {get_args(OnHallucination)}, "
        f"got {type(value).__name__}: {value!r}"
    )


def _one_of(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise InvalidInputError(f"`{name}` must be one of {allowed}, got {value!r}")
