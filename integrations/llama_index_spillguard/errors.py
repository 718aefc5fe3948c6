"""Exceptions of the LlamaIndex integration (both are :class:`~guardrail.SpillguardError`)."""

from __future__ import annotations

from guardrail.errors import SpillguardError

__all__ = ["NoContextError", "NotGuardedError"]


class NotGuardedError(SpillguardError, TypeError):
    """The query engine's LLM is not a :class:`SpilledEnergyLLM`, so no answer can be judged.

    Raised instead of silently letting an unjudged answer through.
    """


class NoContextError(SpillguardError, LookupError):
    """The wrapped query engine retrieved no source node (an empty index?), so no answer was made."""
