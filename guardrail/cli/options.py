"""Options shared by the commands, and the one place a command builds its guard."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from transformers.utils import logging as hf_logging

from guardrail.calibration import Calibration
from guardrail.guard import Guard
from guardrail.localize import LOCALIZERS
from guardrail.policy import Policy

__all__ = ["add_guard_options", "add_model_option", "build_guard"]


def add_model_option(parser: argparse.ArgumentParser) -> None:
    """``--model``: a local model instead of the bundled one."""
    parser.add_argument("--model", help="local model directory or .gguf file (default: bundled SmolLM2-135M-Instruct)")


def add_guard_options(parser: argparse.ArgumentParser) -> None:
    """``--model``, ``--calibration``, ``--localizer``, ``--policy`` and ``--max-new-tokens``."""
    add_model_option(parser)
    parser.add_argument("--calibration", help="calibration JSON file (default: the bundled model's)")
    parser.add_argument("--localizer", choices=LOCALIZERS, help="answer localizer (default: the calibration's)")
    parser.add_argument("--policy", choices=("flag", "retry", "abstain"), default="flag")
    parser.add_argument("--max-new-tokens", type=int, default=64)


def build_guard(args: argparse.Namespace, *, calibration: Calibration | None = None) -> Guard:
    """The guard a command runs: ``--model`` or the bundled model, with its options.

    The calibration is, in order: ``calibration``, the ``--calibration`` file, the shipped
    default of the bundled model, or none (uncalibrated) for another model.
    """
    kwargs: dict[str, Any] = {"max_new_tokens": args.max_new_tokens}
    if getattr(args, "policy", None):
        kwargs["policy"] = Policy(on_hallucination=args.policy)
    if getattr(args, "localizer", None):
        kwargs["localizer"] = args.localizer
    if calibration is None and getattr(args, "calibration", None):
        calibration = Calibration.load(args.calibration)
    if calibration is not None:
        kwargs["calibration"] = calibration
    with _progress_bars(not getattr(args, "quiet", False)):
        return Guard.from_pretrained(args.model, **kwargs) if args.model else Guard.default(**kwargs)


@contextmanager
def _progress_bars(enabled: bool) -> Iterator[None]:
    """Hugging Face's own progress bars (the "Loading weights" bar) off while a ``--quiet``
    command loads its model; the switch is put back as it was."""
    was = hf_logging.is_progress_bar_enabled()
    if not enabled:
        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    try:
        yield
    finally:
        if was and not enabled:
            hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]
