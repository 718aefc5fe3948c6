"""The ``calibrate``, ``evaluate`` and ``data`` subcommands of ``spillguard`` (see ``docs/calibration.md``)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from guardrail.calibration import Calibration
from guardrail.datasets import DATASETS, Dataset, fetch_qa_wikidata, load
from guardrail.errors import InvalidInputError
from guardrail.evaluation import (
    BASELINES,
    Run,
    Scored,
    Scorer,
    all_scorers,
    bootstrap_auroc,
    generate,
    locate,
    standard_localizers,
    threshold_metrics,
)
from guardrail.fitting import DEFAULT_METRICS, fit
from guardrail.localize import LOCALIZERS

__all__ = ["calibrate", "configure_calibrate", "configure_data", "configure_evaluate", "data", "evaluate"]


def _say(message: str) -> None:
    print(message, file=sys.stderr)


# -- shared options ---------------------------------------------------------------------------


def _data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True,
                        help=f"dataset: {', '.join(DATASETS)}, a JSONL file, or several joined by '+'")
    parser.add_argument("--limit", type=int, help="seeded random sample of N items of each dataset")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample and the split (default 0)")
    parser.add_argument("--split", type=float, default=1.0,
                        help="fraction of each dataset in the validation part (default 1: all of it)")
    parser.add_argument("--model", help="local model directory or .gguf file (default: bundled SmolLM2-135M-Instruct)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--localizers", default="heuristic,whole",
                        help=f"comma-separated localizers to measure, of {', '.join(LOCALIZERS)} (default heuristic,whole)")
    parser.add_argument("--no-cache", action="store_true", help="neither read nor write the generation cache")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _dataset(args: argparse.Namespace, part: str) -> Dataset:
    """Each ``+``-joined dataset sampled and split on its own, then concatenated."""
    parts = []
    for spec in args.data.split("+"):
        dataset = load(spec, limit=args.limit, seed=args.seed)
        if args.split < 1.0:
            validation, test = dataset.split(args.split, args.seed)
            dataset = validation if part == "val" else test
        parts.append(dataset)
    if len(parts) == 1:
        return parts[0]
    return Dataset("+".join(p.name for p in parts), tuple(i for p in parts for i in p.items))


def _guard(args: argparse.Namespace, calibration: Calibration | None = None) -> Any:
    from guardrail.guard import Guard

    kwargs: dict[str, Any] = {"max_new_tokens": args.max_new_tokens}
    if calibration is not None or args.model or getattr(args, "calibration", "unused") == "unused":
        kwargs["calibration"] = calibration or Calibration.uncalibrated()  # else: the shipped default
    return Guard.from_pretrained(args.model, **kwargs) if args.model else Guard.default(**kwargs)


def _scored(args: argparse.Namespace, guard: Any, dataset: Dataset, extra: tuple[str, ...] = ()) -> tuple[Run, Scored]:
    names = tuple(dict.fromkeys([*(n.strip() for n in args.localizers.split(",") if n.strip()), *extra]))
    localizers = standard_localizers(guard, names)
    run = generate(guard, dataset, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                   cache=not args.no_cache, progress=not args.quiet)
    return run, locate(run.records, localizers, guard.tokenizer.decode)


# -- calibrate --------------------------------------------------------------------------------


def configure_calibrate(parser: argparse.ArgumentParser) -> None:
    """Options of ``spillguard calibrate``."""
    _data_options(parser)
    parser.add_argument("--out", required=True, help="calibration JSON file to write")
    parser.add_argument("--goal", default="f1", help="'f1' (default) or 'false-flag-rate=X', e.g. false-flag-rate=0.1")
    parser.add_argument("--metrics", default=",".join(DEFAULT_METRICS),
                        help=f"comma-separated candidate metrics; 'combined' is the logistic combination "
                             f"(default {','.join(DEFAULT_METRICS)}); add logprob to allow the baseline")


def calibrate(args: argparse.Namespace) -> int:
    """Fit a calibration on the validation part of ``--data`` and write it to ``--out``."""
    dataset = _dataset(args, "val")
    guard = _guard(args)
    _, scored = _scored(args, guard, dataset)
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    calibration, ranked = fit(scored, goal=args.goal, metrics=metrics, model=guard.fingerprint,
                              data=_describe_data(args, dataset, "validation"), seed=args.seed)
    calibration.save(args.out)
    report = calibration.report
    assert report is not None
    print(f"calibrated on {report.n} answers ({report.n_hallucinated} wrong) of {dataset.name}")
    for candidate in ranked[:8]:
        print(f"  {candidate.auroc.value:.3f} [{candidate.auroc.low:.3f}, {candidate.auroc.high:.3f}]  {candidate.name}")
    print(f"chosen: {calibration.describe()}")
    print(f"AUROC {report.auroc:.3f} [{report.auroc_low:.3f}, {report.auroc_high:.3f}]; at the threshold: "
          f"precision {report.precision:.2f}, recall {report.recall:.2f}, flag rate {report.flag_rate:.2f}")
    print(f"wrote {args.out}")
    return 0


def _describe_data(args: argparse.Namespace, dataset: Dataset, part: str) -> str:
    split = f", {part} part of a {args.split:g} split" if args.split < 1 else ""
    limit = f", limit {args.limit}" if args.limit else ""
    return f"{args.data} ({len(dataset)} items{limit}, seed {args.seed}{split})"


# -- evaluate ---------------------------------------------------------------------------------


def configure_evaluate(parser: argparse.ArgumentParser) -> None:
    """Options of ``spillguard evaluate``."""
    _data_options(parser)
    parser.add_argument("--part", choices=("val", "test"), default="test",
                        help="with --split < 1: which part to evaluate (default test, the held-out one)")
    parser.add_argument("--calibration", help="calibration JSON file: precision/recall/F1 at its threshold")
    parser.add_argument("--json", action="store_true", help="print {summary, items} as JSON")
    parser.add_argument("--report", metavar="DIR", help="write an HTML report with PNG figures to DIR")


def evaluate(args: argparse.Namespace) -> int:
    """AUROC of every scorer and baseline on ``--data``; with a calibration, its quality."""
    calibration = Calibration.load(args.calibration) if args.calibration else None
    dataset = _dataset(args, args.part)
    guard = _guard(args, calibration)
    calibration = guard.calibration
    run, scored = _scored(args, guard, dataset, extra=(calibration.localizer,))
    summary, items = summarize(run, scored, calibration, given=args.calibration is not None)
    summary["data"] = _describe_data(args, dataset, args.part)
    if args.report:
        from guardrail.report import write_report

        summary["report"] = str(write_report(Path(args.report), summary, scored, calibration))
    if args.json:
        print(json.dumps({"summary": summary, "items": items}, indent=2, ensure_ascii=False))
    else:
        print(render(summary))
    return 0


def _auroc_row(scored: Scored, scorer: Scorer) -> dict[str, Any]:
    result = bootstrap_auroc(scored.values(scorer), scored.labels)
    return {"scorer": scorer.name, "metric": scorer.metric, "pooling": scorer.pooling,
            "localizer": scorer.localizer, "direction": scorer.sign,
            "auroc": round(result.value, 4), "low": round(result.low, 4), "high": round(result.high, 4)}


def summarize(run: Run, scored: Scored, calibration: Calibration, *, given: bool) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The ``summary`` and ``items`` of an evaluation (AUROC undefined raises InvalidInputError)."""
    labels = scored.labels
    rows = sorted((_auroc_row(scored, s) for s in all_scorers(scored.spans)), key=lambda r: -r["auroc"])
    baselines = [{"name": name, **_auroc_row(scored, s)} for name, s in BASELINES if s.localizer in scored.spans]
    scores = scored.calibrated(calibration)
    cal = bootstrap_auroc(scores, labels)
    at = threshold_metrics(scores, labels, calibration.threshold)
    summary: dict[str, Any] = {
        "dataset": run.dataset, "n": len(scored.records), "n_empty": len(run.records) - len(scored.records),
        "accuracy": round(float(1 - labels.mean()), 4), "generated": run.generated,
        "questions_per_second": round(run.questions_per_second, 2) if run.questions_per_second else None,
        "calibration": {"describe": calibration.describe(), "given": given, "auroc": round(cal.value, 4),
                        "low": round(cal.low, 4), "high": round(cal.high, 4),
                        **{k: round(v, 4) for k, v in at.__dict__.items()}},
        "baselines": baselines, "scorers": rows,
    }
    spans = scored.spans[calibration.localizer]
    items = [{"question": r.item.question, "answer": r.text, "correct": bool(not y), "score": _finite(s),
              "flagged": bool(s > calibration.threshold), "span": span.to_dict()}
             for r, y, s, span in zip(scored.records, labels, scores, spans)]
    return summary, items


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def render(summary: dict[str, Any]) -> str:
    """Plain-text tables of an evaluation summary."""
    cal = summary["calibration"]
    speed = f", {summary['questions_per_second']} questions/s" if summary["questions_per_second"] else ""
    lines = [f"{summary['dataset']}: {summary['n']} answers, {summary['accuracy']:.0%} correct{speed}", "",
             f"calibration: {cal['describe']}",
             f"  AUROC {cal['auroc']:.3f} [{cal['low']:.3f}, {cal['high']:.3f}]   at its threshold: precision "
             f"{cal['precision']:.2f} recall {cal['recall']:.2f} F1 {cal['f1']:.2f} flag rate {cal['flag_rate']:.2f} "
             f"false-flag rate {cal['false_flag_rate']:.2f}", "", "baselines (AUROC, 95% bootstrap interval):"]
    lines += [f"  {b['auroc']:.3f} [{b['low']:.3f}, {b['high']:.3f}]  {b['name']:<26} {b['scorer']}" for b in summary["baselines"]]
    lines += ["", "every metric × pooling × localizer (a-priori direction; AUROC < 0.5 means the reverse separates):"]
    lines += [f"  {r['auroc']:.3f} [{r['low']:.3f}, {r['high']:.3f}]  {r['scorer']}" for r in summary["scorers"]]
    if summary.get("report"):
        lines += ["", f"report: {summary['report']}"]
    return "\n".join(lines)


# -- data ---------------------------------------------------------------------------------------


def configure_data(parser: argparse.ArgumentParser) -> None:
    """Options of ``spillguard data``."""
    parser.add_argument("action", choices=("fetch", "list"), help="fetch a dataset into the cache, or list datasets")
    parser.add_argument("name", nargs="?", help="for fetch: qa-wikidata")


def data(args: argparse.Namespace) -> int:
    """``data fetch qa-wikidata`` or ``data list``."""
    if args.action == "fetch":
        if args.name not in ("qa-wikidata", "qa_wikidata"):
            raise InvalidInputError(f"`name` must be qa-wikidata (the only dataset to fetch), got {args.name!r}")
        print(fetch_qa_wikidata())
        return 0
    for name in DATASETS:
        try:
            status = f"{len(load(name))} items"
        except InvalidInputError as exc:
            status = f"unavailable: {exc}"
        print(f"{name:<16} {status}")
    return 0
