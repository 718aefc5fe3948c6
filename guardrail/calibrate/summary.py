"""The summary of an evaluation: AUROC of every scorer and baseline, the calibration's quality at
its threshold, and per-item records; as JSON-ready dicts and as plain-text tables."""

from __future__ import annotations

import math
from typing import Any

from guardrail.calibrate.metrics import bootstrap_auroc, risk_coverage, threshold_metrics
from guardrail.calibrate.runs import Record, Run
from guardrail.calibrate.scoring import BASELINES, Scored, Scorer, all_scorers
from guardrail.calibration import GROUNDING_ADDED, Calibration

__all__ = ["render", "render_selection", "retry_summary", "summarize"]


def _auroc_row(scored: Scored, scorer: Scorer) -> dict[str, Any]:
    result = bootstrap_auroc(scored.values(scorer), scored.labels)
    return {
        "scorer": scorer.name,
        "metric": scorer.metric,
        "pooling": scorer.pooling,
        "localizer": scorer.localizer,
        "direction": scorer.sign,
        "auroc": round(result.value, 4),
        "low": round(result.low, 4),
        "high": round(result.high, 4),
    }


def summarize(
    run: Run, scored: Scored, calibration: Calibration, *, given: bool
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The ``summary`` and ``items`` of an evaluation (AUROC undefined raises InvalidInputError)."""
    labels = scored.labels
    rows = sorted((_auroc_row(scored, s) for s in all_scorers(scored.spans)), key=lambda r: -r["auroc"])
    baselines = [{"name": name, **_auroc_row(scored, s)} for name, s in BASELINES if s.localizer in scored.spans]
    scores = scored.calibrated(calibration)
    cal = bootstrap_auroc(scores, labels)
    at = threshold_metrics(scores, labels, calibration.threshold)
    rc = risk_coverage(scores, labels, calibration.threshold)
    accuracy = rc.accuracy
    best = max(baselines, key=lambda b: b["auroc"]) if baselines else None
    summary: dict[str, Any] = {
        "dataset": run.dataset,
        "n": len(scored.records),
        "n_empty": len(run.records) - len(scored.records),
        "accuracy": round(float(1 - labels.mean()), 4),
        "generated": run.generated,
        "questions_per_second": round(run.questions_per_second, 2) if run.questions_per_second else None,
        "calibration": {
            "describe": calibration.describe(),
            "given": given,
            "auroc": round(cal.value, 4),
            "low": round(cal.low, 4),
            "high": round(cal.high, 4),
            **{k: round(v, 4) for k, v in at.__dict__.items()},
            "expected": _expected(calibration),
        },
        "risk_coverage": {
            "coverage": round(rc.coverage, 4),
            "selective_accuracy": _rounded(rc.selective_accuracy),
            "accuracy": round(accuracy, 4),
            "aurc": round(rc.aurc, 4),
            "aurc_random": round(1 - accuracy, 4),
            "aurc_optimal": round((1 - accuracy) + (accuracy * math.log(accuracy) if accuracy > 0 else 0.0), 4),
        },
        "best_baseline": None if best is None else {"name": best["name"], "auroc": best["auroc"]},
        "baselines": baselines,
        "scorers": rows,
    }
    if any(r.item.context is not None for r in scored.records):
        summary["rag"] = _rag(scored, scores > calibration.threshold)
    spans = scored.spans[calibration.localizer]
    items = [
        {
            "question": r.item.question,
            "answer": r.text,
            "correct": bool(not y),
            "score": _finite(s),
            "flagged": bool(s > calibration.threshold),
            "span": span.to_dict(),
        }
        for r, y, s, span in zip(scored.records, labels, scores, spans, strict=True)
    ]
    return summary, items


def _rag(scored: Scored, flagged: Any) -> dict[str, Any]:
    """RAG answers at the threshold: grounded correct ones flagged, unanswerable ones flagged."""

    def share(mask: list[bool]) -> float | None:
        chosen = [f for f, m in zip(flagged, mask, strict=True) if m]
        return round(sum(bool(f) for f in chosen) / len(chosen), 4) if chosen else None

    records = scored.records
    grounded = [r.item.context is not None and not r.item.unanswerable and r.correct for r in records]
    ungrounded = [r.item.context is not None and not r.item.unanswerable and not r.correct for r in records]
    unanswerable = [r.item.unanswerable for r in records]
    return {
        "grounded_correct": sum(grounded),
        "grounded_correct_flagged": share(grounded),
        "answerable_wrong": sum(ungrounded),
        "answerable_wrong_flagged": share(ungrounded),
        "unanswerable": sum(unanswerable),
        "unanswerable_refused": sum(r.item.unanswerable and r.correct for r in records),
        "unanswerable_flagged": share(unanswerable),
    }


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _rounded(value: float) -> float | None:
    return round(float(value), 4) if math.isfinite(value) else None


def _expected(calibration: Calibration) -> dict[str, Any] | None:
    """What the calibration file promises at its threshold (its dev measurements)."""
    report = calibration.report
    if report is None:
        return None
    return {
        "recall": round(report.recall, 4),
        "false_flag_rate": None if report.false_flag_rate is None else round(report.false_flag_rate, 4),
        "selection": report.selection,
        # with_grounding keeps the report of the detector it was added to, measured without it
        "before_grounding": calibration.grounded and GROUNDING_ADDED in (report.selection or ""),
    }


def retry_summary(records: list[Record], verdicts: list[Any]) -> dict[str, Any]:
    """Greedy vs final answers under a retry policy: accuracy, attempts, what was let through.

    ``records`` are the greedy answers (attempt 1), ``verdicts`` the retry policy's verdicts of
    the same items, in order.
    """
    greedy = [r.correct for r in records]
    final = [_graded(r, v.best.answer) for r, v in zip(records, verdicts, strict=True)]
    allowed = [not v.hallucinated for v in verdicts]
    through = [c for c, a in zip(final, allowed, strict=True) if a]
    return {
        "n": len(records),
        "greedy_accuracy": round(sum(greedy) / len(greedy), 4),
        "final_accuracy": round(sum(final) / len(final), 4),
        "mean_attempts": round(sum(len(v.attempts) for v in verdicts) / len(verdicts), 3),
        "allowed": round(sum(allowed) / len(allowed), 4),
        "accuracy_of_allowed": round(sum(through) / len(through), 4) if through else None,
    }


def _graded(record: Record, answer: str) -> bool:
    return Record(record.item, answer, record.scores).correct if answer.strip() else False


def render(summary: dict[str, Any]) -> str:
    """Plain-text tables of an evaluation summary."""
    cal = summary["calibration"]
    speed = f", {summary['questions_per_second']} questions/s" if summary["questions_per_second"] else ""
    lines = [
        f"{summary['dataset']}: {summary['n']} answers, {summary['accuracy']:.0%} correct{speed}",
        "",
        f"calibration: {cal['describe']}",
        f"  AUROC {cal['auroc']:.3f} [{cal['low']:.3f}, {cal['high']:.3f}]   at its threshold: precision "
        f"{cal['precision']:.2f} recall {cal['recall']:.2f} F1 {cal['f1']:.2f} flag rate {cal['flag_rate']:.2f} "
        f"false-flag rate {cal['false_flag_rate']:.2f}",
    ]
    if cal.get("expected"):
        exp = cal["expected"]
        ffr = "n/a" if exp["false_flag_rate"] is None else f"{exp['false_flag_rate']:.2f}"
        where = "dev tasks, before its grounding feature was added" if exp.get("before_grounding") else "dev tasks"
        lines.append(f"  the file expects ({where}): recall {exp['recall']:.2f}, false-flag rate {ffr}")
    rc = summary["risk_coverage"]
    through = "n/a" if rc["selective_accuracy"] is None else f"{rc['selective_accuracy']:.0%}"
    lines += [
        f"abstaining on flagged answers: {rc['coverage']:.0%} let through, {through} of them correct "
        f"(all answers: {rc['accuracy']:.0%}); AURC {rc['aurc']:.3f} (random {rc['aurc_random']:.3f}, "
        f"perfect {rc['aurc_optimal']:.3f})",
    ]
    if summary.get("rag"):
        rag = summary["rag"]

        def pct(value: float | None) -> str:
            return "n/a" if value is None else f"{value:.0%}"

        lines.append(
            f"RAG: {pct(rag['grounded_correct_flagged'])} of {rag['grounded_correct']} grounded correct answers "
            "flagged; "
            f"{pct(rag['unanswerable_flagged'])} of {rag['unanswerable']} unanswerable questions flagged "
            f"({rag['unanswerable_refused']} refused); {pct(rag['answerable_wrong_flagged'])} of "
            f"{rag['answerable_wrong']} wrong answers to answerable questions flagged"
        )
    if summary.get("retry"):
        rt = summary["retry"]
        allowed = "n/a" if rt["accuracy_of_allowed"] is None else f"{rt['accuracy_of_allowed']:.0%}"
        lines.append(
            f"retry policy: final answers {rt['final_accuracy']:.0%} correct vs greedy {rt['greedy_accuracy']:.0%}, "
            f"{rt['mean_attempts']:.2f} attempts on average; {rt['allowed']:.0%} allowed, {allowed} of them correct"
        )
    lines += ["", "baselines (AUROC, 95% bootstrap interval):"]
    lines += [
        f"  {b['auroc']:.3f} [{b['low']:.3f}, {b['high']:.3f}]  {b['name']:<26} {b['scorer']}"
        for b in summary["baselines"]
    ]
    lines += ["", "every metric × pooling × localizer (a-priori direction; AUROC < 0.5 means the reverse separates):"]
    lines += [f"  {r['auroc']:.3f} [{r['low']:.3f}, {r['high']:.3f}]  {r['scorer']}" for r in summary["scorers"]]
    if summary.get("report"):
        lines += ["", f"report: {summary['report']}"]
    return "\n".join(lines)


def _held_rows(result: Any, baselines: dict[str, tuple[str, float]] | None = None) -> list[str]:
    best = baselines or {}
    extra = "  best baseline (AUROC)" if best else ""
    rows = [f"    {'task':<34} {'n':>5} {'acc':>5} {'AUROC':>6} {'FFR':>5} {'recall':>6}{extra}"]
    for h in result.held_out:
        row = f"    {h.task:<34} {h.n:>5} {h.accuracy:>5.2f} {h.auroc:>6.3f} {h.false_flag_rate:>5.2f} {h.recall:>6.2f}"
        if h.task in best:
            row += f"  {best[h.task][1]:.3f} {best[h.task][0]}"
        rows.append(row)
    return rows


def render_selection(selection: Any, top: int = 15) -> str:
    """Plain-text account of a leave-one-task-out selection (:class:`~guardrail.calibrate.selection.Selection`)."""
    chosen, calibration = selection.chosen, selection.calibration
    lines = [
        f"leave-one-task-out over {len(selection.tasks)} dev tasks (each held out in turn, fitted on the others; "
        "threshold set on the others):",
        f"  top candidates of {len(selection.ranked)} (mean / worst held-out AUROC):",
    ]
    for result in selection.ranked[:top]:
        tag = "" if result.candidate.shippable else "   [research]"
        lines.append(f"    {result.mean:.3f} / {result.worst:.3f}  {result.candidate.name}{tag}")
    lines += [f"  chosen (best shippable): {chosen.candidate.name} ({chosen.summary()})", *_held_rows(chosen)]
    if selection.ablation is not None:
        lines.append(f"  ablation, {selection.ablation.candidate.name}: {selection.ablation.summary()}")
    else:
        lines.append("  ablation: the chosen detector uses no energy feature")
    best = {task: (name, value) for task, name, value in selection.baselines}
    for result in selection.tested:
        lines += [
            f"  on each task's test part, {result.candidate.name} ({result.summary()}):",
            *_held_rows(result, best),
        ]
    if selection.nested:
        rows = selection.nested
        lines += [
            "  nested leave-one-task-out (each task left out of the whole procedure: selection, fit, threshold):",
            f"    {'task':<34} {'n':>5} {'acc':>5} {'AUROC':>6} {'FFR':>5} {'recall':>6} {'no-energy':>9} "
            f"{'in-task':>7}  best baseline (AUROC)  chosen by the other tasks",
        ]
        for o in rows:
            ablation = "-" if o.ablation is None else f"{o.ablation:.3f}"
            lines.append(
                f"    {o.task:<34} {o.n:>5} {o.accuracy:>5.2f} {o.auroc:>6.3f} {o.false_flag_rate:>5.2f} "
                f"{o.recall:>6.2f} {ablation:>9} {o.in_task:>7.3f}  {o.baseline[1]:.3f} {o.baseline[0]}  {o.chosen}"
            )
        mean = sum(o.auroc for o in rows) / len(rows)
        lines.append(
            f"    mean AUROC {mean:.3f}; mean best baseline {sum(o.baseline[1] for o in rows) / len(rows):.3f}; "
            f"mean false-flag rate {sum(o.false_flag_rate for o in rows) / len(rows):.3f}, "
            f"mean recall {sum(o.recall for o in rows) / len(rows):.3f}"
        )
        lines.append(
            "    (in-task: the same detector fitted on that task itself, 5-fold cross-validated: what its features "
            "carry when the task is known)"
        )
    research = [r for r in selection.ranked if not r.candidate.shippable]
    if research:
        lines.append(f"  research candidates ({len(research)}; mean / worst held-out AUROC):")
        lines += [f"    {r.mean:.3f} / {r.worst:.3f}  {r.candidate.name}" for r in research]
    report = calibration.report
    lines.append(f"chosen: {calibration.describe()}")
    if report is not None:
        ffr = "n/a" if report.false_flag_rate is None else f"{report.false_flag_rate:.2f}"
        lines.append(
            f"at the threshold, on the {report.n} pooled dev answers ({report.n_hallucinated} wrong): expected recall "
            f"{report.recall:.2f}, false-flag rate {ffr}, precision {report.precision:.2f}, flag rate "
            f"{report.flag_rate:.2f}; AUROC {report.auroc:.3f} [{report.auroc_low:.3f}, {report.auroc_high:.3f}]"
        )
    return "\n".join(lines)
