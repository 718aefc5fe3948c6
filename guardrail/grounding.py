"""Grounding: whether the answer's span is written in the prompt the model was given.

In retrieval-augmented generation the answer should come from the retrieved passages. A small
model asked a question its passages cannot answer rarely refuses: it answers from memory, and
such an answer's names are not in the passages. ``ungrounded`` is the span-level signal for that:
``0.0`` when the span's words occur in the prompt in the same order and next to each other
(case, accents' composition, punctuation and spacing ignored), ``1.0`` when they do not.

It reads text, not logits, so it is not a per-token metric of :mod:`guardrail.energy`; a
:class:`~guardrail.Calibration` feature names it as metric ``"ungrounded"`` with pooling
``"max"`` (one value for the whole span). It only makes sense for prompts that carry the
sources of the answer: a closed-book question never holds its answer, so every answer to it is
ungrounded. The bundled ``rag`` calibration uses it; the closed-book default does not.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any, Literal, get_args

__all__ = [
    "GROUNDING_METRICS",
    "GROUNDING_POOLING",
    "GroundingMetric",
    "prompt_sources",
    "ungrounded",
    "ungrounded_note",
]

GroundingMetric = Literal["ungrounded"]
GROUNDING_METRICS: tuple[str, ...] = get_args(GroundingMetric)
GROUNDING_POOLING = "max"
"""The one pooling a grounding feature takes: its value is the span's, not a token's."""

_WORD = re.compile(r"\w+")


def _words(text: str) -> list[str]:
    return _WORD.findall(unicodedata.normalize("NFKC", text).casefold())


def ungrounded(span: str, sources: str) -> float:
    """``0.0`` when the words of ``span`` occur in ``sources`` as a contiguous run, else ``1.0``.

    Words are runs of letters and digits, compared case-folded after NFKC normalisation, so
    "St. Peter Port" is found in "... St Peter-Port ..." but "Peter" alone does not ground
    "St. Peter Port". A span without any word (punctuation only) is ungrounded.
    """
    wanted, found = _words(span), _words(sources)
    n = len(wanted)
    if n == 0:
        return 1.0
    first = wanted[0]
    for i, word in enumerate(found[: len(found) - n + 1]):
        if word == first and found[i : i + n] == wanted:
            return 0.0
    return 1.0


def ungrounded_note(span: str) -> str:
    """The note on a verdict whose span is not in the prompt (see :attr:`guardrail.Attempt.notes`)."""
    return f"ungrounded: {span.strip()!r} is not written in the prompt"


def prompt_sources(prompt: str | Sequence[Mapping[str, Any]]) -> str:
    """The text an answer may be grounded in: a raw prompt as is, or the contents of every chat
    message (system, user, assistant and tool turns), one per line."""
    if isinstance(prompt, str):
        return prompt
    return "\n".join(m["content"] for m in prompt if isinstance(m.get("content"), str))
