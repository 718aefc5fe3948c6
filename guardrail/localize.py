"""Answer localization: which answer tokens carry the answer.

Scoring only the exact-answer tokens instead of the whole generation is worth about 24 AUROC
points in the paper (Table 2). A localizer maps an answer text to a :class:`Span` of token
indices, given each token's character offsets in that text. Token offsets include any leading
space of the token, so a span that starts at "Paris" covers the token " Paris".

Localizers:

- :class:`ExplicitSpan` — the caller names the answer (a substring or character offsets).
- :class:`HeuristicLocalizer` — the first run of content words: words not copied from the
  question, not stop words, not punctuation ("The capital of France is **Paris**.").
- :class:`LLMExtractionLocalizer` — the paper's approach: the same model is asked to extract
  the short answer, which is mapped back to token offsets; falls back to the heuristic.
- :class:`WholeAnswer` — every token (the baseline).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from guardrail.errors import InvalidInputError

__all__ = [
    "LOCALIZERS",
    "ExplicitSpan",
    "HeuristicLocalizer",
    "LLMExtractionLocalizer",
    "Localizer",
    "Span",
    "WholeAnswer",
    "find_ignoring_case",
    "make_localizer",
    "token_offsets",
]

Offsets = Sequence[tuple[int, int]]

_WORD = re.compile(r"\w+(?:['’.\-]\w+)*")
_STOP_WORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for from
    further had has have having he her here hers herself him himself his how i if in into is it
    its itself just me more most my myself no nor not now of off on once only or other our ours
    ourselves out over own same she should so some such than that the their theirs them
    themselves then there these they this those through to too under until up very was we were
    what when where which while who whom why will with would you your yours yourself
    yourselves answer question called known named also located situated""".split()
)
_CONNECTORS = frozenset({"of", "de", "del", "du", "da", "la", "le", "el", "and", "upon", "on", "the"})


@dataclass(frozen=True)
class Span:
    """A contiguous run of answer tokens: indices ``start..stop-1`` and its characters.

    Attributes:
        start: first token index (inclusive).
        stop: last token index + 1; ``stop > start``.
        char_start: first character of the span in the answer text.
        char_end: one past its last character.
        text: the answer text of the span (``answer[char_start:char_end]``).
        source: which localizer produced it, e.g. ``"heuristic"`` or
            ``"heuristic (llm extraction failed)"``.
        whole: the span is the whole answer by construction (the ``whole`` localizer, or a
            localizer's fallback when it found nothing to localize), not a name or number found
            in it; the grounding check does not look such a span up.
    """

    start: int
    stop: int
    char_start: int
    char_end: int
    text: str
    source: str
    whole: bool = False

    @property
    def indices(self) -> range:
        """The token indices of the span."""
        return range(self.start, self.stop)

    def to_dict(self) -> dict[str, int | str]:
        """JSON-ready fields."""
        return {
            "start": self.start,
            "stop": self.stop,
            "char_start": self.char_start,
            "char_end": self.char_end,
            "text": self.text,
            "source": self.source,
            "whole": self.whole,
        }


class Localizer(Protocol):
    """Maps an answer to the span of tokens to score."""

    @property
    def name(self) -> str:
        """Short name, recorded in :attr:`Span.source`."""
        ...

    def locate(self, question: str, answer: str, offsets: Offsets) -> Span:
        """The span of ``answer`` to score; ``offsets[i]`` are token ``i``'s characters."""
        ...


def token_offsets(decode: Callable[[list[int]], str], token_ids: Sequence[int]) -> tuple[str, list[tuple[int, int]]]:
    """Decode ``token_ids`` and give each token's ``(start, end)`` characters in the text.

    Uses prefix decoding, so it works for any tokenizer (leading spaces, byte-level BPE).
    A token that completes a multi-byte character takes the whole character.
    """
    text = decode(list(token_ids))
    offsets: list[tuple[int, int]] = []
    previous = 0
    for i in range(1, len(token_ids) + 1):
        prefix = decode(list(token_ids[:i])).rstrip("\ufffd")
        end = max(previous, min(len(prefix), len(text)))
        offsets.append((previous, end))
        previous = end
    return text, offsets


