"""Engines: who answers the questions a generation run is missing.

:func:`guardrail.calibrate.runs.generate` decides *which* questions need answers (those not in
the cache), writes every answer to the cache as it arrives and reports progress; an engine only
answers. :class:`LocalEngine` asks the guard in this process, in left-padded batches;
:class:`guardrail.calibrate.ray_engine.RayEngine` shards the same batches over model replicas on
a Ray cluster. Because the cache is read and written in one place, a rerun regenerates only
what is missing, whichever engine wrote the rest.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from guardrail.errors import SpillguardError
from guardrail.scores import TokenScores
from guardrail.validation import check_int

__all__ = ["Answer", "Engine", "EngineError", "LocalEngine", "batches"]


class EngineError(SpillguardError, RuntimeError):
    """An engine could not answer: its extra is missing, the cluster cannot run a replica, a
    replica loaded another model, or answers were lost."""


@dataclass(frozen=True, eq=False)
class Answer:
    """The model's greedy answer to one question (a string, or RAG chat messages) with its
    per-token raw-logit statistics."""

    question: str | list[dict[str, str]]
    text: str
    scores: TokenScores


class Engine(Protocol):
    """Answers questions with a guard's model (greedy, the guard's prompt template)."""

    def answer(
        self, guard: Any, questions: Sequence[Any], *, batch_size: int, max_new_tokens: int
    ) -> Iterator[list[Answer]]:
        """Yield the answers to ``questions`` as they are ready, a batch at a time, each
        question once, in any order.

        Args:
            guard: the :class:`~guardrail.guard.Guard` of the run (its fingerprint keys the
                cache; an engine with replicas checks that they load the same model).
            questions: distinct prompts (question strings, or chat messages), in the run's order.
            batch_size: questions per left-padded batch (:func:`batches`).
            max_new_tokens: answer length limit.
        """
        ...


def batches(questions: Sequence[Any], batch_size: int) -> list[list[Any]]:
    """``questions`` cut into consecutive batches of ``batch_size`` (the last may be shorter).

    Every engine pads exactly these batches together, so an answer does not depend on which
    engine (or which replica) produced it.
    """
    check_int("batch_size", batch_size, minimum=1)
    return [list(questions[i : i + batch_size]) for i in range(0, len(questions), batch_size)]


class LocalEngine:
    """Answers in this process with the guard itself (the default engine)."""

    def answer(
        self, guard: Any, questions: Sequence[Any], *, batch_size: int, max_new_tokens: int
    ) -> Iterator[list[Answer]]:
        """See :meth:`Engine.answer`: one :meth:`Guard.ask_batch` call per batch."""
        for chunk in batches(questions, batch_size):
            verdicts = guard.ask_batch(chunk, batch_size=batch_size, max_new_tokens=max_new_tokens)
            yield [Answer(q, v.best.answer, v.best.scores) for q, v in zip(chunk, verdicts, strict=True)]
