"""Choosing a detector that generalizes to unseen tasks: leave-one-task-out selection.

The question a user asks is "will this work on *my* questions?", so candidates are compared on
tasks they were not fitted on. For every candidate and every dev task ``t``: fit the candidate on
the other tasks (pooled, each task weighted equally), score ``t``, and record its AUROC and — at
the threshold set on the other tasks for the goal — its false-flag rate and recall. Candidates are
ranked by the mean held-out AUROC (ties: the worst task). The winner is refitted on all tasks and
its threshold set on all of them.

Candidates (:func:`candidates`):

- every single column (metric × pooling × localizer), its direction chosen on the training
  tasks — so every baseline ``evaluate`` prints is a candidate, and the chosen detector cannot
  be worse than the best of them on the dev tasks' mean;
- logistic combinations (scikit-learn, standardized features, L2 penalty) of feature families
  over one localizer, with and without energy features, at several penalties;
- research candidates the calibration file cannot hold yet (columns over two localizers, the
  normalisations of :mod:`guardrail.calibrate.features`): measured and listed, never shipped;
- on RAG tasks (every prompt carries passages), the grounding column alone (measured, never
  shipped: a file needs a raw-logit feature) and every shippable candidate above with the
  grounding column added (``... +grounding``), over localized spans (not the whole answer, which
  is rarely copied word for word).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import StandardScaler

from guardrail.calibrate.features import RESEARCH_POOLINGS, Column, grounding_column, runtime_columns
from guardrail.calibrate.metrics import bootstrap_auroc, choose_threshold, threshold_metrics
from guardrail.calibrate.scoring import BASELINES, Scored
from guardrail.calibration import Calibration, Feature, ModelFingerprint, Report
from guardrail.energy import METRICS, POOLINGS
from guardrail.errors import CalibrationError, InvalidInputError
from guardrail.grounding import GROUNDING_METRICS

__all__ = [
    "MIN_CLASS",
    "MIN_TASK",
    "Candidate",
    "Fitted",
    "HeldOut",
    "Outer",
    "Result",
    "Selection",
    "TaskWarning",
    "candidates",
    "fit",
    "leave_one_task_out",
    "select",
    "usable_tasks",
]

MIN_TASK = 20  # answers a task needs to be held out
MIN_CLASS = 5  # ... with at least this many correct and this many wrong


class TaskWarning(UserWarning):
    """A dev task was left out of the selection (too small, or a single class)."""


@dataclass(frozen=True)
class Candidate:
    """A detector family: columns, combined by ``single`` (one column, direction learned) or
    ``logistic`` (standardized, L2 penalty ``l2``)."""

    name: str
    columns: tuple[Column, ...]
    kind: str = "logistic"
    l2: float = 1.0

    @property
    def shippable(self) -> bool:
        """Whether a calibration file can hold it: runtime columns over one localizer, at least
        one of them a raw-logit metric (the grounding column alone is measured, not shipped)."""
        return (
            all(c.runtime for c in self.columns)
            and len({c.localizer for c in self.columns}) == 1
            and any(c.metric not in GROUNDING_METRICS for c in self.columns)
        )

    @property
    def energy(self) -> bool:
        """Whether it uses an energy feature."""
        return any(c.energy for c in self.columns)

    def without_energy(self) -> Candidate | None:
        """The same candidate without its energy columns (``None`` if nothing is left)."""
        kept = tuple(c for c in self.columns if not c.energy)
        if not kept:
            return None
        kind = "single" if len(kept) == 1 else self.kind
        return Candidate(f"{self.name} without energy", kept, kind, self.l2)


@dataclass(frozen=True, eq=False)
class Fitted:
    """A candidate fitted on some tasks: ``score(x) = bias + x_std @ weights``."""

    candidate: Candidate
    center: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: float

    def score(self, x: np.ndarray) -> np.ndarray:
        """Scores of rows ``x`` (shape ``(n, k)``), higher = more likely hallucinated."""
        return np.asarray(self.bias + ((x - self.center) / self.scale) @ self.weights, dtype=np.float64)

    def features(self) -> tuple[Feature, ...]:
        """As calibration features (only for a shippable candidate)."""
        return tuple(
            Feature(metric=c.metric, pooling=c.pooling, weight=float(w), center=float(m), scale=float(s))
            for c, w, m, s in zip(self.candidate.columns, self.weights, self.center, self.scale, strict=True)
        )


@dataclass(frozen=True)
class HeldOut:
    """One held-out task: its size, accuracy, AUROC and quality at the training threshold."""

    task: str
    n: int
    accuracy: float
    auroc: float
    false_flag_rate: float
    recall: float


@dataclass(frozen=True)
class Result:
    """A candidate's leave-one-task-out measurements."""

    candidate: Candidate
    held_out: tuple[HeldOut, ...] = field(default=())

    @property
    def mean(self) -> float:
        """Mean held-out AUROC."""
        return float(np.mean([h.auroc for h in self.held_out]))

    @property
    def worst(self) -> float:
        """Worst held-out AUROC."""
        return float(min(h.auroc for h in self.held_out))

    def summary(self) -> str:
        """E.g. ``0.812 mean, 0.702 worst``."""
        return f"{self.mean:.3f} mean, {self.worst:.3f} worst"