def find_ignoring_case(text: str, needle: str) -> tuple[int, int] | None:
    """``(start, end)`` characters of the first case-insensitive occurrence of ``needle`` in ``text``.

    Offsets are those of ``text`` itself: lowercasing first would shift them wherever a
    character's lowercase form has another length ("İ" lowercases to two characters).
    """
    match = re.search(re.escape(needle), text, re.IGNORECASE)
    return None if match is None else (match.start(), match.end())


def _span_from_chars(answer: str, offsets: Offsets, start: int, end: int, source: str) -> Span | None:
    """Tokens overlapping characters ``[start, end)`` (ignoring whitespace-only tokens)."""
    hits = [
        i for i, (a, b) in enumerate(offsets) if a < end and b > start and answer[max(a, start) : min(b, end)].strip()
    ]
    if not hits:
        return None
    first, last = hits[0], hits[-1]
    char_start = max(offsets[first][0], start)
    char_end = min(offsets[last][1], end)
    return Span(first, last + 1, char_start, char_end, answer[char_start:char_end], source)


def _whole(answer: str, offsets: Offsets, source: str) -> Span:
    if not offsets:
        raise InvalidInputError("`answer` has no tokens: an empty answer cannot be scored")
    stripped = answer.strip() or answer
    start = answer.find(stripped)
    span = _span_from_chars(answer, offsets, start, start + len(stripped), source)
    return replace(span, whole=True) if span else Span(0, len(offsets), 0, len(answer), answer, source, whole=True)


@dataclass(frozen=True)
class WholeAnswer:
    """Every token of the answer (leading and trailing whitespace-only tokens aside)."""

    name: str = "whole"

    def locate(self, question: str, answer: str, offsets: Offsets) -> Span:
        return _whole(answer, offsets, self.name)


@dataclass(frozen=True)
class ExplicitSpan:
    """The caller names the answer: a ``substring`` of the answer, or ``chars=(start, end)``."""

    substring: str | None = None
    chars: tuple[int, int] | None = None
    name: str = "explicit"

    def __post_init__(self) -> None:
        if (self.substring is None) == (self.chars is None):
            raise InvalidInputError("give exactly one of `substring` and `chars` to ExplicitSpan")
        if self.substring is not None and not self.substring.strip():
            raise InvalidInputError(f"`substring` must contain a non-space character, got {self.substring!r}")
        if self.chars is not None and not 0 <= self.chars[0] < self.chars[1]:
            raise InvalidInputError(f"`chars` must satisfy 0 <= start < end, got {self.chars}")

    def locate(self, question: str, answer: str, offsets: Offsets) -> Span:
        if self.chars is not None:
            start, end = self.chars
            if end > len(answer):
                raise InvalidInputError(f"`chars`={self.chars} run past the answer ({len(answer)} characters)")
        else:
            assert self.substring is not None
            found = find_ignoring_case(answer, self.substring.strip())
            if found is None:
                raise InvalidInputError(f"`substring`={self.substring!r} does not occur in the answer {answer!r}")
            start, end = found
        span = _span_from_chars(answer, offsets, start, end, self.name)
        if span is None:
            raise InvalidInputError(f"characters {start}..{end} of {answer!r} cover no token")
        return span


@dataclass(frozen=True)
class HeuristicLocalizer:
    """The first run of content words of the answer, names and numbers first.

    A content word is not a stop word and does not occur in the question. The run starts at the
    first capitalized or numeric content word (the first content word if there is none) and
    extends over following content words, and over a connector ("of", "de", "and") that joins
    two capitalized words ("Port of Spain"). With no content word, the whole answer is scored.
    """

    name: str = "heuristic"

    def locate(self, question: str, answer: str, offsets: Offsets) -> Span:
        seen = {w.lower() for w in _WORD.findall(question)}
        words = list(_WORD.finditer(answer))
        content = [w.group().lower() not in _STOP_WORDS and w.group().lower() not in seen for w in words]
        if not any(content):
            return _whole(answer, offsets, f"whole ({self.name}: no content word)")
        named = [i for i, w in enumerate(words) if content[i] and (w.group()[0].isupper() or w.group()[0].isdigit())]
        first = named[0] if named else content.index(True)
        last = first
        while last + 1 < len(words):
            nxt = last + 1
            if content[nxt] and _adjacent(answer, words[last], words[nxt]):
                last = nxt
            elif _bridges(answer, words, content, last):
                last = nxt + 1
            else:
                break
        span = _span_from_chars(answer, offsets, words[first].start(), words[last].end(), self.name)
        return span or _whole(answer, offsets, f"whole ({self.name}: no token)")


