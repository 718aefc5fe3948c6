"""Verdicts: the frozen result of guarding one question, and its evidence as hosts carry it.

A :class:`Verdict` holds every attempt with its per-token scores. Hosts (LangChain messages,
LlamaIndex responses) carry it as a JSON-ready dict under :data:`METADATA_KEY`; reading it back
gives an :class:`Evidence`. The dict is sealed: an HMAC, with a key drawn once per process, over
the answer, the text, the action, the score and the threshold, so that metadata a later step
changed (rewritten text, a forged "allow") or that came from another process reads back as
unsealed and is never trusted. The seal detects mistakes and foreign metadata; it is not a
security boundary against code running in the same process.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from guardrail.errors import HallucinationDetected, InvalidInputError, UnscoredResponseError
from guardrail.localize import Span
from guardrail.policy import Action
from guardrail.scores import TokenScores
from guardrail.validation import at_or_below, finite_or_none

__all__ = ["METADATA_KEY", "Attempt", "Evidence", "Verdict"]

METADATA_KEY = "spillguard"
"""Key of the evidence in every host's metadata (LangChain ``response_metadata``, LlamaIndex
``additional_kwargs`` and ``Response.metadata``)."""

_SEAL_KEY = secrets.token_bytes(32)
_SEALED_FIELDS = ("answer", "text", "action", "score", "threshold")


def _seal(data: Mapping[str, Any]) -> str:
    payload = json.dumps([data.get(k) for k in _SEALED_FIELDS], ensure_ascii=False, allow_nan=True)
    return hmac.new(_SEAL_KEY, payload.encode("utf-8"), hashlib.sha256).hexdigest()


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
        notes: caveats about how far the score can be trusted (e.g. a given answer too short
            to judge); empty when there are none.
    """

    answer: str
    tokens: tuple[str, ...]
    scores: TokenScores
    span: Span
    score: float
    decoding: str
    prompt_tokens: int
    notes: tuple[str, ...] = ()

    def to_dict(self, *, per_token: bool = True) -> dict[str, Any]:
        """JSON-ready evidence; a non-finite score becomes ``None``; per-token arrays on request."""
        out: dict[str, Any] = {
            "answer": self.answer,
            "score": finite_or_none(self.score),
            "span": self.span.to_dict(),
            "decoding": self.decoding,
            "prompt_tokens": self.prompt_tokens,
            "answer_tokens": len(self.tokens),
            "notes": list(self.notes),
        }
        if per_token:
            out.update(tokens=list(self.tokens), **self.scores.to_dict())
        return out


@dataclass(frozen=True, eq=False)
class Verdict:
    """The guard's decision about one question.

    Attributes:
        question: the question as asked.
        text: what to show the user: the chosen answer, or the abstention text.
        action: :class:`~guardrail.policy.Action` taken.
        threshold: the calibrated threshold the score was compared with.
        attempts: every attempt, in order (several under a retry policy).
        chosen: index in ``attempts`` of the answer the verdict is about.
        calibration: one-line description of the calibration used.
    """

    question: str
    text: str
    action: Action
    threshold: float
    attempts: tuple[Attempt, ...]
    chosen: int
    calibration: str

    def __post_init__(self) -> None:
        if not self.attempts or not 0 <= self.chosen < len(self.attempts):
            raise InvalidInputError(f"`chosen`={self.chosen} must index one of the {len(self.attempts)} attempts")
        if self.action is Action.ALLOW and not at_or_below(self.best.score, self.threshold):
            raise InvalidInputError(
                f"a verdict cannot allow an answer whose score {self.best.score!r} is not at or below the threshold "
                f"{self.threshold!r} (NaN and inf never pass)"
            )

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
    def notes(self) -> tuple[str, ...]:
        """Caveats about the chosen answer's score (see :attr:`Attempt.notes`)."""
        return self.best.notes

    @property
    def hallucinated(self) -> bool:
        """Whether the chosen answer scored above the threshold (or could not be scored)."""
        return self.action is not Action.ALLOW

    @property
    def evidence(self) -> Evidence:
        """This verdict as hosts carry it (without per-token arrays)."""
        return Evidence.from_dict(self.to_dict(per_token=False))

    def raise_for_hallucination(self) -> Verdict:
        """Return ``self`` when allowed; raise :class:`HallucinationDetected` otherwise."""
        if self.hallucinated:
            raise HallucinationDetected(self)
        return self

    def to_dict(self, *, per_token: bool = True) -> dict[str, Any]:
        """JSON-ready and sealed: the decision, the chosen answer's span, every attempt.

        Args:
            per_token: include each attempt's tokens and per-token metric arrays (about 200
                bytes per token); without them the dict stays small enough for traces and
                stored chat history.
        """
        out: dict[str, Any] = {
            "question": self.question,
            "text": self.text,
            "action": self.action.value,
            "answer": self.answer,
            "score": finite_or_none(self.score),
            "threshold": self.threshold,
            "hallucinated": self.hallucinated,
            "span": self.span.to_dict(),
            "notes": list(self.notes),
            "calibration": self.calibration,
            "chosen": self.chosen,
            "attempts": [a.to_dict(per_token=per_token) for a in self.attempts],
        }
        out["seal"] = _seal(out)
        return out