def _weights(groups: np.ndarray) -> np.ndarray:
    """Each task weighs the same in total."""
    g = np.asarray(groups)
    counts = np.bincount(g)
    return np.asarray(1.0 / counts[g], dtype=np.float64) * len(g) / len(counts)


def fit(candidate: Candidate, x: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None) -> Fitted:
    """Fit ``candidate`` on rows ``x`` (``(n, k)``) and labels ``y`` (true = hallucinated)."""
    w = np.ones(len(y)) if weights is None else weights
    if candidate.kind == "single":
        auc = roc_auc_score(y, x[:, 0], sample_weight=w)
        direction = 1.0 if auc >= 0.5 else -1.0
        return Fitted(candidate, np.zeros(1), np.ones(1), np.array([direction]), 0.0)
    scaler = StandardScaler().fit(x, sample_weight=w)
    scale = np.where(scaler.scale_ > 1e-9, scaler.scale_, 1.0)
    model = LogisticRegression(C=1.0 / candidate.l2, max_iter=2000)
    model.fit((x - scaler.mean_) / scale, y, sample_weight=w)
    return Fitted(candidate, scaler.mean_.copy(), scale, model.coef_[0].astype(np.float64), float(model.intercept_[0]))


def usable_tasks(tasks: Sequence[tuple[str, Scored]]) -> list[tuple[str, Scored]]:
    """The tasks that can be held out; each one left out is named in a :class:`TaskWarning`."""
    kept = []
    for name, scored in tasks:
        y = scored.labels
        wrong, right = int(y.sum()), int((~y).sum())
        if wrong == 0 or right == 0:
            warnings.warn(
                f"dev task {name!r}: all {len(y)} answers are {'wrong' if right == 0 else 'correct'} "
                "(a single class): left out of the selection",
                TaskWarning,
                stacklevel=2,
            )
        elif len(y) < MIN_TASK or min(wrong, right) < MIN_CLASS:
            warnings.warn(
                f"dev task {name!r} is too small to hold out ({len(y)} answers, {right} correct, {wrong} wrong; "
                f"needs {MIN_TASK} with {MIN_CLASS} of each): left out of the selection",
                TaskWarning,
                stacklevel=2,
            )
        else:
            kept.append((name, scored))
    if len(kept) < 2:
        raise CalibrationError(
            f"leave-one-task-out needs at least 2 usable dev tasks, got {len(kept)} of {len(tasks)}; "
            "add tasks with both correct and wrong answers (`--data a+b+...`)"
        )
    return kept


