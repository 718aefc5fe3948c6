"""The runtime commands: ``demo``, ``ask`` and ``score``."""

from __future__ import annotations

import argparse
import json

from guardrail.cli.options import add_guard_options, build_guard
from guardrail.cli.render import console, print_verdict
from guardrail.validation import check_text
from guardrail.verdict import Verdict

__all__ = ["ask", "check", "configure_ask", "configure_check", "configure_demo", "demo"]

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


def _print_json(verdict: Verdict) -> None:
    print(json.dumps(verdict.to_dict(), indent=2, ensure_ascii=False))


def configure_demo(parser: argparse.ArgumentParser) -> None:
    """Options of ``spillguard demo``."""
    add_guard_options(parser)
    parser.add_argument("--tokens", action="store_true", help="per-token table for every answer")


def demo(args: argparse.Namespace) -> int:
    """Ten real questions, highlighted spans, verdicts, and how many verdicts were right."""
    console.print("spillguard demo: the bundled model answers real questions; its raw logits judge each answer.")
    guard = build_guard(args)
    console.print(f"model: {guard.fingerprint.name}   calibration: {guard.calibration.describe()}\n", markup=False)
    verdicts = guard.ask_batch([q for q, _ in DEMO_QUESTIONS])
    agree = 0
    for i, ((question, reference), verdict) in enumerate(zip(DEMO_QUESTIONS, verdicts, strict=True)):
        correct = reference.lower() in verdict.answer.lower()
        agree += (not correct) == verdict.hallucinated
        console.print(
            f"Q{i + 1}: {question}   (reference: {reference}; model is {'right' if correct else 'WRONG'})", markup=False
        )
        print_verdict(verdict, tokens=args.tokens or i == 0)
        console.print()
    console.print(
        f"{agree}/{len(verdicts)} verdicts agree with the reference answers "
        "(wrong answers flagged, right answers allowed)."
    )
    return 0


def configure_ask(parser: argparse.ArgumentParser) -> None:
    """Options of ``spillguard ask``."""
    parser.add_argument("question")
    add_guard_options(parser)
    parser.add_argument("--json", action="store_true", help="print the verdict as JSON")
    parser.add_argument("--tokens", action="store_true", help="per-token table")


def ask(args: argparse.Namespace) -> int:
    """Answer one question and judge the answer."""
    check_text("question", args.question)  # before the model loads
    verdict = build_guard(args).ask(args.question)
    if args.json:
        _print_json(verdict)
    else:
        console.print(f"Q: {args.question}", markup=False)
        print_verdict(verdict, tokens=args.tokens)
    return 0


def configure_check(parser: argparse.ArgumentParser) -> None:
    """Options of ``spillguard check`` (old name: ``score``)."""
    parser.add_argument("--prompt", required=True, help="the question or prompt")
    parser.add_argument("--answer", required=True, help="the answer text to score")
    parser.add_argument("--span", help="the exact answer inside --answer (default: the localizer's)")
    parser.add_argument("--raw", action="store_true", help="use --prompt as is, without the chat template")
    add_guard_options(parser)
    parser.add_argument("--json", action="store_true", help="print the verdict as JSON (the shape of `ask --json`)")


def check(args: argparse.Namespace) -> int:
    """Judge a given answer with one teacher-forced pass (``Guard.check``)."""
    check_text("prompt", args.prompt)
    check_text("answer", args.answer)
    if args.span is not None:
        check_text("span", args.span)
    verdict = build_guard(args).check(args.prompt, args.answer, span=args.span, raw=args.raw)
    if args.json:
        _print_json(verdict)
    else:
        print_verdict(verdict, tokens=True)
    return 0
