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
from guardrail.calibrate.files import private_dir, private_file, read_lines, safe_component, within
from guardrail.calibrate.grading import grade, grade_number, refuses
from guardrail.errors import InvalidInputError
from guardrail.scores import TokenScores
from guardrail.validation import check_int

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
        """Graded against the item's references (exactly, for numeric items); for an
        unanswerable RAG item only a refusal is correct."""
        if self.item.unanswerable:
            return refuses(self.text)
        if self.item.numeric:
            return grade_number(self.text, int(self.item.answers[0]), self.item.question)
        return grade(self.text, self.item.answers)

    def to_json(self) -> dict[str, Any]:
        """The cache row: question, references, text, token ids and the four statistics."""
        row: dict[str, Any] = {
            "key": self.item.key,
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
    """``generations/<model>-<hash>/<dataset>.jsonl``; the hash covers model and settings.

    Both names become safe path components (``Guard(name="../../x")`` stays in the cache)."""
    key = json.dumps(
        {
            "model": guard.fingerprint.model_dump(),
            "settings": settings,
            "system_prompt": getattr(guard, "system_prompt", None),
        },
        sort_keys=True,
    )
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:12]
    base = safe_component(dataset.name.split("[")[0].split("/")[0].replace(":", "-"))
    folder = safe_component(f"{guard.fingerprint.name}-{digest}", fallback=digest)
    return within(cache, cache / "generations" / folder / f"{base}.jsonl")


def _read_cache(path: Path) -> dict[str, dict[str, Any]]:
    """Cached rows by item key; a truncated last line (interrupted run) is ignored."""
    rows: dict[str, dict[str, Any]] = {}
    if path.is_file():
        for line in read_lines(path, max_line=1 << 24):
            try:
                row = json.loads(line)
            except (json.JSONDecodeError, RecursionError):
                continue
            if isinstance(row, dict) and isinstance(row.get("question"), str):
                key = row.get("key")
                rows[key if isinstance(key, str) else row["question"]] = row
    return rows


def _progress(total: int, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc="generating", unit="q", file=sys.stderr, disable=not enabled, leave=False)


BATCH_SIZE = 32
"""Questions per left-padded batch of a run (and of ``spillguard evaluate``/``calibrate``): on a
2-core CPU 32 answers 6.7 questions/s against 4.8 at 16, with the same answers (docs/benchmarks.md)."""

MAX_NEW_TOKENS = 32
"""Answer length limit of a run (and of ``spillguard evaluate``/``calibrate``): the dev tasks'
answers are a short sentence; every bundled calibration was fitted on answers of this limit."""


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
    batch_size: int = BATCH_SIZE,
    max_new_tokens: int = MAX_NEW_TOKENS,
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
    check_int("batch_size", batch_size, minimum=1)
    check_int("max_new_tokens", max_new_tokens, minimum=1)
    settings = {"max_new_tokens": max_new_tokens, "do_sample": False}
    root = cache_root() if cache is True else (Path(cache) if cache else None)
    path = _cache_file(guard, dataset, settings, root) if root else None
    wanted = {i.key for i in dataset.items if i.given is None}
    rows = _read_cache(path) if path else {}
    others = sorted(p for p in path.parent.glob("*.jsonl") if p != path) if path else []
    for cached in others if not wanted <= rows.keys() else []:  # any dataset of this model and settings
        rows = {**_read_cache(cached), **rows}
    missing = list(dict.fromkeys(i.key for i in dataset.items if i.given is None and i.key not in rows))
    started = time.perf_counter()
    if missing:
        engine = engine or LocalEngine()
        rows.update(_generate_missing(guard, dataset, missing, path, batch_size, max_new_tokens, progress, engine))
    seconds = time.perf_counter() - started
    records = tuple(
        _record(item, rows[item.key]) if item.given is None else _forced(guard, item) for item in dataset.items
    )
    return Run(dataset.name, records, len(missing), seconds, path)


def _record(item: Item, row: dict[str, Any]) -> Record:
    cached = Record.from_json(row)
    return Record(item, cached.text, cached.scores)


def _forced(guard: Any, item: Item) -> Record:
    """The item's given answer scored teacher-forced after its prompt (raw text unless
    ``item.chat``; not cached)."""
    assert item.given is not None
    # An explicit whole-answer span keeps the guard's own localizer (maybe an LLM call) out of
    # it: :func:`locate` localizes every record afterwards.
    verdict = guard.check(item.question, item.given, raw=not item.chat, span=(0, len(item.given)))
    return Record(item, item.given, verdict.best.scores)


def _generate_missing(
    guard: Any,
    dataset: Dataset,
    keys: list[str],
    path: Path | None,
    batch_size: int,
    max_new_tokens: int,
    progress: bool,
    engine: Engine,
) -> dict[str, dict[str, Any]]:
    """Have ``engine`` answer the items of ``keys``; append each answer to the cache as it arrives.

    An answer to a question not asked, or asked and already answered, is dropped, so the cache
    holds every question once whatever the engine retried; a question left unanswered is an
    :class:`EngineError`.
    """
    by_key = {i.key: i for i in dataset.items}
    if path:
        private_dir(path.parent)
    rows: dict[str, dict[str, Any]] = {}
    pending = set(keys)
    prompts = [by_key[k].prompt() for k in keys]
    with _progress(len(keys), progress) as bar:
        for answers in engine.answer(guard, prompts, batch_size=batch_size, max_new_tokens=max_new_tokens):
            new = []
            for answer in answers:
                key = _key_of(answer.question)
                if key in pending:
                    pending.discard(key)
                    new.append(Record(by_key[key], answer.text, answer.scores).to_json())
            if path and new:
                with private_file(path, "a") as out:
                    out.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in new)
            rows.update((r["key"], r) for r in new)
            bar.update(len(new))
    if pending:
        raise EngineError(f"the engine returned no answer to {len(pending)} of {len(keys)} questions")
    return rows


def _key_of(prompt: object) -> str:
    """The cache key of a prompt as an engine hands it back (a question, or RAG chat messages)."""
    return prompt if isinstance(prompt, str) else json.dumps(prompt, ensure_ascii=False, sort_keys=True)


def retry_verdicts(
    guard: Any, records: list[Record], *, batch_size: int = BATCH_SIZE, max_new_tokens: int = MAX_NEW_TOKENS
) -> list[Any]:
    """The guard's verdicts (under its own policy, e.g. retry) on the questions of ``records``.

    Not cached: retries sample. Items without context go through :meth:`Guard.ask_batch`;
    RAG items one by one, localized in their question (as the integrations do).
    """
    check_int("batch_size", batch_size, minimum=1)
    if any(r.item.given is not None for r in records):
        raise InvalidInputError("a retry policy needs generated answers; this dataset scores given answers")
    plain = [i for i, r in enumerate(records) if r.item.context is None]
    found: dict[int, Any] = {}
    for start in range(0, len(plain), batch_size):
        chunk = plain[start : start + batch_size]
        questions = [records[i].item.question for i in chunk]
        verdicts = guard.ask_batch(questions, batch_size=batch_size, max_new_tokens=max_new_tokens)
        found.update(zip(chunk, verdicts, strict=True))
    for i, record in enumerate(records):
        if record.item.context is not None:
            found[i] = guard.ask(record.item.prompt(), localize_in=record.item.question, max_new_tokens=max_new_tokens)
    return [found[i] for i in range(len(records))]
