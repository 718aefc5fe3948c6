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

from guardrail.errors import InvalidInputError
from guardrail.localize import Span

__all__ = [
    "GROUNDING_METRICS",
    "GROUNDING_POOLING",
    "WHOLE_SPAN_NOTE",
    "GroundingMetric",
    "prompt_sources",
    "span_grounding",
    "ungrounded",
    "ungrounded_note",
]

GroundingMetric = Literal["ungrounded"]
GROUNDING_METRICS: tuple[str, ...] = get_args(GroundingMetric)
GROUNDING_POOLING = "max"
"""The one pooling a grounding feature takes: its value is the span's, not a token's."""

_WORD = re.compile(r"\w+")
# Scripts written without spaces between words (Han, kana, Thai, Lao, Myanmar, Khmer): one \w+ run
# there is a whole phrase, so a span in them is looked up as a substring instead.
_UNSPACED = re.compile("[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
WHOLE_SPAN_NOTE = "grounding not checked: the span is the whole answer, which is rarely copied word for word"
"""The note on a verdict of a grounded calibration whose span is the whole answer."""


def _normal(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold()


def _text(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise InvalidInputError(f"`{name}` must be a str, got {type(value).__name__}: {value!r}")
    return value


def ungrounded(span: str, sources: str) -> float:
    """``0.0`` when the words of ``span`` occur in ``sources`` as a contiguous run, else ``1.0``.

    Words are runs of letters and digits, compared case-folded after NFKC normalisation, so
    "St. Peter Port" is found in "... St Peter-Port ..." but "Peter" alone does not ground
    "St. Peter Port". A span in a script written without spaces (Chinese, Japanese, Thai, ...)
    is looked up as a substring, its words' characters run together. A span without any word
    (punctuation only) is ungrounded.
    """
    wanted, found = _WORD.findall(_normal(_text("span", span))), _WORD.findall(_normal(_text("sources", sources)))
    n = len(wanted)
    if n == 0:
        return 1.0
    if _UNSPACED.search(span):
        return 0.0 if "".join(wanted) in "".join(found) else 1.0
    first = wanted[0]
    for i, word in enumerate(found[: len(found) - n + 1]):
        if word == first and found[i : i + n] == wanted:
            return 0.0
    return 1.0


def span_grounding(span: Span, sources: str) -> tuple[float, str | None]:
    """The grounding feature's value for a localized span, and the note its verdict carries.

    ``(1.0, "ungrounded: ...")`` when :func:`ungrounded`, ``(0.0, None)`` when grounded, and
    ``(0.0, WHOLE_SPAN_NOTE)`` for a whole-answer span (``span.source`` starting with
    ``"whole"``: the ``whole`` localizer or a localizer's fallback to it), which is not checked:
    a whole answer is rarely copied word for word, and the other features still judge it.
    """
    if span.source.startswith("whole"):
        return 0.0, WHOLE_SPAN_NOTE
    if ungrounded(span.text, sources):
        return 1.0, ungrounded_note(span.text)
    return 0.0, None


def ungrounded_note(span: str) -> str:
    """The note on a verdict whose span is not in the prompt (see :attr:`guardrail.Attempt.notes`)."""
    return f"ungrounded: {span.strip()!r} is not written in the prompt"


def prompt_sources(prompt: str | Sequence[Mapping[str, Any]]) -> str:
    """The text an answer may be grounded in: a raw prompt as is, or the contents of the chat
    messages one per line — system, user and tool turns, not the assistant's (the model's own
    earlier answers ground nothing)."""
    if isinstance(prompt, str):
        return prompt
    parts = []
    for message in prompt if isinstance(prompt, Sequence) else (None,):
        if not isinstance(message, Mapping):
            raise InvalidInputError(f"`prompt` must be a str or a list of chat messages, got {prompt!r}")
        content = message.get("content")
        if message.get("role") != "assistant" and isinstance(content, str):
            parts.append(content)
    return "\n".join(parts)
