"""Leave-one-task-out selection: candidates, held-out measurements, warnings, the shipped file."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from guardrail.calibrate.datasets import Item
from guardrail.calibrate.features import Column
from guardrail.calibrate.runs import Record
from guardrail.calibrate.scoring import BASELINES, Scored
from guardrail.calibrate.selection import (
    Candidate,
    TaskWarning,
    candidates,
    fit,
    leave_one_task_out,
    select,
    usable_tasks,
)
from guardrail.calibration import Calibration, ModelFingerprint
from guardrail.errors import CalibrationError
from guardrail.localize import Span
from guardrail.scores import TokenScores

MODEL = ModelFingerprint(name="m", vocab_size=10, tokenizer_sha256="a" * 64)


def _task(n: int, seed: int, *, wrong_every: int = 3, shift: float = 0.0) -> Scored:
    """Wrong answers have a low-probability token (an informative log-prob) and a task-specific
    offset of every logit (``shift``), which moves energies but not log-probs."""
    rng = np.random.default_rng(seed)
    records, heuristic, whole = [], [], []
    for i in range(n):
        wrong = wrong_every > 0 and i % wrong_every == 0
        lse = rng.normal(10 + shift, 0.5, 5)
        chosen = lse[:4] - rng.exponential(0.3, 4)
        if wrong:
            chosen[2] -= rng.uniform(1.0, 4.0)
        scores = TokenScores(np.arange(4), chosen, lse[:4], lse[1:], rng.uniform(0, 2, 4))
        records.append(Record(Item(f"q{seed}-{i}?", ("yes",)), "no b c d" if wrong else "yes b c d", scores))
        heuristic.append(Span(1, 3, 2, 5, "b c", "heuristic"))
        whole.append(Span(0, 4, 0, 9, "yes b c d", "whole"))
    offsets = [[(0, 3), (3, 5), (5, 7), (7, 9)] for _ in records]
    return Scored(records, {"heuristic": heuristic, "whole": whole}, offsets)


TASKS = [(f"t{k}", _task(60, k, shift=3.0 * k)) for k in range(3)]


def test_candidates_hold_every_baseline_and_research() -> None:
    pool = candidates(["heuristic", "whole"])
    singles = {c.columns[0] for c in pool if c.kind == "single"}
    for _, scorer in BASELINES:
        assert Column(scorer.metric, scorer.pooling, scorer.localizer) in singles
    assert any(not c.shippable for c in pool) and all(c.shippable for c in candidates(["whole"], research=False))
    mixed = next(c for c in pool if "@heuristic+whole" in c.name)
    assert not mixed.shippable and mixed.energy


def test_without_energy_drops_energy_columns() -> None:
    candidate = Candidate("x", (Column("spilled_energy", "min", "whole"), Column("logprob", "min", "whole")))
    reduced = candidate.without_energy()
    assert reduced is not None and reduced.kind == "single" and [c.metric for c in reduced.columns] == ["logprob"]
    assert Candidate("e", (Column("marginal_energy", "min", "whole"),), "single").without_energy() is None


def test_single_direction_is_learned_on_training_tasks() -> None:
    x = np.array([[0.0], [1.0], [2.0], [3.0]])
    y = np.array([True, True, False, False])
    fitted = fit(Candidate("c", (Column("logprob", "min", "whole"),), "single"), x, y)
    assert fitted.weights.tolist() == [-1.0] and (np.diff(fitted.score(x)) < 0).all()


def test_loto_holds_each_task_out_and_ranks_by_mean() -> None:
    pool = [
        Candidate("lp", (Column("logprob", "min", "heuristic"),), "single"),
        Candidate("noise", (Column("entropy", "mean", "whole"),), "single"),
    ]
    results = leave_one_task_out(TASKS, pool, limit=0.2)
    assert [r.candidate.name for r in results] == ["lp", "noise"]
    best = results[0]
    assert [h.task for h in best.held_out] == ["t0", "t1", "t2"] and best.mean > 0.9
    assert all(h.n == 60 and h.accuracy == pytest.approx(40 / 60) for h in best.held_out)
    assert all(0 <= h.false_flag_rate <= 1 and 0 <= h.recall <= 1 for h in best.held_out)


def test_energy_offset_across_tasks_is_what_loto_sees() -> None:
    """In-distribution the marginal energy of each task separates nothing, but pooled tasks do
    differ in it: a detector on it must not look good held out."""
    pool = [Candidate("me", (Column("marginal_energy", "mean", "whole"),), "single")]
    assert leave_one_task_out(TASKS, pool, limit=None)[0].mean < 0.7


def test_select_ships_a_loadable_calibration() -> None:
    test = [(name, _task(60, 10 + k, shift=3.0 * k)) for k, (name, _) in enumerate(TASKS)]
    chosen = select(
        TASKS, goal="false-flag-rate=0.15", limit=0.15, model=MODEL, data="synthetic", test=test, allowed=["logprob"]
    )
    calibration = chosen.calibration
    assert chosen.chosen.candidate.shippable and chosen.tasks == ("t0", "t1", "t2")
    assert calibration.goal == "false-flag-rate=0.15" and calibration.model == MODEL
    report = calibration.report
    assert report is not None and report.false_flag_rate is not None and report.false_flag_rate <= 0.15
    assert report.recall > 0.5 and "leave-one-task-out" in (report.selection or "")
    assert Calibration.model_validate_json(calibration.model_dump_json()) == calibration
    assert chosen.tested and chosen.tested[0].candidate == chosen.chosen.candidate
    # the shipped formula reproduces the fitted scores on a task
    _, scored = TASKS[0]
    values = scored.calibrated(calibration)
    assert np.isfinite(values).all()


def test_single_class_and_small_tasks_are_left_out_with_a_warning() -> None:
    tasks = [*TASKS, ("all-right", _task(40, 7, wrong_every=0)), ("tiny", _task(8, 8))]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        kept = usable_tasks(tasks)
    assert [n for n, _ in kept] == ["t0", "t1", "t2"]
    messages = [str(w.message) for w in caught if issubclass(w.category, TaskWarning)]
    assert any("'all-right'" in m and "single class" in m for m in messages)
    assert any("'tiny'" in m and "too small to hold out" in m for m in messages)


def test_too_few_usable_tasks_is_an_error() -> None:
    with pytest.warns(TaskWarning), pytest.raises(CalibrationError, match="at least 2 usable dev tasks"):
        usable_tasks([TASKS[0], ("tiny", _task(8, 8))])


def test_unreachable_false_flag_rate_is_an_error() -> None:
    """Every answer scores the same: flagging any wrong answer flags every correct one."""
    flat = [(name, _flat(scored)) for name, scored in TASKS]
    with pytest.raises(CalibrationError, match="no threshold flags any wrong answer"):
        select(flat, goal="false-flag-rate=0.1", limit=0.1, research=False, allowed=["logprob"])


def _flat(scored: Scored) -> Scored:
    same = TokenScores(np.arange(4), np.full(4, 9.0), np.full(4, 10.0), np.full(4, 10.0), np.ones(4))
    records = [Record(r.item, r.text, same) for r in scored.records]
    return Scored(records, scored.spans, scored.offsets)


def test_nested_leaves_each_task_out_of_the_whole_procedure() -> None:
    chosen = select(TASKS, goal="f1", limit=None, research=False, allowed=["logprob", "marginal_energy"], nested=True)
    rows = chosen.nested
    assert [o.task for o in rows] == ["t0", "t1", "t2"]
    for outer in rows:
        assert outer.n == 60 and outer.auroc > 0.9 and outer.chosen
        assert outer.baseline[0] and 0 <= outer.baseline[1] <= 1
        assert outer.ablation is None or 0 <= outer.ablation <= 1
        assert outer.in_task > 0.9  # fitted on the task itself, cross-validated


def _rag(scored: Scored, seed: int) -> Scored:
    """``scored``'s answers behind RAG prompts: a correct answer's span "b c" is in the passages,
    a wrong answer's is not; the log-probs are shuffled, so only grounding tells them apart."""
    rng = np.random.default_rng(seed)
    records = []
    for r, i in zip(scored.records, rng.permutation(len(scored.records)), strict=True):
        context = "passage: a b c d." if r.correct else "passage: a b x c."
        item = Item(r.item.question, r.item.answers, context=context, template="langchain")
        records.append(Record(item, r.text, scored.records[int(i)].scores))
    return Scored(records, scored.spans, scored.offsets)


