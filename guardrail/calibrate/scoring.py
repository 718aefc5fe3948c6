"""Scorers: one pooled metric over one localizer's span, oriented, and the records they score.

:func:`locate` puts every record's answer through each localizer once; :class:`Scored` then
pools any metric over those spans (cached), orients it, or applies a whole calibration.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from guardrail.calibrate.runs import Record
from guardrail.calibration import Calibration
from guardrail.energy import METRICS, POOLINGS
from guardrail.errors import InvalidInputError
from guardrail.grounding import prompt_sources, span_grounding
from guardrail.localize import LOCALIZERS, Localizer, Span, make_localizer, token_offsets

__all__ = ["BASELINES", "Scored", "Scorer", "all_scorers", "default_direction", "locate", "standard_localizers"]


def default_direction(metric: str, pooling: str) -> int:
    """The a-priori orientation (+1: higher pooled value = hallucinated).

    Lower token log-probability means less confident; higher entropy and energy mean less
    confident, except that min-pooled energies follow the paper's Table 1, where a strongly
    negative minimum flags the answer.
    """
    if metric == "logprob":
        return -1
    if metric == "entropy":
        return 1
    return -1 if pooling == "min" else 1


@dataclass(frozen=True)
class Scorer:
    """One pooled metric over one localizer's span, with an orientation."""

    metric: str
    pooling: str
    localizer: str
    direction: int = 0  # 0: default_direction

    @property
    def sign(self) -> int:
        """The orientation actually used."""
        return self.direction or default_direction(self.metric, self.pooling)

    @property
    def name(self) -> str:
        """E.g. ``-spilled_energy[min]@heuristic``."""
        return f"{'-' if self.sign < 0 else '+'}{self.metric}[{self.pooling}]@{self.localizer}"


BASELINES: tuple[tuple[str, Scorer], ...] = (
    ("mean token log-prob", Scorer("logprob", "mean", "whole")),
    ("min token log-prob", Scorer("logprob", "min", "whole")),
    ("logit (min token logit)", Scorer("logit_energy", "max", "whole")),
    ("mean entropy", Scorer("entropy", "mean", "whole")),
    ("max entropy", Scorer("entropy", "max", "whole")),
    ("marginal energy min", Scorer("marginal_energy", "min", "heuristic")),
    ("−ΔE min, heuristic span (the paper's)", Scorer("spilled_energy", "min", "heuristic")),
)


@dataclass
class Scored:
    """Records with their spans per localizer and a cache of pooled values."""

    records: list[Record]
    spans: dict[str, list[Span]]
    offsets: list[list[tuple[int, int]]] = field(default_factory=list)
    _pooled: dict[tuple[str, str, str], np.ndarray] = field(default_factory=dict)

    @property
    def labels(self) -> np.ndarray:
        """True = hallucinated (wrong answer)."""
        return np.array([not r.correct for r in self.records], dtype=bool)

    def pooled(self, metric: str, pooling: str, localizer: str) -> np.ndarray:
        """Raw pooled values (no orientation), one per record."""
        key = (metric, pooling, localizer)
        if key not in self._pooled:
            spans = self.spans[localizer]
            self._pooled[key] = np.array(
                [r.scores.pooled(metric, pooling, s.indices) for r, s in zip(self.records, spans, strict=True)]
            )
        return self._pooled[key]

    @property
    def grounded_prompts(self) -> bool:
        """Whether every record's prompt carries passages (a RAG task)."""
        return all(r.item.context is not None for r in self.records)

    def sources(self) -> list[str]:
        """Each record's prompt text, what a span is looked up in (:mod:`guardrail.grounding`)."""
        return [prompt_sources(r.item.prompt()) for r in self.records]

    def ungrounded(self, localizer: str) -> np.ndarray:
        """1.0 where ``localizer``'s span is not in the record's prompt, else 0.0 (also for a
        whole-answer span, which the runtime does not check); one per record."""
        key = ("ungrounded", "max", localizer)
        if key not in self._pooled:
            pairs = zip(self.spans[localizer], self.sources(), strict=True)
            self._pooled[key] = np.array([span_grounding(s, p)[0] for s, p in pairs])
        return self._pooled[key]

    def values(self, scorer: Scorer) -> np.ndarray:
        """Oriented scores (higher = more likely hallucinated)."""
        return scorer.sign * self.pooled(scorer.metric, scorer.pooling, scorer.localizer)

    def calibrated(self, calibration: Calibration) -> np.ndarray:
        """Scores under a calibration (its localizer must have been located)."""
        spans = self.spans[calibration.localizer]
        sources = self.sources() if calibration.grounded else [None] * len(spans)
        return np.array(
            [calibration.score(r.scores, s, p) for r, s, p in zip(self.records, spans, sources, strict=True)]
        )


def locate(
    records: Iterable[Record],
    localizers: dict[str, Localizer],
    decode: Callable[[list[int]], str],
) -> Scored:
    """Spans of every non-empty record under each localizer (empty answers are left out)."""
    kept = [r for r in records if len(r.scores) and r.text.strip()]
    if not kept:
        raise InvalidInputError("every answer is empty: nothing to score")
    offsets = [token_offsets(decode, r.scores.token_ids.tolist()) for r in kept]
    spans = {
        name: [loc.locate(r.item.question, text, off) for r, (text, off) in zip(kept, offsets, strict=True)]
        for name, loc in localizers.items()
    }
    return Scored(kept, spans, [off for _, off in offsets])


def standard_localizers(
    guard: Any | None = None, names: Sequence[str] = ("heuristic", "whole")
) -> dict[str, Localizer]:
    """Localizers by name; ``"llm"`` needs the guard (one short generation per answer)."""
    out: dict[str, Localizer] = {}
    for name in names:
        if name not in LOCALIZERS or (name == "llm" and guard is None):
            raise InvalidInputError(f"`localizers` must name heuristic, whole or llm (with a model), got {name!r}")
        out[name] = guard.make_localizer(name) if guard is not None else make_localizer(name)
    return out


def all_scorers(localizers: Iterable[str]) -> list[Scorer]:
    """Every metric × pooling × localizer, each in its default orientation."""
    return [Scorer(m, p, loc) for loc in localizers for m in METRICS for p in POOLINGS]
