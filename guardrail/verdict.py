"""Verdicts: the frozen result of guarding one question."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from guardrail.errors import HallucinationDetected
from guardrail.localize import Span
from guardrail.policy import Action
from guardrail.scores import TokenScores

__all__ = ["Attempt", "Verdict"]


@dataclass(frozen=True, eq=False)
class Attempt:
    """One generated (or given) answer with its evidence.

    Attributes:
        answer: the answer text (no prompt, no EOS).
        tokens: the answer's tokens as text, one per entry of ``scores``.
        scores: per-token raw-logit scores of the whole answer.
        span: the tokens the score pools over.
        score: the calibrated score; higher = more likely hallucinated; ``inf`` for an empty
            answer, which cannot be scored and is never allowed.
        decoding: how it was generated, e.g. ``"greedy"`` or ``"sample(temperature=0.8, seed=2)"``.
        prompt_tokens: how many tokens the prompt fed to the model had.
    """

    answer: str
    tokens: tuple[str, ...]
    scores: TokenScores
    span: Span
    score: float
    decoding: str
    prompt_tokens: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready evidence; a non-finite score becomes ``None``."""
        return {
            "answer": self.answer,
            "score": self.score if math.isfinite(self.score) else None,
            "span": self.span.to_dict(),
            "decoding": self.decoding,
            "prompt_tokens": self.prompt_tokens,
            "tokens": list(self.tokens),
            **self.scores.to_dict(),
        }


@dataclass(frozen=True, eq=False)
class Verdict:
    """The guard's decision about one question.

    Attributes:
        question: the question as asked.
        text: what to show the user: the chosen answer, or the abstention text.
        action: :class:`~guardrail.policy.Action` taken.
        threshold: the calibrated threshold the score was compared with.
        attempts: every attempt, in order (several under a retry policy).
        chosen: index in ``attempts`` of the answer the verdict is about (the lowest score).
        calibration: one-line description of the calibration used.
    """

    question: str
    text: str
    action: Action
    threshold: float
    attempts: tuple[Attempt, ...]
    chosen: int
    calibration: str

    @property
    def best(self) -> Attempt:
        """The chosen attempt."""
        return self.attempts[self.chosen]

    @property
    def answer(self) -> str:
        """The chosen model answer (also when the verdict abstains)."""
        return self.best.answer

    @property
    def score(self) -> float:
        """The chosen answer's score; higher = more likely hallucinated."""
        return self.best.score

    @property
    def span(self) -> Span:
        """The scored span of the chosen answer."""
        return self.best.span

    @property
    def scores(self) -> TokenScores:
        """Per-token scores of the chosen answer."""
        return self.best.scores

    @property
    def hallucinated(self) -> bool:
        """Whether the chosen answer scored above the threshold."""
        return self.action is not Action.ALLOW

    def raise_for_hallucination(self) -> Verdict:
        """Return ``self`` when allowed; raise :class:`HallucinationDetected` otherwise."""
        if self.hallucinated:
            raise HallucinationDetected(self)
        return self

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready verdict with all attempts."""
        return {
            "question": self.question,
            "text": self.text,
            "action": self.action.value,
            "answer": self.answer,
            "score": self.score if math.isfinite(self.score) else None,
            "threshold": self.threshold,
            "hallucinated": self.hallucinated,
            "span": self.span.to_dict(),
            "calibration": self.calibration,
            "chosen": self.chosen,
            "attempts": [a.to_dict() for a in self.attempts],
        }