def candidates(localizers: Sequence[str], *, research: bool = True, grounding: bool = False) -> list[Candidate]:
    """Every single column, the logistic families at three penalties, and research candidates;
    with ``grounding`` (RAG tasks), the grounding column and its additions to every shippable one."""
    found = [Candidate(c.name, (c,), "single") for c in runtime_columns(localizers)]
    families: dict[str, tuple[tuple[str, str], ...]] = {
        "paper+logprob": (
            ("spilled_energy", "min"),
            ("spilled_energy", "mean"),
            ("logprob", "min"),
            ("logprob", "mean"),
        ),
        "logprob+entropy": (("logprob", "min"), ("logprob", "mean"), ("entropy", "max"), ("entropy", "mean")),
        "energy+logprob+entropy": (
            ("spilled_energy", "min"),
            ("spilled_energy", "mean"),
            ("logprob", "min"),
            ("logprob", "mean"),
            ("entropy", "max"),
            ("entropy", "mean"),
        ),
        "all": tuple((m, p) for m in METRICS for p in POOLINGS),
    }
    for loc in localizers:
        for family, pairs in families.items():
            for l2 in (1.0, 10.0, 100.0):
                columns = tuple(Column(m, p, loc) for m, p in pairs)
                found.append(Candidate(f"{family}@{loc} (l2={l2:g})", columns, "logistic", l2))
    if research and len(localizers) > 1:
        for family in ("energy+logprob+entropy", "all"):
            columns = tuple(Column(m, p, loc) for loc in localizers for m, p in families[family])
            found.append(Candidate(f"{family}@{'+'.join(localizers)} (l2=10)", columns, "logistic", 10.0))
    if research:
        for loc in localizers:
            for pooling in RESEARCH_POOLINGS:
                for metric in ("spilled_energy", "logprob", "entropy"):
                    column = Column(metric, pooling, loc)
                    found.append(Candidate(column.name, (column,), "single"))
            extra = tuple(Column(m, p, loc) for m, p in families["energy+logprob+entropy"]) + tuple(
                Column(m, p, loc)
                for m in ("spilled_energy", "logprob")
                for p in ("sum", "length", "word-min", "inner-min", "after", "z-min")
            )
            found.append(Candidate(f"energy+logprob+entropy+normalised@{loc} (l2=10)", extra, "logistic", 10.0))
    if grounding:  # over a localized span only: a whole answer is rarely copied word for word
        spans = [loc for loc in localizers if loc != "whole"]
        grounded = [Candidate(grounding_column(loc).name, (grounding_column(loc),), "single") for loc in spans]
        for c in found:
            if c.shippable and c.columns[0].localizer in spans:
                column = grounding_column(c.columns[0].localizer)
                grounded.append(Candidate(f"{c.name} +grounding", (*c.columns, column), "logistic", c.l2))
        found += grounded
    return found


def _matrix(scored: Scored, columns: Sequence[Column], cache: dict[tuple[int, Column], np.ndarray]) -> np.ndarray:
    return np.column_stack([cache.setdefault((id(scored), c), c.values(scored)) for c in columns])


