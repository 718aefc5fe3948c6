"""The ``spillguard`` parser and dispatch: one table of commands, one error policy.

Every :class:`~guardrail.SpillguardError` becomes ``spillguard: error: ...`` on stderr and exit
status 2 (argparse's own usage errors exit 2 too); a closed pipe (``spillguard ask --json | head``)
ends quietly.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from guardrail.cli import bench, runtime, serve, toolkit
from guardrail.errors import SpillguardError

__all__ = ["run"]

Command = tuple[Callable[[argparse.Namespace], int], Callable[[argparse.ArgumentParser], None], str]

COMMANDS: dict[str, Command] = {
    "demo": (
        runtime.demo,
        runtime.configure_demo,
        "ask the bundled model real questions and show answers, scores and verdicts",
    ),
    "ask": (runtime.ask, runtime.configure_ask, "answer one question and judge the answer"),
    "check": (runtime.check, runtime.configure_check, "judge a given answer with one teacher-forced pass"),
    "bench": (bench.run, bench.configure, "measure guarded vs plain generation (time and memory)"),
    "calibrate": (
        toolkit.calibrate,
        toolkit.configure_calibrate,
        "fit metric, pooling, direction, localizer and threshold on labelled data",
    ),
    "evaluate": (
        toolkit.evaluate,
        toolkit.configure_evaluate,
        "measure detection quality (AUROC, baselines, calibrated precision/recall)",
    ),
    "data": (toolkit.data, toolkit.configure_data, "fetch or list the labelled datasets"),
    "serve": (serve.run, serve.configure, "serve guarded chat completions over HTTP on Ray Serve (OpenAI-compatible)"),
}


ALIASES = {"check": ["score"]}  # `score` is the old name of `check`


def parser() -> argparse.ArgumentParser:
    """The ``spillguard`` argument parser with every subcommand."""
    top = argparse.ArgumentParser(
        prog="spillguard", description="Hallucination guardrail for local Hugging Face LLMs (spilled energy)."
    )
    commands = top.add_subparsers(required=True, metavar="COMMAND")
    for name, (command, configure, help_text) in COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text, aliases=ALIASES.get(name, []))
        configure(sub)
        sub.set_defaults(command=command)
    return top


def run(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the command; returns the exit status."""
    args = parser().parse_args(argv)
    try:
        return int(args.command(args))
    except SpillguardError as exc:
        print(f"spillguard: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away: stop quietly (Python docs, "Note on SIGPIPE")
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except OSError as exc:  # the file system refused (a name too long, a cache under a file): no traceback
        print(f"spillguard: error: {exc}", file=sys.stderr)
        return 2
