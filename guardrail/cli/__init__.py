"""The ``spillguard`` command line (extra ``spillguard[cli]``; toolkit commands need ``[calibrate]``).

Like httpx's CLI: when the extra is missing, :func:`main` prints how to install it instead of
failing with an ``ImportError``. The runtime never imports this package.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["main"]

INSTALL_HINT = "pip install 'spillguard[cli]'"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``spillguard`` command; returns the exit status."""
    try:
        from guardrail.cli.app import run
    except ImportError as exc:  # the [cli] extra (rich) is not installed
        print(
            f"spillguard: the command line needs its extra dependencies ({exc.name}): {INSTALL_HINT}", file=sys.stderr
        )
        return 1
    return run(argv)