def leave_one_task_out(
    tasks: Sequence[tuple[str, Scored]],
    pool: Sequence[Candidate],
    *,
    limit: float | None,
    test: Sequence[tuple[str, Scored]] | None = None,
    cache: dict[tuple[int, Column], np.ndarray] | None = None,
) -> list[Result]:
    """Every candidate's held-out measurements, best mean AUROC first (ties: best worst task).

    Args:
        tasks: ``(name, scored)`` of each usable dev task (see :func:`usable_tasks`).
        pool: the candidates.
        limit: the false-flag-rate goal of the threshold (``None``: max F1), set on the
            training tasks of each fold.
        test: if given, the task ``t`` of each fold is measured on ``test[t]`` (its held-out
            part) instead of on ``tasks[t]``, which is then left out of training as well.
        cache: column values by ``(id(scored), column)``, shared between calls.
    """
    if not tasks or len(tasks) < 2:
        raise InvalidInputError(f"`tasks` must hold at least 2 tasks, got {len(tasks)}")
    if test is not None and [n for n, _ in test] != [n for n, _ in tasks]:
        raise InvalidInputError("`test` must name the same tasks as `tasks`, in order")
    cache = {} if cache is None else cache
    results = []
    for candidate in pool:
        matrices = [_matrix(s, candidate.columns, cache) for _, s in tasks]
        held = []
        for t, (name, scored) in enumerate(tasks):
            others = [k for k in range(len(tasks)) if k != t]
            x = np.concatenate([matrices[k] for k in others])
            y = np.concatenate([tasks[k][1].labels for k in others])
            groups = np.concatenate([[i] * len(tasks[k][1].labels) for i, k in enumerate(others)])
            fitted = fit(candidate, x, y, _weights(groups))
            target = scored if test is None else test[t][1]
            x_t = matrices[t] if test is None else _matrix(target, candidate.columns, cache)
            held.append(_held_out(name, fitted, fitted.score(x), y, fitted.score(x_t), target.labels, limit))
        results.append(Result(candidate, tuple(held)))
    return sorted(results, key=lambda r: (-round(r.mean, 6), -r.worst))


def _held_out(
    name: str,
    fitted: Fitted,
    train_scores: np.ndarray,
    train_labels: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    limit: float | None,
) -> HeldOut:
    auroc = float(roc_auc_score(labels, scores)) if 0 < labels.sum() < len(labels) else math.nan
    try:
        threshold = choose_threshold(train_scores, train_labels, limit).threshold
    except CalibrationError:
        threshold = float(np.max(train_scores)) + 1.0
    at = threshold_metrics(scores, labels, threshold)
    return HeldOut(name, len(labels), float(1 - labels.mean()), auroc, at.false_flag_rate, at.recall)


@dataclass(frozen=True)
class Outer:
    """One task of the nested leave-one-task-out: the whole procedure (selection on the other
    tasks' leave-one-task-out, fit on them, threshold on them) measured on this task.

    Attributes:
        task: the held-out task; ``n`` answers, ``accuracy`` of the model on them.
        chosen: the candidate the other tasks chose.
        auroc: its AUROC on this task; ``false_flag_rate`` and ``recall`` at its threshold.
        ablation: the AUROC of the same candidate without energy features (``None``: it uses none).
        baseline: the best baseline ``evaluate`` prints on this task (a-priori direction) and its AUROC.
        in_task: the same candidate fitted *on this task itself* (stratified 5-fold cross-validated
            AUROC): what its features carry when the task is known, a reference rather than an
            estimate (``nan`` when a class has fewer than 5 answers).
    """

    task: str
    n: int
    accuracy: float
    chosen: str
    auroc: float
    false_flag_rate: float
    recall: float
    ablation: float | None
    baseline: tuple[str, float]
    in_task: float = math.nan


@dataclass(frozen=True)
class Selection:
    """The outcome of :func:`select`.

    Attributes:
        calibration: the chosen detector refitted on every usable dev task, threshold for the goal.
        ranked: every candidate's leave-one-task-out result on the dev tasks, best first.
        chosen: the best shippable candidate's result.
        ablation: the chosen candidate without energy features (``None`` if it uses none).
        tasks: the names of the usable dev tasks.
        tested: with test parts, the chosen candidate and its ablation measured on each task's
            test part (fitted on the other tasks' dev parts).
        baselines: with test parts, per task the best baseline ``evaluate`` prints on its test
            part (a-priori direction): ``(task, baseline name, AUROC)``.
        nested: with ``nested=True``, the whole procedure measured on each task it never saw.
    """

    calibration: Calibration
    ranked: tuple[Result, ...]
    chosen: Result
    ablation: Result | None
    tasks: tuple[str, ...]
    tested: tuple[Result, ...] = ()
    baselines: tuple[tuple[str, str, float], ...] = ()
    nested: tuple[Outer, ...] = ()


