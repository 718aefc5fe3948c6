"""The toolkit commands: ``calibrate``, ``evaluate`` and ``data`` (see ``docs/calibration.md``).

Their options are defined here without the toolkit; the toolkit (extra ``spillguard[calibrate]``)
is imported when a command runs, so a missing extra is an install hint, not a traceback.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from types import ModuleType
from typing import Any

from guardrail.calibration import Calibration
from guardrail.cli.cluster import add_engine_options, make_engine  # --engine ray (issue 13)
from guardrail.cli.options import add_model_option, build_guard
from guardrail.errors import InvalidInputError, SpillguardError
from guardrail.localize import LOCALIZERS

__all__ = ["calibrate", "configure_calibrate", "configure_data", "configure_evaluate", "data", "evaluate"]

INSTALL_HINT = "pip install 'spillguard[calibrate]'"
DATA_HELP = (
    "dataset: capitals, qa-wikidata, quiz:TABLE, arithmetic[:D], arithmetic-forced[:D], a JSONL file, "
    "or several joined by '+' (`spillguard data list`)"
)


class ToolkitMissingError(SpillguardError):
    """The calibration toolkit's extra is not installed."""


def _toolkit() -> ModuleType:
    try:
        import guardrail.calibrate as toolkit
    except ImportError as exc:
        raise ToolkitMissingError(
            f"this command needs the calibration toolkit, whose dependency {exc.name!r} is missing: {INSTALL_HINT}"
        ) from exc
    return toolkit


# -- shared options ---------------------------------------------------------------------------


def _data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help=DATA_HELP)
    parser.add_argument("--limit", type=int, help="seeded random sample of N items of each dataset")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample and the split (default 0)")
    parser.add_argument(
        "--split",
        type=float,
        default=1.0,
        help="fraction of each dataset in the validation part (default 1: all of it)",
    )
    add_model_option(parser)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument(
        "--localizers",
        default="heuristic,whole",
        help=f"comma-separated localizers to measure, of {', '.join(LOCALIZERS)} (default heuristic,whole)",
    )
    parser.add_argument("--no-cache", action="store_true", help="neither read nor write the generation cache")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_engine_options(parser)  # --engine, --replicas, --cpus-per-replica, --gpus-per-replica, --address


def _selection(toolkit: ModuleType, args: argparse.Namespace, part: str) -> Any:
    return toolkit.select(args.data, limit=args.limit, seed=args.seed, split=args.split, part=part)


def _scored(
    toolkit: ModuleType, args: argparse.Namespace, guard: Any, dataset: Any, extra: tuple[str, ...] = ()
) -> Any:
    names = tuple(dict.fromkeys([*(n.strip() for n in args.localizers.split(",") if n.strip()), *extra]))
    localizers = toolkit.standard_localizers(guard, names)
    run = toolkit.generate(
        guard,
        dataset,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        cache=not args.no_cache,
        progress=not args.quiet,
        engine=make_engine(args, guard),
    )
    return run, toolkit.locate(run.records, localizers, guard.tokenizer.decode)


def _describe_data(args: argparse.Namespace, dataset: Any, part: str) -> str:
    split = f", {part} part of a {args.split:g} split" if args.split < 1 else ""
    limit = f", limit {args.limit}" if args.limit else ""
    return f"{args.data} ({len(dataset)} items{limit}, seed {args.seed}{split})"


# -- calibrate --------------------------------------------------------------------------------


def configure_calibrate(parser: argparse.ArgumentParser) -> None:
    """Options of ``spillguard calibrate``."""
    _data_options(parser)
    parser.add_argument("--out", required=True, help="calibration JSON file to write")
    parser.add_argument("--goal", default="f1", help="'f1' (default) or 'false-flag-rate=X', e.g. false-flag-rate=0.1")
    parser.add_argument(
        "--metrics",
        help="comma-separated candidate metrics; 'combined' is the logistic "
        "combination (default: the energy metrics and combined); add logprob to allow the baseline",
    )


