"""The one attempt loop: generate, judge, retry as the policy says, keep one answer, decide.

The guard, the LangChain runnable and the LlamaIndex query engine all run this loop; they differ
only in how one attempt is made. An attempt is a callable ``RetryStep -> Judged``; the loop
asks the :class:`~guardrail.Policy` for each step, stops at the first attempt at or below its
threshold (or when the policy's attempts are spent), keeps that attempt or else the
lowest-scoring one, and decides the action and the text to return.

Like httpx's clients, the sync and async drivers differ only where they await::

    decision = run_attempts(policy, lambda step: judge(chain.invoke(x, config_for(step))))
    decision = await arun_attempts(policy, attempt_async)

:class:`AttemptLoop` is the state machine underneath, for callers that interleave attempts (the
guard retries a whole batch in lock-step; streams yield chunks in between).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from guardrail.errors import InvalidInputError
from guardrail.policy import Action, Policy, RetryStep
from guardrail.validation import at_or_below, check_int

__all__ = ["AttemptLoop", "Decision", "Judged", "arun_attempts", "run_attempts"]

T = TypeVar("T")


@dataclass(frozen=True)
class Judged(Generic[T]):
    """One attempt's result and what the loop needs to know about it.

    Attributes:
        result: whatever the attempt produced (a core attempt, a LangChain message, a response).
        answer: the answer text that was scored.
        score: its score, higher = more likely hallucinated; NaN and ``inf`` never pass.
        threshold: the threshold it is compared with.
        step: how it was generated.
    """

    result: T
    answer: str
    score: float
    threshold: float
    step: RetryStep

    @property
    def passed(self) -> bool:
        """At or below the threshold (a non-finite score or threshold never passes)."""
        return at_or_below(self.score, self.threshold)


@dataclass(frozen=True)
class Decision(Generic[T]):
    """The outcome of an attempt loop.

    Attributes:
        attempts: every attempt, in order.
        chosen: index of the kept attempt: the first that passed, else the lowest score.
        action: :class:`~guardrail.Action` for the kept attempt under the policy.
        text: what to show: the kept answer, or the policy's abstention text.
    """

    attempts: tuple[Judged[T], ...]
    chosen: int
    action: Action
    text: str

    @property
    def best(self) -> Judged[T]:
        """The kept attempt."""
        return self.attempts[self.chosen]


class AttemptLoop(Generic[T]):
    """The attempt loop as a state machine: ``next_step`` / ``record`` until done, then ``decide``.

    Args:
        policy: how many attempts, how each differs, what to do with the kept one.
        first: number of the first attempt (a host's own retry, e.g. LangChain's
            ``with_retry``, starts this loop again at attempt N so each run resamples).
    """

    def __init__(self, policy: Policy, *, first: int = 1) -> None:
        if not isinstance(policy, Policy):
            raise InvalidInputError(f"`policy` must be a guardrail.Policy, got {type(policy).__name__}: {policy!r}")
        self.policy = policy
        self.first = check_int("first", first, minimum=1)
        self.attempts: list[Judged[T]] = []

    @property
    def done(self) -> bool:
        """Whether the last attempt passed or the policy's attempts are spent."""
        if not self.attempts:
            return False
        return self.attempts[-1].passed or len(self.attempts) >= self.policy.attempts

    def next_step(self) -> RetryStep | None:
        """The next attempt's step, or ``None`` when the loop is done."""
        if self.done:
            return None
        previous = self.attempts[-1].answer if self.attempts else None
        return self.policy.step(self.first + len(self.attempts), previous)

    def record(self, judged: Judged[T]) -> None:
        """Add the result of the step last handed out."""
        if self.done:
            raise InvalidInputError("the attempt loop is done: no step was handed out for this attempt")
        self.attempts.append(judged)

    def decide(self) -> Decision[T]:
        """Keep the first passing attempt, else the lowest score; apply the policy."""
        if not self.attempts:
            raise InvalidInputError("no attempt was recorded: nothing to decide")
        passing = [i for i, a in enumerate(self.attempts) if a.passed]
        chosen = passing[0] if passing else min(range(len(self.attempts)), key=lambda i: _order(self.attempts[i]))
        best = self.attempts[chosen]
        action = self.policy.decide(best.score, best.threshold)
        text = self.policy.abstain_text if action is Action.ABSTAIN else best.answer
        return Decision(tuple(self.attempts), chosen, action, text)


def _order(judged: Judged[Any]) -> float:
    """Sort key of a failed attempt: its score, NaN last."""
    return judged.score if judged.score == judged.score else float("inf")


def run_attempts(policy: Policy, attempt: Callable[[RetryStep], Judged[T]], *, first: int = 1) -> Decision[T]:
    """Run the attempt loop with a blocking ``attempt``."""
    loop: AttemptLoop[T] = AttemptLoop(policy, first=first)
    while (step := loop.next_step()) is not None:
        loop.record(attempt(step))
    return loop.decide()


async def arun_attempts(
    policy: Policy, attempt: Callable[[RetryStep], Awaitable[Judged[T]]], *, first: int = 1
) -> Decision[T]:
    """Run the attempt loop with an async ``attempt``."""
    loop: AttemptLoop[T] = AttemptLoop(policy, first=first)
    while (step := loop.next_step()) is not None:
        loop.record(await attempt(step))
    return loop.decide()