RAG_TASKS = [(name, _rag(scored, k)) for k, (name, scored) in enumerate(TASKS)]


def test_grounding_candidates_are_offered_on_rag_tasks_only() -> None:
    names = {c.name for c in candidates(["heuristic"], research=False, grounding=True)}
    assert "ungrounded[max]@heuristic" in names and "paper+logprob@heuristic (l2=1) +grounding" in names
    pool = candidates(["heuristic"], research=False, grounding=True)
    alone = next(c for c in pool if c.name == "ungrounded[max]@heuristic")
    assert not alone.shippable  # measured beside the others; a file needs a raw-logit feature
    assert not any("grounding" in c.name for c in candidates(["heuristic"], research=False))
    assert not any("ungrounded" in c.name for c in candidates(["whole"], research=False, grounding=True))
    assert all(s.grounded_prompts for _, s in RAG_TASKS) and not TASKS[0][1].grounded_prompts
    chosen = select(TASKS, goal="f1", limit=None, research=False, allowed=["logprob", "ungrounded"])
    assert not chosen.calibration.grounded


def test_selection_on_rag_tasks_ships_the_grounding_feature() -> None:
    _, scored = RAG_TASKS[0]
    assert scored.ungrounded("heuristic").tolist() == [float(not r.correct) for r in scored.records]
    chosen = select(RAG_TASKS, goal="false-flag-rate=0.1", limit=0.1, research=False, allowed=["logprob", "ungrounded"])
    calibration = chosen.calibration
    assert calibration.grounded and any(c.metric == "ungrounded" for c in chosen.chosen.candidate.columns)
    assert chosen.chosen.mean > 0.99
    values = scored.calibrated(calibration)  # the runtime formula, with each record's prompt as sources
    assert (values[scored.labels] > calibration.threshold).all() and (
        values[~scored.labels] <= calibration.threshold
    ).all()
