"""Batched evaluation runs: generate once (cached), grade, score every way, measure AUROC.

A run asks the guard's model every question of a dataset (left-padded batches through
:meth:`Guard.ask_batch`), grades the answers against the references, and keeps per item the
generated token ids and the four raw-logit statistics of :class:`TokenScores`. Those are cached
as JSONL under ``$SPILLGUARD_CACHE/generations/`` keyed by model fingerprint, dataset and
generation settings, so a rerun with another metric, pooling, localizer or calibration does not
regenerate, and an interrupted run resumes where it stopped.

AUROC treats a hallucination (a wrong answer) as the positive class; a scorer's value is
oriented so that higher means more likely hallucinated.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from guardrail.calibration import Calibration
from guardrail.datasets import Dataset, Item, cache_root
from guardrail.energy import METRICS, POOLINGS
from guardrail.errors import InvalidInputError
from guardrail.grading import grade, grade_number
from guardrail.localize import HeuristicLocalizer, Localizer, Span, WholeAnswer, token_offsets
from guardrail.scores import TokenScores

__all__ = [
    "BASELINES",
    "AurocResult",
    "Record",
    "Run",
    "Scorer",
    "ThresholdMetrics",
    "auroc",
    "bootstrap_auroc",
    "default_direction",
    "generate",
    "locate",
    "standard_localizers",
    "threshold_metrics",
]

_STATS = ("chosen_logit", "log_partition", "next_log_partition", "entropy")


# -- records and the generation cache ---------------------------------------------------------


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
        row: dict[str, Any] = {"question": self.item.question, "answers": list(self.item.answers),
                               "numeric": self.item.numeric, "text": self.text,
                               "token_ids": self.scores.token_ids.tolist()}
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
    key = json.dumps({"model": guard.fingerprint.model_dump(), "settings": settings,
                      "system_prompt": getattr(guard, "system_prompt", None)}, sort_keys=True)
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
    cache: Path | None | bool = True,
    progress: bool = True,
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
        rows.update(_generate_missing(guard, dataset, missing, path, batch_size, max_new_tokens, progress))
    seconds = time.perf_counter() - started
    records = tuple(_record(item, rows[item.question]) if item.given is None else _forced(guard, item)
                    for item in dataset.items)
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
    guard: Any, dataset: Dataset, questions: list[str], path: Path | None, batch_size: int,
    max_new_tokens: int, progress: bool,
) -> dict[str, dict[str, Any]]:
    by_question = {i.question: i for i in dataset.items}
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
    rows: dict[str, dict[str, Any]] = {}
    with _progress(len(questions), progress) as bar:
        for start in range(0, len(questions), batch_size):
            chunk = questions[start : start + batch_size]
            verdicts = guard.ask_batch(chunk, batch_size=batch_size, max_new_tokens=max_new_tokens)
            new = [Record(by_question[q], v.best.answer, v.best.scores).to_json() for q, v in zip(chunk, verdicts)]
            if path:
                with path.open("a", encoding="utf-8") as out:
                    out.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in new)
            rows.update((r["question"], r) for r in new)
            bar.update(len(chunk))
    return rows


# -- AUROC with a bootstrap interval --------------------------------------------------------


@dataclass(frozen=True)
class AurocResult:
    """AUROC (hallucination = positive) with its bootstrap 95% interval."""

    value: float
    low: float
    high: float
    n: int
    n_hallucinated: int

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}]"


def _labels(labels: Sequence[bool] | np.ndarray, n: int) -> np.ndarray:
    y = np.asarray(labels, dtype=bool)
    if y.shape != (n,):
        raise InvalidInputError(f"`labels` must have shape ({n},) like `scores`, got {y.shape}")
    positives = int(y.sum())
    if positives == 0 or positives == n:
        kind = "correct" if positives == 0 else "wrong"
        raise InvalidInputError(
            f"AUROC is undefined: all {n} answers are {kind}; it needs both correct and wrong answers "
            "(use more or harder questions)"
        )
    return y


def _check_scores(scores: Sequence[float] | np.ndarray) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or s.shape[0] < 2:
        raise InvalidInputError(f"`scores` must be a 1-d array of at least 2 values, got shape {s.shape}")
    if np.isnan(s).any():
        raise InvalidInputError(f"`scores` holds NaN at positions {np.flatnonzero(np.isnan(s)).tolist()[:10]}")
    return s


def auroc(scores: Sequence[float] | np.ndarray, labels: Sequence[bool] | np.ndarray) -> float:
    """Area under the ROC curve; ``labels`` true = hallucinated; ties count one half."""
    s = _check_scores(scores)
    y = _labels(labels, s.shape[0])
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]
    n1, n0 = int(y.sum()), int((~y).sum())
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def bootstrap_auroc(
    scores: Sequence[float] | np.ndarray,
    labels: Sequence[bool] | np.ndarray,
    *,
    resamples: int = 1000,
    seed: int = 0,
) -> AurocResult:
    """AUROC with a percentile bootstrap 95% interval (items resampled with replacement).

    Vectorized: each resample is a vector of multiplicities ``w``, and its AUROC is
    ``w_pos · M · w_neg / (Σ w_pos · Σ w_neg)`` with ``M[i, j] = [s_i > s_j] + ½[s_i = s_j]``.
    """
    s = _check_scores(scores)
    y = _labels(labels, s.shape[0])
    pos, neg = s[y], s[~y]
    wins = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])  # (n1, n0)
    counts = np.random.default_rng(seed).multinomial(s.shape[0], np.full(s.shape[0], 1.0 / s.shape[0]), size=resamples)
    w_pos, w_neg = counts[:, y].astype(np.float64), counts[:, ~y].astype(np.float64)
    denominator = w_pos.sum(1) * w_neg.sum(1)
    numerator = ((w_pos @ wins) * w_neg).sum(1)
    valid = denominator > 0
    values = numerator[valid] / denominator[valid]
    low, high = np.percentile(values, [2.5, 97.5]) if values.size else (np.nan, np.nan)
    return AurocResult(auroc(s, y), float(low), float(high), int(s.shape[0]), int(y.sum()))


# -- scorers ------------------------------------------------------------------------------------


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
    ("marginal energy min", Scorer("marginal_energy", "min", "heuristic")),
)


@dataclass(frozen=True)
class ThresholdMetrics:
    """Detection quality at one threshold (flagged iff score > threshold)."""

    threshold: float
    precision: float
    recall: float
    f1: float
    flag_rate: float
    false_flag_rate: float


def threshold_metrics(scores: np.ndarray, labels: np.ndarray, threshold: float) -> ThresholdMetrics:
    """Precision, recall, F1, flag rate and false-flag rate (correct answers flagged)."""
    flagged = np.asarray(scores) > threshold
    y = np.asarray(labels, dtype=bool)
    tp = float((flagged & y).sum())
    precision = tp / flagged.sum() if flagged.any() else 0.0
    recall = tp / y.sum() if y.any() else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    false_flag = float((flagged & ~y).sum() / (~y).sum()) if (~y).any() else 0.0
    return ThresholdMetrics(float(threshold), float(precision), float(recall), float(f1), float(flagged.mean()), false_flag)


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
            self._pooled[key] = np.array([
                r.scores.pooled(metric, pooling, s.indices) for r, s in zip(self.records, self.spans[localizer])
            ])
        return self._pooled[key]

    def values(self, scorer: Scorer) -> np.ndarray:
        """Oriented scores (higher = more likely hallucinated)."""
        return scorer.sign * self.pooled(scorer.metric, scorer.pooling, scorer.localizer)

    def calibrated(self, calibration: Calibration) -> np.ndarray:
        """Scores under a calibration (its localizer must have been located)."""
        spans = self.spans[calibration.localizer]
        return np.array([calibration.score(r.scores, s) for r, s in zip(self.records, spans)])


def locate(
    records: Iterable[Record], localizers: dict[str, Localizer], decode: Callable[[list[int]], str],
) -> Scored:
    """Spans of every non-empty record under each localizer (empty answers are left out)."""
    kept = [r for r in records if len(r.scores) and r.text.strip()]
    if not kept:
        raise InvalidInputError("every answer is empty: nothing to score")
    offsets = [token_offsets(decode, r.scores.token_ids.tolist()) for r in kept]
    spans = {name: [loc.locate(r.item.question, text, off) for r, (text, off) in zip(kept, offsets)]
             for name, loc in localizers.items()}
    return Scored(kept, spans, [off for _, off in offsets])


def standard_localizers(guard: Any | None = None, names: Sequence[str] = ("heuristic", "whole")) -> dict[str, Localizer]:
    """Localizers by name; ``"llm"`` needs the guard (one short generation per answer)."""
    out: dict[str, Localizer] = {}
    for name in names:
        if name == "heuristic":
            out[name] = HeuristicLocalizer()
        elif name == "whole":
            out[name] = WholeAnswer()
        elif name == "llm" and guard is not None:
            out[name] = guard._make_localizer("llm")
        else:
            raise InvalidInputError(f"`localizers` must name heuristic, whole or llm (with a model), got {name!r}")
    return out


def all_scorers(localizers: Iterable[str]) -> list[Scorer]:
    """Every metric × pooling × localizer, each in its default orientation."""
    return [Scorer(m, p, loc) for loc in localizers for m in METRICS for p in POOLINGS]