def _adjacent(answer: str, left: re.Match[str], right: re.Match[str]) -> bool:
    """Only spaces (no punctuation, no line break) between two words."""
    gap = answer[left.end() : right.start()]
    return gap.strip() == "" and "\n" not in gap


def _bridges(answer: str, words: list[re.Match[str]], content: list[bool], last: int) -> bool:
    """``words[last+1]`` is a connector between capitalized ``words[last]`` and ``words[last+2]``."""
    if last + 2 >= len(words):
        return False
    left, mid, right = words[last], words[last + 1], words[last + 2]
    return (
        mid.group().lower() in _CONNECTORS
        and left.group()[:1].isupper()
        and right.group()[:1].isupper()
        and content[last + 2]
        and _adjacent(answer, left, mid)
        and _adjacent(answer, mid, right)
    )


# The paper's few-shot extraction prompt, verbatim.
_EXTRACTION_PROMPT = (
    "Extract from the following long answer the short answer, only the relevant tokens. If the long "
    "answer does not answer the question, output NO ANSWER.\n"
    "\n"
    "Q: Which musical featured the song The Street Where You Live?\n"
    'A: The song "The Street Where You Live" is from the Lerner and Loewe musical "My Fair Lady." It '
    "is one of the most famous songs from the show, and it is sung by Professor Henry Higgins as he "
    "reflects on the transformation of Eliza Doolittle.\n"
    "Exact answer: My Fair Lady\n"
    "\n"
    "Q: Which Swedish actress won the Best Supporting Actress Oscar for Murder on the Orient "
    "Express?\n"
    "A: I'm glad you asked about a Swedish actress who won an Oscar for \"Murder on the Orient "
    'Express," but I must clarify that there seems to be a misunderstanding here. No Swedish actress '
    "has won an Oscar for Best Supporting Actress for that film.\n"
    "Exact answer: NO ANSWER\n"
    "\n"
    "Q: {question}\n"
    "A: {answer}\n"
    "Exact answer:"
)


@dataclass(frozen=True)
class LLMExtractionLocalizer:
    """The paper's localizer: the model extracts the short answer (one extra generation).

    Args:
        complete: ``prompt -> continuation`` with the same model, greedy and short; the guard
            supplies it.
        fallback: used when the extraction is ``NO ANSWER`` or not a substring of the answer.
    """

    complete: Callable[[str], str]
    fallback: Localizer = HeuristicLocalizer()
    name: str = "llm"

    def locate(self, question: str, answer: str, offsets: Offsets) -> Span:
        raw = self.complete(_EXTRACTION_PROMPT.format(question=question, answer=answer))
        extracted = raw.strip().splitlines()[0].strip().strip(".\"'") if raw.strip() else ""
        found = find_ignoring_case(answer, extracted) if extracted and "NO ANSWER" not in extracted.upper() else None
        if found is not None:
            span = _span_from_chars(answer, offsets, *found, self.name)
            if span is not None:
                return span
        span = self.fallback.locate(question, answer, offsets)
        return replace(span, source=f"{span.source} ({self.name} extraction failed: {extracted!r})")


LOCALIZERS: tuple[str, ...] = ("heuristic", "llm", "whole")


def make_localizer(localizer: str | Localizer, complete: Callable[[str], str] | None = None) -> Localizer:
    """A localizer by name (:data:`LOCALIZERS`), or ``localizer`` itself when it is one.

    Args:
        localizer: a name or an object with ``name`` and ``locate``.
        complete: the model's short greedy completion, needed by ``"llm"``.
    """
    if isinstance(localizer, str):
        if localizer == "heuristic":
            return HeuristicLocalizer()
        if localizer == "whole":
            return WholeAnswer()
        if localizer == "llm" and complete is not None:
            return LLMExtractionLocalizer(complete)
        if localizer == "llm":
            raise InvalidInputError("the `llm` localizer needs the model's completion function (`complete`)")
    elif callable(getattr(localizer, "locate", None)) and isinstance(getattr(localizer, "name", None), str):
        return localizer
    raise InvalidInputError(f"`localizer` must be one of {LOCALIZERS} or a Localizer, got {localizer!r}")
