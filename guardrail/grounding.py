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

import functools
import re
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any, Literal, get_args

from guardrail.errors import InvalidInputError
from guardrail.localize import Span
from guardrail.validation import check_str

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

# Scripts written without spaces between words (Han, kana, Thai, Lao, Myanmar, Khmer): one word
# run there is a whole phrase, so a span in them is looked up as a substring instead.
_UNSPACED = re.compile("[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_THOUSANDS = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?")
WHOLE_SPAN_NOTE = "grounding not checked: the span is the whole answer, which is rarely copied word for word"
"""The note on a verdict of a grounded calibration whose span is the whole answer."""


def _normal(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold()


@functools.cache
def _word_pattern() -> re.Pattern[str]:
    """A number with its decimal or thousands separators ("2.5", "1,000"; a sign is not kept: the
    localizers leave it out of the span), or a run of letters and digits *with their combining
    marks* (Python's ``\\w`` leaves out the Thai tone marks and Devanagari vowel signs that tell
    "ไข่" from "ไข้"). Built on first use (a scan of the code points, about 20 ms)."""
    planes = (range(0x20000), range(0xE0000, 0xE1000))
    marks = "".join(re.escape(chr(i)) for r in planes for i in r if unicodedata.category(chr(i))[0] == "M")
    return re.compile(rf"\d+(?:[.,]\d+)*(?![\w{marks}])|(?:\w|[{marks}])+")


def _words(text: str) -> list[str]:
    """The normalized words of ``text``; "1,000" and "1000" are the same number."""
    words = _word_pattern().findall(_normal(text))
    return [w.replace(",", "") if _THOUSANDS.fullmatch(w) else w for w in words]


def _spaced(char: str) -> bool:
    """A letter or digit of a script written with spaces between words."""
    return not _UNSPACED.match(char)


def _run(words: list[str]) -> str:
    """Words joined by one space, except between two characters of a script without spaces."""
    out = words[0]
    for word in words[1:]:
        out += word if not _spaced(out[-1]) and not _spaced(word[0]) else " " + word
    return out


def _in_unspaced(wanted: list[str], found: list[str]) -> bool:
    """Whether ``wanted`` occurs in ``found`` as a substring of their runs, not inside a word of a
    spaced script or a number ("5人" is not in "15人", "Ann 李" not in "Joann 李")."""
    span, text = _run(wanted), _run(found) if found else ""
    start = text.find(span)
    while start >= 0:
        end = start + len(span)
        glued_left = start > 0 and text[start - 1] != " " and _spaced(text[start - 1]) and _spaced(span[0])
        glued_right = end < len(text) and text[end] != " " and _spaced(text[end]) and _spaced(span[-1])
        if not (glued_left or glued_right):
            return True
        start = text.find(span, start + 1)
    return False


def ungrounded(span: str, sources: str) -> float:
    """``0.0`` when the words of ``span`` occur in ``sources`` as a contiguous run, else ``1.0``.

    Words are runs of letters and digits with their combining marks, compared case-folded after
    NFKC normalisation, so "St. Peter Port" is found in "... St Peter-Port ..." but "Peter" alone
    does not ground "St. Peter Port". A number keeps its decimal point ("5 million" is not in
    "2.5 million"); "1,000" and "1000" are the same. A span in a script written without spaces
    (Chinese, Japanese, Thai, ...) is looked up as a substring of the prompt's text, but not
    inside a number or a word of a spaced script. A span without any word (punctuation only) is
    ungrounded. A sign is not compared: "-40" is grounded by "40" (the localizers leave the sign
    out of the span).
    """
    wanted, found = _words(check_str("span", span)), _words(check_str("sources", sources))
    n = len(wanted)
    if n == 0:
        return 1.0
    if _UNSPACED.search(span):
        return 0.0 if _in_unspaced(wanted, found) else 1.0
    first = wanted[0]
    for i, word in enumerate(found[: len(found) - n + 1]):
        if word == first and found[i : i + n] == wanted:
            return 0.0
    return 1.0


def span_grounding(span: Span, sources: str) -> tuple[float, str | None]:
    """The grounding feature's value for a localized span, and the note its verdict carries.

    ``(1.0, "ungrounded: ...")`` when :func:`ungrounded`, ``(0.0, None)`` when grounded, and
    ``(0.0, WHOLE_SPAN_NOTE)`` for a whole-answer span (:attr:`Span.whole`: the ``whole``
    localizer or a localizer's fallback to it), which is not checked: a whole answer is rarely
    copied word for word, and the other features still judge it.
    """
    if span.whole:
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
