"""The summary of an evaluation: AUROC of every scorer and baseline, the calibration's quality at
its threshold, and per-item records; as JSON-ready dicts and as plain-text tables."""

from __future__ import annotations

import math
from typing import Any

from guardrail.calibrate.metrics import bootstrap_auroc, threshold_metrics
from guardrail.calibrate.runs import Run
from guardrail.calibrate.scoring import BASELINES, Scored, Scorer, all_scorers
from guardrail.calibration import Calibration

__all__ = ["render", "summarize"]


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
        },
        "baselines": baselines,
        "scorers": rows,
    }
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


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


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
        "",
        "baselines (AUROC, 95% bootstrap interval):",
    ]
    lines += [
        f"  {b['auroc']:.3f} [{b['low']:.3f}, {b['high']:.3f}]  {b['name']:<26} {b['scorer']}"
        for b in summary["baselines"]
    ]
    lines += ["", "every metric × pooling × localizer (a-priori direction; AUROC < 0.5 means the reverse separates):"]
    lines += [f"  {r['auroc']:.3f} [{r['low']:.3f}, {r['high']:.3f}]  {r['scorer']}" for r in summary["scorers"]]
    if summary.get("report"):
        lines += ["", f"report: {summary['report']}"]
    return "\n".join(lines)