@dataclass(frozen=True)
class Evidence:
    """A verdict read back from a host's metadata (see :meth:`Verdict.to_dict`).

    Attributes:
        answer: the model's answer (also when the text shown is an abstention).
        text: the text the verdict produced (the answer or the abstention).
        action: the action taken.
        score: the answer's score, higher = more likely hallucinated; ``inf`` if unscorable.
        threshold: the calibrated threshold.
        span_text: the scored span of the answer.
        sealed: whether the seal matches: produced by a guard in this process and unchanged.
        data: the whole metadata dict.
    """

    answer: str
    text: str
    action: Action
    score: float
    threshold: float
    span_text: str
    sealed: bool
    data: Mapping[str, Any]

    @property
    def hallucinated(self) -> bool:
        """Whether the answer was not allowed (an unscorable answer never is)."""
        return self.action is not Action.ALLOW or not at_or_below(self.score, self.threshold)

    def flagged_by(self, threshold: float | None = None) -> bool:
        """Whether the score is above ``threshold`` (default: the calibrated threshold)."""
        return not at_or_below(self.score, self.threshold if threshold is None else threshold)

    def check(self, text: str, *, what: str = "the answer") -> Evidence:
        """``self`` when sealed and about exactly ``text``; else :class:`UnscoredResponseError`."""
        if not self.sealed:
            raise UnscoredResponseError(
                what, "its spillguard metadata was changed after scoring, forged, or produced in another process"
            )
        if text != self.text:
            raise UnscoredResponseError(
                what,
                f"its text {_short(text)} is not the text that was scored ({_short(self.text)}); "
                "a later step changed it (put output parsers and rewrites after the guard)",
            )
        return self

    def updated(self, **changes: Any) -> dict[str, Any]:
        """The metadata dict with ``changes`` applied and sealed again (only from sealed evidence)."""
        if not self.sealed:
            raise UnscoredResponseError("the answer", "its spillguard metadata is not sealed, so it cannot be updated")
        out = {**self.data, **changes}
        out["seal"] = _seal(out)
        return out

    @classmethod
    def from_dict(cls, data: object) -> Evidence:
        """Parse and check metadata; anything malformed is an :class:`UnscoredResponseError`."""
        if not isinstance(data, Mapping):
            raise UnscoredResponseError("the answer", f"its spillguard metadata is not a mapping: {data!r}")
        try:
            raw_score, raw_threshold = data["score"], data["threshold"]
            if not all(_plain_number(x) for x in (raw_score, raw_threshold)) or raw_threshold is None:
                raise TypeError(f"score {raw_score!r} and threshold {raw_threshold!r} must be JSON numbers")
            score = math.inf if raw_score is None else float(raw_score)
            threshold = float(raw_threshold)
            action = Action(data["action"])
            answer, text = data["answer"], data["text"]
            span_text = data["span"]["text"]
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise UnscoredResponseError("the answer", f"its spillguard metadata is malformed ({exc!r})") from None
        if not (isinstance(answer, str) and isinstance(text, str) and isinstance(span_text, str)):
            raise UnscoredResponseError("the answer", "its spillguard metadata holds non-text answer fields")
        if math.isnan(score) or not math.isfinite(threshold):
            raise UnscoredResponseError("the answer", f"its score {score!r} or threshold {threshold!r} is not usable")
        seal = data.get("seal")
        sealed = isinstance(seal, str) and hmac.compare_digest(seal, _seal(data))
        return cls(answer, text, action, score, threshold, span_text, sealed, data)


def _plain_number(value: object) -> bool:
    """An ``int`` or ``float`` (not a ``bool``), or ``None``: what a verdict writes and JSON reads back."""
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def _short(text: str) -> str:
    return repr(text if len(text) <= 60 else text[:57] + "...")
