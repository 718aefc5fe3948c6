"""The toolkit commands: ``calibrate``, ``evaluate`` and ``data`` (see ``docs/calibration.md``).

Their options are defined here without the toolkit; the toolkit (extra ``spillguard[calibrate]``)
is imported when a command runs, so a missing extra is an install hint, not a traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

from guardrail.calibration import Calibration
from guardrail.cli.cluster import add_engine_options, make_engine  # --engine ray (issue 13)
from guardrail.cli.options import add_model_option, build_guard
from guardrail.errors import InvalidInputError, SpillguardError
from guardrail.localize import LOCALIZERS
from guardrail.policy import Policy
from guardrail.validation import check_text

__all__ = ["calibrate", "configure_calibrate", "configure_data", "configure_evaluate", "data", "evaluate"]

INSTALL_HINT = "pip install 'spillguard[calibrate]'"
DATA_HELP = (
    "dataset: capitals, countries:FIELD, qa-wikidata, general-knowledge, periodic-elements, object-counting, "
    "quiz:TABLE, arithmetic[:D], arithmetic-forced[:D], rag:SOURCE, a JSONL file, or several joined by '+', "
    "each optionally NAME@N for a sample of N (`spillguard data list`)"
)
DEFAULT_GOAL = "false-flag-rate=0.15"


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
    parser.add_argument(
        "--batch-size",
        type=int,
        default=32,
        help="questions per left-padded generation batch (default 32; larger is faster on CPU, same answers)",
    )
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        default=32,
        help="answer length limit in tokens (default 32, as for the bundled calibrations)",
    )
    parser.add_argument(
        "--localizers",
        default="heuristic,whole",
        help=f"comma-separated localizers to measure, of {', '.join(LOCALIZERS)} (default heuristic,whole)",
    )
    parser.add_argument(
        "--template",
        help="prompt shape of JSONL rows with a `context` (llamaindex, langchain, langchain-system, or a format "
        "string with {context} and {question}); rows may name their own",
    )
    parser.add_argument("--no-cache", action="store_true", help="neither read nor write the generation cache")
    parser.add_argument("--quiet", action="store_true", help="no progress bars (model loading, generation)")
    add_engine_options(parser)  # --engine, --replicas, --cpus-per-replica, --gpus-per-replica, --address


def _check_args(args: argparse.Namespace) -> None:
    """Every option checked before a model loads or anything is generated."""
    for name in ("data", "localizers", "template", "goal", "metrics", "out", "report", "calibration", "model"):
        value = getattr(args, name, None)
        if value is not None:
            check_text(f"--{name}", value)
    if not 0 < args.split <= 1 or math.isnan(args.split):
        raise InvalidInputError(f"`--split` must be a fraction in (0, 1] (1: no split), got {args.split!r}")
    for name in ("batch_size", "max_new_tokens", "limit"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise InvalidInputError(f"`--{name.replace('_', '-')}` must be an int >= 1, got {value!r}")
    if getattr(args, "seed", 0) < 0:
        raise InvalidInputError(f"`--seed` must be an int >= 0, got {args.seed!r}")
    if getattr(args, "out", None):
        _check_writable(Path(args.out), "--out", folder=False)
    if getattr(args, "report", None):
        _check_writable(Path(args.report), "--report", folder=True)


def _check_writable(path: Path, option: str, *, folder: bool) -> None:
    """``path`` can be written (a file, or a folder created if missing), checked up front."""
    parent = path if folder and path.exists() else path.parent
    if path.exists() and (path.is_dir() != folder or not os.access(path, os.W_OK)):
        kind = "a writable folder" if folder else "a writable file"
        raise InvalidInputError(f"`{option}` {str(path)!r} is not {kind}")
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise InvalidInputError(f"`{option}` {str(path)!r}: folder {str(parent)!r} does not exist or is not writable")


def _tasks(toolkit: ModuleType, args: argparse.Namespace, part: str) -> list[Any]:
    return list(
        toolkit.tasks(args.data, limit=args.limit, seed=args.seed, split=args.split, part=part, template=args.template)
    )


def _selection(toolkit: ModuleType, args: argparse.Namespace, part: str) -> Any:
    return toolkit.select(
        args.data, limit=args.limit, seed=args.seed, split=args.split, part=part, template=args.template
    )


def _localizers(toolkit: ModuleType, args: argparse.Namespace, guard: Any, extra: tuple[str, ...] = ()) -> Any:
    names = tuple(dict.fromkeys([*(n.strip() for n in args.localizers.split(",") if n.strip()), *extra]))
    return toolkit.standard_localizers(guard, names)


def _scored(
    toolkit: ModuleType, args: argparse.Namespace, guard: Any, dataset: Any, extra: tuple[str, ...] = ()
) -> Any:
    localizers = _localizers(toolkit, args, guard, extra)
    run = _run(toolkit, args, guard, dataset)
    return run, toolkit.locate(run.records, localizers, guard.tokenizer.decode)


def _describe_data(args: argparse.Namespace, items: int, part: str) -> str:
    split = f", {part} part of a {args.split:g} split" if args.split < 1 else ""
    limit = f", limit {args.limit}" if args.limit else ""
    return f"{args.data} ({items} items{limit}, seed {args.seed}{split})"


def _print_warnings(caught: list[warnings.WarningMessage]) -> None:
    for warning in caught:
        print(f"warning: {warning.message}")


# -- calibrate --------------------------------------------------------------------------------


def configure_calibrate(parser: argparse.ArgumentParser) -> None:
    """Options of ``spillguard calibrate``."""
    _data_options(parser)
    parser.add_argument("--out", required=True, help="calibration JSON file to write")
    parser.add_argument(
        "--goal",
        default=DEFAULT_GOAL,
        help=f"threshold goal: 'false-flag-rate=X' (flag at most a fraction X of correct answers; default "
        f"{DEFAULT_GOAL.split('=')[1]}) or 'f1'",
    )
    parser.add_argument(
        "--select",
        choices=("loto", "cv"),
        help="how the detector is chosen: 'loto' (leave-one-task-out over the '+'-joined tasks; the default "
        "with two tasks or more) or 'cv' (in-distribution cross-validation; the default for one task)",
    )
    parser.add_argument(
        "--metrics",
        help="comma-separated metrics the candidates may use (default: all); with --select cv: candidate "
        "metrics, 'combined' being the logistic combination (default: the energy metrics and combined)",
    )
    parser.add_argument(
        "--no-research", action="store_true", help="with loto: skip the candidates a calibration file cannot hold"
    )
    parser.add_argument(
        "--nested",
        action="store_true",
        help="with loto: also measure the whole procedure on each task left out of it entirely (slower)",
    )


def calibrate(args: argparse.Namespace) -> int:
    """Fit a calibration on the validation part of ``--data`` and write it to ``--out``."""
    _check_args(args)
    toolkit = _toolkit()
    limit = toolkit.parse_goal(args.goal)
    parts = _tasks(toolkit, args, "val")
    mode = args.select or ("loto" if len(parts) > 1 else "cv")
    if mode == "loto" and len(parts) < 2:
        raise InvalidInputError(f"`--select loto` needs several tasks joined by '+', got {args.data!r}")
    guard = build_guard(args, calibration=Calibration.uncalibrated())
    if mode == "cv":
        return _calibrate_cv(toolkit, args, guard, _selection(toolkit, args, "val"))
    localizers = _localizers(toolkit, args, guard)
    scored = [(p.name, _located(toolkit, args, guard, p, localizers)) for p in parts]
    test = None
    if args.split < 1:
        test = [
            (p.name, _located(toolkit, args, guard, t, localizers))
            for p, t in zip(parts, _tasks(toolkit, args, "test"), strict=True)
        ]
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", toolkit.TaskWarning)
        chosen = toolkit.select_detector(
            scored,
            goal=args.goal,
            limit=limit,
            model=guard.fingerprint,
            data=_describe_data(args, sum(len(p) for p in parts), "validation"),
            test=test,
            research=not args.no_research,
            allowed=metrics,
            nested=args.nested,
        )
    _print_warnings(caught)
    chosen.calibration.save(args.out)
    print(toolkit.render_selection(chosen))
    print(f"wrote {args.out}")
    return 0


def _run(toolkit: ModuleType, args: argparse.Namespace, guard: Any, dataset: Any) -> Any:
    return toolkit.generate(
        guard,
        dataset,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        cache=not args.no_cache,
        progress=not args.quiet,
        engine=make_engine(args, guard),
    )


def _located(toolkit: ModuleType, args: argparse.Namespace, guard: Any, dataset: Any, localizers: Any) -> Any:
    run = _run(toolkit, args, guard, dataset)
    return toolkit.locate(run.records, localizers, guard.tokenizer.decode)


def _calibrate_cv(toolkit: ModuleType, args: argparse.Namespace, guard: Any, dataset: Any) -> int:
    _, scored = _scored(toolkit, args, guard, dataset)
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else toolkit.DEFAULT_METRICS
    calibration, ranked = toolkit.fit(
        scored,
        goal=args.goal,
        metrics=metrics,
        model=guard.fingerprint,
        data=_describe_data(args, len(dataset), "validation"),
        seed=args.seed,
    )
    calibration.save(args.out)
    report = calibration.report
    assert report is not None
    print(f"calibrated on {report.n} answers ({report.n_hallucinated} wrong) of {dataset.name}")
    for candidate in ranked[:8]:
        print(f"  {candidate.auroc}  {candidate.name}")
    print(f"chosen: {calibration.describe()}")
    ffr = "n/a" if report.false_flag_rate is None else f"{report.false_flag_rate:.2f}"
    print(
        f"AUROC {report.auroc:.3f} [{report.auroc_low:.3f}, {report.auroc_high:.3f}]; at the threshold: "
        f"precision {report.precision:.2f}, expected recall {report.recall:.2f}, false-flag rate {ffr}, "
        f"flag rate {report.flag_rate:.2f}"
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
    parser.add_argument(
        "--policy",
        choices=("flag", "retry"),
        default="flag",
        help="'retry': also answer every question under a retry policy (not cached) and report the accuracy "
        "of the final answers against greedy and the mean number of attempts",
    )
    parser.add_argument("--max-attempts", type=int, default=3, help="attempts in all under --policy retry (2-5)")
    parser.add_argument("--json", action="store_true", help="print {summary, items} as JSON")
    parser.add_argument("--report", metavar="DIR", help="write an HTML report with PNG figures to DIR")


def evaluate(args: argparse.Namespace) -> int:
    """AUROC of every scorer and baseline on ``--data``; with a calibration, its quality."""
    _check_args(args)
    policy = Policy(on_hallucination="retry", max_attempts=args.max_attempts) if args.policy == "retry" else None
    toolkit = _toolkit()
    dataset = _selection(toolkit, args, args.part)
    args.policy = None  # the greedy run is judged under `flag`; the retry run gets `policy`
    guard = build_guard(args)
    calibration = guard.calibration
    run, scored = _scored(toolkit, args, guard, dataset, extra=(calibration.localizer,))
    summary, items = toolkit.summarize(run, scored, calibration, given=args.calibration is not None)
    summary["data"] = _describe_data(args, len(dataset), args.part)
    if policy is not None:
        verdicts = toolkit.retry_verdicts(
            guard.with_policy(policy),
            scored.records,
            batch_size=args.batch_size,
            max_new_tokens=args.max_new_tokens,
        )
        summary["retry"] = {"max_attempts": policy.max_attempts, **toolkit.retry_summary(scored.records, verdicts)}
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
    parser.add_argument("name", nargs="?", help="for fetch: bigbench (old name: qa-wikidata)")
    parser.add_argument(
        "--archive",
        help="for fetch: a downloaded bigbench-1.0.0.tar.gz to read instead of the package index (its SHA-256 "
        "is checked the same way)",
    )


def data(args: argparse.Namespace) -> int:
    """``data fetch bigbench`` or ``data list``."""
    toolkit = _toolkit()
    if args.action == "fetch":
        if args.name not in ("bigbench", "qa-wikidata", "qa_wikidata"):
            raise InvalidInputError(f"`name` must be bigbench (the only source to fetch), got {args.name!r}")
        if args.archive is not None:
            check_text("--archive", args.archive)
        print(toolkit.fetch_bigbench(archive=Path(args.archive) if args.archive else None))
        return 0
    for name in toolkit.DATASETS:
        try:
            status = f"{len(toolkit.load(name))} items"
        except SpillguardError as exc:
            status = f"unavailable: {exc}"
        print(f"{name:<16} {status}")
    return 0
