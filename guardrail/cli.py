"""The ``spillguard`` command line: demo, ask, score, bench, calibrate, evaluate, data."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from guardrail import bench, commands
from guardrail.calibration import Calibration
from guardrail.errors import SpillguardError
from guardrail.guard import Guard
from guardrail.localize import LOCALIZERS
from guardrail.policy import Policy
from guardrail.verdict import Attempt, Verdict

__all__ = ["main"]

# Real questions with reference answers; the bundled 135M model gets some of them wrong.
DEMO_QUESTIONS: tuple[tuple[str, str], ...] = (
    ("What is the capital of Australia?", "Canberra"),
    ("What is the capital of Japan?", "Tokyo"),
    ("What is the capital of Mali?", "Bamako"),
    ("What is the capital of Egypt?", "Cairo"),
    ("What is the capital of Honduras?", "Tegucigalpa"),
    ("What is the capital of New Zealand?", "Wellington"),
    ("What is the capital of Paraguay?", "Asunción"),
    ("What is the capital of Kyrgyzstan?", "Bishkek"),
    ("What is the chemical symbol for gold?", "Au"),
    ("Who wrote the play Romeo and Juliet?", "Shakespeare"),
)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``spillguard`` command."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except SpillguardError as exc:
        print(f"spillguard: error: {exc}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spillguard", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    for name, (run, configure, help_text) in _COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        configure(sub)
        sub.set_defaults(run=run)
    return parser


def _guard_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="local model directory or .gguf file (default: bundled SmolLM2-135M-Instruct)")
    parser.add_argument("--calibration", help="calibration JSON file (default: the bundled model's)")
    parser.add_argument("--localizer", choices=LOCALIZERS, help="answer localizer (default: the calibration's)")
    parser.add_argument("--policy", choices=("flag", "retry", "abstain"), default="flag")
    parser.add_argument("--max-new-tokens", type=int, default=64)


def _guard(args: argparse.Namespace) -> Guard:
    kwargs: dict[str, Any] = {
        "localizer": args.localizer,
        "policy": Policy(on_hallucination=args.policy),
        "max_new_tokens": args.max_new_tokens,
    }
    if args.calibration:
        kwargs["calibration"] = Calibration.load(args.calibration)
    return Guard.from_pretrained(args.model, **kwargs) if args.model else Guard.default(**kwargs)


# -- rendering ---------------------------------------------------------------------------


def _color() -> bool:
    return sys.stdout.isatty() and "NO_COLOR" not in os.environ


def _highlight(attempt: Attempt) -> str:
    span, text = attempt.span, attempt.answer
    if span.stop == span.start:
        return text
    left, right = ("\033[1;4m", "\033[0m") if _color() else ("⟦", "⟧")
    return f"{text[: span.char_start]}{left}{span.text}{right}{text[span.char_end :]}"


def _verdict_line(verdict: Verdict) -> str:
    label = verdict.action.value.upper()
    if _color():
        label = f"\033[{'32' if label == 'ALLOW' else '31'}m{label}\033[0m"
    return f"score {verdict.score:+.2f} vs threshold {verdict.threshold:+.2f} -> {label}"


def _token_table(attempt: Attempt) -> str:
    rows = [f"    {'#':>3}  {'token':<16} {'ΔE':>8} {'logprob':>8} {'E_logit':>8} {'E_marg':>8}"]
    s = attempt.scores
    for i, token in enumerate(attempt.tokens):
        mark = "*" if attempt.span.start <= i < attempt.span.stop else " "
        rows.append(
            f"  {mark} {i:>3}  {token!r:<16} {s.spilled_energy[i]:>8.2f} {s.logprob[i]:>8.2f} "
            f"{s.logit_energy[i]:>8.2f} {s.marginal_energy[i]:>8.2f}"
        )
    return "\n".join(rows + ["    (* = scored span)"])


def _print_verdict(verdict: Verdict, *, tokens: bool) -> None:
    print(f"  answer : {_highlight(verdict.best)}")
    if verdict.text != verdict.answer:
        print(f"  returns: {verdict.text}")
    print(f"  verdict: {_verdict_line(verdict)}  [{len(verdict.attempts)} attempt(s)]")
    if tokens:
        print(_token_table(verdict.best))


# -- commands ----------------------------------------------------------------------------


def _configure_demo(parser: argparse.ArgumentParser) -> None:
    _guard_options(parser)
    parser.add_argument("--tokens", action="store_true", help="per-token table for every answer")


def _demo(args: argparse.Namespace) -> int:
    print("spillguard demo: the bundled model answers real questions; spilled energy judges each answer.")
    guard = _guard(args)
    print(f"model: {guard.fingerprint.name}   calibration: {guard.calibration.describe()}\n")
    verdicts = guard.ask_batch([q for q, _ in DEMO_QUESTIONS])
    caught = 0
    for i, ((question, reference), verdict) in enumerate(zip(DEMO_QUESTIONS, verdicts, strict=True)):
        correct = reference.lower() in verdict.answer.lower()
        caught += (not correct) == verdict.hallucinated
        print(f"Q{i + 1}: {question}   (reference: {reference}; model is {'right' if correct else 'WRONG'})")
        _print_verdict(verdict, tokens=args.tokens or i == 0)
        print()
    print(f"{caught}/{len(verdicts)} verdicts agree with the reference answers "
          "(wrong answers flagged, right answers allowed).")
    return 0


def _configure_ask(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("question")
    _guard_options(parser)
    parser.add_argument("--json", action="store_true", help="print the verdict as JSON")
    parser.add_argument("--tokens", action="store_true", help="per-token table")


def _ask(args: argparse.Namespace) -> int:
    verdict = _guard(args).ask(args.question)
    if args.json:
        print(json.dumps(verdict.to_dict(), indent=2, ensure_ascii=False))
    else:
        print(f"Q: {args.question}")
        _print_verdict(verdict, tokens=args.tokens)
    return 0


def _configure_score(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prompt", required=True, help="the question or prompt")
    parser.add_argument("--answer", required=True, help="the answer text to score")
    parser.add_argument("--span", help="the exact answer inside --answer (default: the localizer's)")
    parser.add_argument("--raw", action="store_true", help="use --prompt as is, without the chat template")
    _guard_options(parser)
    parser.add_argument("--json", action="store_true", help="print per-token scores as JSON")


def _score(args: argparse.Namespace) -> int:
    verdict = _guard(args).check(args.prompt, args.answer, span=args.span, raw=args.raw)
    if args.json:
        out = verdict.best.to_dict()
        out.update(threshold=verdict.threshold, action=verdict.action.value, calibration=verdict.calibration)
        print(json.dumps(out, indent=2, ensure_ascii=False))
    else:
        _print_verdict(verdict, tokens=True)
    return 0


_COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], Callable[[argparse.ArgumentParser], None], str]] = {
    "demo": (_demo, _configure_demo, "ask the bundled model real questions and show answers, scores and verdicts"),
    "ask": (_ask, _configure_ask, "answer one question and judge the answer"),
    "score": (_score, _configure_score, "score a given answer with one teacher-forced pass"),
    "bench": (bench.run, bench.configure, "measure guarded vs plain generation (time and memory)"),
    "calibrate": (commands.calibrate, commands.configure_calibrate, "fit metric, pooling, direction, localizer and threshold on labelled data"),
    "evaluate": (commands.evaluate, commands.configure_evaluate, "measure detection quality (AUROC, baselines, calibrated precision/recall)"),
    "data": (commands.data, commands.configure_data, "fetch or list the labelled datasets"),
}

if __name__ == "__main__":
    sys.exit(main())
