"""Feature columns for detector selection: every pooled metric the runtime can compute, and
single-pass normalisations beyond the paper that it cannot compute yet.

A column is one number per record. Runtime columns (``metric[pooling]@localizer``) are exactly
what a :class:`~guardrail.Calibration` feature computes, so a detector built from them can be
shipped. The others are measured here to see whether they are worth a core change:

- ``length``: the number of span tokens;
- ``word`` (first sub-word only): the metric pooled over the span tokens that start a word, so
  continuations such as "ília" in "Brasília" are left out;
- ``inner``: the span without its first token (the first answer token carries the position's
  energy);
- ``after``: the metric of the first token after the span (the token the span hands over to);
- ``z``: the span's pooled metric as a z-score against the same metric over the whole answer,
  i.e. relative to the answer's own energy profile.

The grounding column ``ungrounded[max]@localizer`` (:mod:`guardrail.grounding`: 1 when the span's
words are not in the prompt) is a runtime column too; it is offered only on tasks whose prompts
carry passages (:func:`grounding_column`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from guardrail.calibrate.scoring import Scored
from guardrail.energy import METRICS, POOLINGS, pool
from guardrail.errors import InvalidInputError
from guardrail.grounding import GROUNDING_METRICS, GROUNDING_POOLING

__all__ = ["ENERGY_METRICS", "RESEARCH_POOLINGS", "Column", "grounding_column", "runtime_columns"]

ENERGY_METRICS = frozenset({"spilled_energy", "scaled_spilled_energy", "marginal_energy", "logit_energy"})
RESEARCH_POOLINGS = ("length", "word-min", "word-mean", "inner-min", "inner-mean", "after", "z-min", "z-mean")


@dataclass(frozen=True)
class Column:
    """One number per record: ``metric`` pooled by ``pooling`` over ``localizer``'s span."""

    metric: str
    pooling: str
    localizer: str

    @property
    def name(self) -> str:
        """E.g. ``spilled_energy[min]@heuristic``."""
        return f"{self.metric}[{self.pooling}]@{self.localizer}"

    @property
    def runtime(self) -> bool:
        """Whether a calibration file can hold it (a metric and pooling the core computes)."""
        if self.metric in GROUNDING_METRICS:
            return self.pooling == GROUNDING_POOLING
        return self.metric in METRICS and self.pooling in POOLINGS

    @property
    def energy(self) -> bool:
        """Whether it reads an energy (the ablation without energy drops these)."""
        return self.metric in ENERGY_METRICS

    def values(self, scored: Scored) -> np.ndarray:
        """Shape ``(len(scored.records),)``."""
        if self.localizer not in scored.spans:
            raise InvalidInputError(f"column {self.name} needs the {self.localizer!r} localizer, which was not located")
        if self.metric in GROUNDING_METRICS and self.runtime:
            return scored.ungrounded(self.localizer)
        if self.runtime:
            return scored.pooled(self.metric, self.pooling, self.localizer)
        if self.metric not in METRICS or self.pooling not in RESEARCH_POOLINGS:
            raise InvalidInputError(f"unknown column {self.name}")
        return np.array([self._one(scored, i) for i in range(len(scored.records))], dtype=np.float64)

    def _one(self, scored: Scored, i: int) -> float:
        record, span = scored.records[i], scored.spans[self.localizer][i]
        values = record.scores.metric(self.metric)
        inside = values[span.start : span.stop]
        kind, _, how = self.pooling.partition("-")
        if kind == "length":
            return float(len(inside))
        if kind == "word":
            text, offsets = record.text, scored.offsets[i]

            def starts_word(t: int) -> bool:
                a, b = offsets[t]
                return t == span.start or a == 0 or not text[a:b][:1].isalnum() or not text[a - 1].isalnum()

            return pool(values[[t for t in range(span.start, span.stop) if starts_word(t)]], how)
        if kind == "inner":
            return pool(inside[1:] if len(inside) > 1 else inside, how)
        if kind == "after":
            return float(values[span.stop] if span.stop < len(values) else values[-1])
        # z: relative to the whole answer's profile
        spread = float(values.std())
        return (pool(inside, how) - float(values.mean())) / (spread if spread > 1e-6 else 1.0)


def grounding_column(localizer: str) -> Column:
    """Whether ``localizer``'s span is missing from the prompt: 1.0 or 0.0 per record."""
    (metric,) = GROUNDING_METRICS
    return Column(metric, GROUNDING_POOLING, localizer)


def runtime_columns(localizers: Sequence[str]) -> list[Column]:
    """Every metric × pooling the core computes, over each localizer."""
    return [Column(m, p, loc) for loc in localizers for m in METRICS for p in POOLINGS]