def select(
    tasks: Sequence[tuple[str, Scored]],
    *,
    goal: str,
    limit: float | None,
    model: ModelFingerprint | None = None,
    data: str = "dev tasks",
    test: Sequence[tuple[str, Scored]] | None = None,
    research: bool = True,
    allowed: Sequence[str] | None = None,
    nested: bool = False,
) -> Selection:
    """Leave-one-task-out selection over :func:`candidates`, then the shipped calibration.

    Args:
        tasks: ``(name, scored)`` per dev task (all located with the same localizers).
        goal: the goal's text for the file (e.g. ``"false-flag-rate=0.15"``).
        limit: its false-flag rate (``None``: max F1).
        model: the fingerprint the calibration is bound to.
        data: what the dev tasks were, for the file's report.
        test: each task's test part, in the same order, to measure the chosen candidate on.
        research: also measure the candidates a calibration file cannot hold.
        allowed: only candidates whose metrics are all in this list (default: all).
        nested: also run the whole procedure once per task with that task left out entirely
            (selection and fit on the others), and measure it on the left-out task: an
            estimate for unseen tasks that no choice was tuned on.
    """
    usable = usable_tasks(tasks)
    names = [n for n, _ in usable]
    localizers = list(usable[0][1].spans)
    grounding = all(scored.grounded_prompts for _, scored in usable)
    pool = [
        c
        for c in candidates(localizers, research=research, grounding=grounding)
        if allowed is None or all(col.metric in allowed for col in c.columns)
    ]
    if not any(c.shippable for c in pool):
        raise InvalidInputError(f"`metrics` {list(allowed or [])} leave no candidate to ship")
    cache: dict[tuple[int, Column], np.ndarray] = {}
    ranked = leave_one_task_out(usable, pool, limit=limit, cache=cache)
    chosen = next(r for r in ranked if r.candidate.shippable)
    reduced = chosen.candidate.without_energy() if chosen.candidate.energy else None
    ablation = leave_one_task_out(usable, [reduced], limit=limit)[0] if reduced else None
    tested: tuple[Result, ...] = ()
    baselines: tuple[tuple[str, str, float], ...] = ()
    if test is not None:
        kept = [t for t in test if t[0] in names]
        baselines = tuple((name, *_best_baseline(scored)) for name, scored in kept)
        measured = [chosen.candidate] + ([reduced] if reduced else [])
        tested = tuple(leave_one_task_out(usable, measured, limit=limit, test=kept))
        tested = tuple(sorted(tested, key=lambda r: r.candidate != chosen.candidate))
    calibration = _ship(usable, chosen, ranked, goal, limit, model, data)
    outer: tuple[Outer, ...] = ()
    if nested and len(usable) > 2:
        shippable = [c for c in pool if c.shippable]
        outer = tuple(_outer(usable, t, shippable, limit, cache) for t in range(len(usable)))
    return Selection(calibration, tuple(ranked), chosen, ablation, tuple(names), tested, baselines, outer)


def _fit_tasks(
    candidate: Candidate, tasks: Sequence[tuple[str, Scored]], cache: dict[tuple[int, Column], np.ndarray]
) -> tuple[Fitted, np.ndarray, np.ndarray]:
    """``candidate`` fitted on ``tasks`` pooled (each task weighted equally), with its scores and labels there."""
    x = np.concatenate([_matrix(s, candidate.columns, cache) for _, s in tasks])
    y = np.concatenate([s.labels for _, s in tasks])
    groups = np.concatenate([[i] * len(s.labels) for i, (_, s) in enumerate(tasks)])
    fitted = fit(candidate, x, y, _weights(groups))
    return fitted, fitted.score(x), y