def calibrate(args: argparse.Namespace) -> int:
    """Fit a calibration on the validation part of ``--data`` and write it to ``--out``."""
    toolkit = _toolkit()
    dataset = _selection(toolkit, args, "val")
    guard = build_guard(args, calibration=Calibration.uncalibrated())
    _, scored = _scored(toolkit, args, guard, dataset)
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else toolkit.DEFAULT_METRICS
    calibration, ranked = toolkit.fit(
        scored,
        goal=args.goal,
        metrics=metrics,
        model=guard.fingerprint,
        data=_describe_data(args, dataset, "validation"),
        seed=args.seed,
    )
    calibration.save(args.out)
    report = calibration.report
    assert report is not None
    print(f"calibrated on {report.n} answers ({report.n_hallucinated} wrong) of {dataset.name}")
    for candidate in ranked[:8]:
        print(f"  {candidate.auroc}  {candidate.name}")
    print(f"chosen: {calibration.describe()}")
    print(
        f"AUROC {report.auroc:.3f} [{report.auroc_low:.3f}, {report.auroc_high:.3f}]; at the threshold: "
        f"precision {report.precision:.2f}, recall {report.recall:.2f}, flag rate {report.flag_rate:.2f}"
    )
    print(f"wrote {args.out}")
    return 0


# -- evaluate ---------------------------------------------------------------------------------


def configure_evaluate(parser: argparse.ArgumentParser) -> None:
    """Options of ``spillguard evaluate``."""
    _data_options(parser)
    parser.add_argument(
        "--part",
        choices=("val", "test"),
        default="test",
        help="with --split < 1: which part to evaluate (default test, the held-out one)",
    )
    parser.add_argument("--calibration", help="calibration JSON file: precision/recall/F1 at its threshold")
    parser.add_argument("--json", action="store_true", help="print {summary, items} as JSON")
    parser.add_argument("--report", metavar="DIR", help="write an HTML report with PNG figures to DIR")


def evaluate(args: argparse.Namespace) -> int:
    """AUROC of every scorer and baseline on ``--data``; with a calibration, its quality."""
    toolkit = _toolkit()
    dataset = _selection(toolkit, args, args.part)
    guard = build_guard(args)
    calibration = guard.calibration
    run, scored = _scored(toolkit, args, guard, dataset, extra=(calibration.localizer,))
    summary, items = toolkit.summarize(run, scored, calibration, given=args.calibration is not None)
    summary["data"] = _describe_data(args, dataset, args.part)
    if args.report:
        from guardrail.calibrate.report import write_report

        summary["report"] = str(write_report(Path(args.report), summary, scored, calibration))
    if args.json:
        print(json.dumps({"summary": summary, "items": items}, indent=2, ensure_ascii=False))
    else:
        print(toolkit.render(summary))
    return 0


# -- data ---------------------------------------------------------------------------------------


def configure_data(parser: argparse.ArgumentParser) -> None:
    """Options of ``spillguard data``."""
    parser.add_argument("action", choices=("fetch", "list"), help="fetch a dataset into the cache, or list datasets")
    parser.add_argument("name", nargs="?", help="for fetch: qa-wikidata")


def data(args: argparse.Namespace) -> int:
    """``data fetch qa-wikidata`` or ``data list``."""
    toolkit = _toolkit()
    if args.action == "fetch":
        if args.name not in ("qa-wikidata", "qa_wikidata"):
            raise InvalidInputError(f"`name` must be qa-wikidata (the only dataset to fetch), got {args.name!r}")
        print(toolkit.fetch_qa_wikidata())
        return 0
    for name in toolkit.DATASETS:
        try:
            status = f"{len(toolkit.load(name))} items"
        except SpillguardError as exc:
            status = f"unavailable: {exc}"
        print(f"{name:<16} {status}")
    return 0
