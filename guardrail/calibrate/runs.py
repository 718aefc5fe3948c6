"""Generation runs: answer a dataset once (batched, cached, resumable) and keep the raw statistics.

A run asks the guard's model every question of a dataset (left-padded batches through
:meth:`Guard.ask_batch`) and keeps per item the generated token ids and the four raw-logit
statistics of :class:`TokenScores`. Those are cached as JSONL under
``$SPILLGUARD_CACHE/generations/`` keyed by model fingerprint and generation settings, so a
rerun with another metric, pooling, localizer or calibration does not regenerate, and an
interrupted run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from guardrail.calibrate.datasets import Dataset, Item, cache_root
from guardrail.calibrate.engines import Engine, EngineError, LocalEngine
from guardrail.calibrate.grading import grade, grade_number
from guardrail.errors import InvalidInputError
from guardrail.scores import TokenScores

__all__ = ["Record", "Run", "generate"]

_STATS = ("chosen_logit", "log_partition", "next_log_partition", "entropy")


@dataclass(frozen=True, eq=False)
class Record:
    """One question, the model's answer and its per-token raw-logit statistics."""

    item: Item
    text: str
    scores: TokenScores

    @property
    def correct(self) -> bool:
        """Graded against the item's references (exactly, for numeric items)."""
        if self.item.numeric:
            return grade_number(self.text, int(self.item.answers[0]), self.item.question)
        return grade(self.text, self.item.answers)

    def to_json(self) -> dict[str, Any]:
        """The cache row: question, references, text, token ids and the four statistics."""
        row: dict[str, Any] = {
            "question": self.item.question,
            "answers": list(self.item.answers),
            "numeric": self.item.numeric,
            "text": self.text,
            "token_ids": self.scores.token_ids.tolist(),
        }
        row.update({name: getattr(self.scores, name).tolist() for name in _STATS})
        return row

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> Record:
        """Inverse of :meth:`to_json`."""
        item = Item(row["question"], tuple(row["answers"]), bool(row.get("numeric", False)))
        scores = TokenScores(np.array(row["token_ids"], dtype=np.int64), *(row[name] for name in _STATS))
        return cls(item, row["text"], scores)


def _cache_file(guard: Any, dataset: Dataset, settings: dict[str, Any], cache: Path) -> Path:
    """``generations/<model>-<hash>/<dataset>.jsonl``; the hash covers model and settings."""
    key = json.dumps(
        {
            "model": guard.fingerprint.model_dump(),
            "settings": settings,
            "system_prompt": getattr(guard, "system_prompt", None),
        },
        sort_keys=True,
    )
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:12]
    base = dataset.name.split("[")[0].split("/")[0].replace(":", "-") or "data"
    return cache / "generations" / f"{guard.fingerprint.name}-{digest}" / f"{base}.jsonl"


def _read_cache(path: Path) -> dict[str, dict[str, Any]]:
    """Cached rows by question; a truncated last line (interrupted run) is ignored."""
    rows: dict[str, dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and isinstance(row.get("question"), str):
                rows[row["question"]] = row
    return rows


def _progress(total: int, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc="generating", unit="q", file=sys.stderr, disable=not enabled, leave=False)


@dataclass(frozen=True)
class Run:
    """The records of one dataset and how long the missing generations took."""

    dataset: str
    records: tuple[Record, ...]
    generated: int
    seconds: float
    cache_file: Path | None = None

    @property
    def questions_per_second(self) -> float | None:
        """Generation throughput of this run (``None`` when everything came from the cache)."""
        return self.generated / self.seconds if self.generated and self.seconds > 0 else None


def generate(
    guard: Any,
    dataset: Dataset,
    *,
    batch_size: int = 16,
    max_new_tokens: int = 32,
    cache: Path | bool | None = True,
    progress: bool = True,
    engine: Engine | None = None,
) -> Run:
    """Answer every question of ``dataset`` (greedy), reusing and extending the cache.

    Items with a ``given`` answer are not generated: that answer is scored teacher-forced.

    Args:
        guard: a :class:`~guardrail.guard.Guard`; its policy should be ``flag`` (no retries).
        dataset: the questions and references.
        batch_size: questions per left-padded batch.
        max_new_tokens: answer length limit.
        cache: ``True`` for ``$SPILLGUARD_CACHE``, a directory, or ``False``/``None`` for none.
        progress: show a progress bar on stderr.
        engine: who answers the missing questions (:mod:`guardrail.calibrate.engines`);
            default :class:`~guardrail.calibrate.engines.LocalEngine`, this process. The cache
            is read and written here whatever the engine.
    """
    if not dataset.items:
        raise InvalidInputError(f"dataset {dataset.name!r} is empty")
    settings = {"max_new_tokens": max_new_tokens, "do_sample": False}
    root = cache_root() if cache is True else (Path(cache) if cache else None)
    path = _cache_file(guard, dataset, settings, root) if root else None
    rows = {}
    for cached in sorted(path.parent.glob("*.jsonl")) if path else []:  # any dataset of this model and settings
        rows.update(_read_cache(cached))
    missing = list(dict.fromkeys(i.question for i in dataset.items if i.given is None and i.question not in rows))
    started = time.perf_counter()
    if missing:
        engine = engine or LocalEngine()
        rows.update(_generate_missing(guard, dataset, missing, path, batch_size, max_new_tokens, progress, engine))
    seconds = time.perf_counter() - started
    records = tuple(
        _record(item, rows[item.question]) if item.given is None else _forced(guard, item) for item in dataset.items
    )
    return Run(dataset.name, records, len(missing), seconds, path)


def _record(item: Item, row: dict[str, Any]) -> Record:
    cached = Record.from_json(row)
    return Record(item, cached.text, cached.scores)


def _forced(guard: Any, item: Item) -> Record:
    """The item's given answer scored teacher-forced after its raw-text prompt (not cached)."""
    assert item.given is not None
    # An explicit whole-answer span keeps the guard's own localizer (maybe an LLM call) out of
    # it: :func:`locate` localizes every record afterwards.
    verdict = guard.check(item.question, item.given, raw=True, span=(0, len(item.given)))
    return Record(item, item.given, verdict.best.scores)


def _generate_missing(
    guard: Any,
    dataset: Dataset,
    questions: list[str],
    path: Path | None,
    batch_size: int,
    max_new_tokens: int,
    progress: bool,
    engine: Engine,
) -> dict[str, dict[str, Any]]:
    """Have ``engine`` answer ``questions``; append each answer to the cache as it arrives.

    An answer to a question not asked, or asked and already answered, is dropped, so the cache
    holds every question once whatever the engine retried; a question left unanswered is an
    :class:`EngineError`.
    """
    by_question = {i.question: i for i in dataset.items}
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
    rows: dict[str, dict[str, Any]] = {}
    pending = set(questions)
    with _progress(len(questions), progress) as bar:
        for answers in engine.answer(guard, questions, batch_size=batch_size, max_new_tokens=max_new_tokens):
            new = []
            for answer in answers:
                if answer.question in pending:
                    pending.discard(answer.question)
                    new.append(Record(by_question[answer.question], answer.text, answer.scores).to_json())
            if path and new:
                with path.open("a", encoding="utf-8") as out:
                    out.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in new)
            rows.update((r["question"], r) for r in new)
            bar.update(len(new))
    if pending:
        raise EngineError(f"the engine returned no answer to {len(pending)} of {len(questions)} questions")
    return rows