def _outer(
    usable: Sequence[tuple[str, Scored]],
    t: int,
    pool: Sequence[Candidate],
    limit: float | None,
    cache: dict[tuple[int, Column], np.ndarray],
) -> Outer:
    name, target = usable[t]
    inner = [task for k, task in enumerate(usable) if k != t]
    best = leave_one_task_out(inner, pool, limit=limit, cache=cache)[0].candidate
    held = _apply(best, inner, target, limit, cache)
    reduced = best.without_energy() if best.energy else None
    ablation = _apply(reduced, inner, target, limit, cache).auroc if reduced else None
    return Outer(
        name, held.n, held.accuracy, best.name, held.auroc, held.false_flag_rate, held.recall, ablation,
        _best_baseline(target), _in_task(best, target, cache),
    )  # fmt: skip


def _in_task(candidate: Candidate, target: Scored, cache: dict[tuple[int, Column], np.ndarray]) -> float:
    """``candidate``'s stratified 5-fold cross-validated AUROC within ``target`` alone."""
    y = target.labels
    if min(int(y.sum()), int((~y).sum())) < 5:
        return math.nan
    x = _matrix(target, candidate.columns, cache)
    scores = np.empty(len(y))
    for train, test in StratifiedKFold(5, shuffle=True, random_state=0).split(x, y):
        scores[test] = fit(candidate, x[train], y[train]).score(x[test])
    return float(roc_auc_score(y, scores))


def _apply(
    candidate: Candidate,
    inner: Sequence[tuple[str, Scored]],
    target: Scored,
    limit: float | None,
    cache: dict[tuple[int, Column], np.ndarray],
) -> HeldOut:
    fitted, scores, y = _fit_tasks(candidate, inner, cache)
    x_t = _matrix(target, candidate.columns, cache)
    return _held_out("", fitted, scores, y, fitted.score(x_t), target.labels, limit)


def _best_baseline(scored: Scored) -> tuple[str, float]:
    """The best of the baselines ``evaluate`` prints, in their a-priori direction."""
    y = scored.labels
    if not 0 < y.sum() < len(y):
        return "n/a", math.nan
    found = [(name, float(roc_auc_score(y, scored.values(s)))) for name, s in BASELINES if s.localizer in scored.spans]
    return max(found, key=lambda f: f[1])


def _ship(
    usable: Sequence[tuple[str, Scored]],
    chosen: Result,
    ranked: Sequence[Result],
    goal: str,
    limit: float | None,
    model: ModelFingerprint | None,
    data: str,
) -> Calibration:
    candidate = chosen.candidate
    fitted, scores, y = _fit_tasks(candidate, usable, {})
    at = choose_threshold(scores, y, limit)
    pooled = bootstrap_auroc(scores, y)
    held = chosen.held_out
    selection = (
        f"{candidate.name}: best mean leave-one-task-out AUROC of {len(ranked)} candidates over {len(usable)} "
        f"dev tasks ({chosen.summary()}); on held-out tasks at their training threshold: false-flag rate "
        f"{np.mean([h.false_flag_rate for h in held]):.3f} (worst {max(h.false_flag_rate for h in held):.3f}), "
        f"recall {np.mean([h.recall for h in held]):.3f}"
    )
    report = Report(
        n=len(y),
        n_hallucinated=int(y.sum()),
        auroc=pooled.value,
        auroc_low=pooled.low,
        auroc_high=pooled.high,
        precision=at.precision,
        recall=at.recall,
        flag_rate=at.flag_rate,
        data=data,
        f1=at.f1,
        false_flag_rate=at.false_flag_rate,
        selection=selection,
    )
    return Calibration(
        model=model,
        localizer=candidate.columns[0].localizer,
        features=fitted.features(),
        bias=fitted.bias,
        threshold=at.threshold,
        goal=goal,
        report=report,
    )
