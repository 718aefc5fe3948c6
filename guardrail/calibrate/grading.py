"""Grading answers against reference answers: normalized, whole-word alias matching.

An answer is correct when some reference (or alias) occurs in it as a run of whole words after
normalization (case, accents, punctuation and the articles "a", "an", "the" removed), and the
answer does not hedge between several candidates ("Sydney or Canberra"). Numbers are graded
exactly by :func:`grade_number`, on the first number the question does not already hold.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

__all__ = ["contains", "grade", "grade_number", "normalize", "refuses"]

_ARTICLES = frozenset({"a", "an", "the"})
_HEDGES = frozenset({"or", "either", "maybe", "perhaps", "possibly"})
_APOSTROPHES = re.compile(r"['’`´]")
_NON_WORD = re.compile(r"[^\w]+")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_WORDS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty"
).split()
_NUMBER_WORD = re.compile(r"\b(" + "|".join(_WORDS) + r")\b", re.IGNORECASE)
_REFUSAL = re.compile(
    r"\b(?:(?:i|we) (?:do not|don't|cannot|can't) (?:know|tell|say|answer|find|determine)"
    r"|(?:is|are|was|were) not (?:mentioned|given|provided|stated|specified|known|available|included)"
    r"|(?:does|do|did) not (?:mention|say|state|specify|provide|contain|include|give|tell)"
    r"|doesn't (?:mention|say|state|specify|provide|contain|include|give|tell)"
    r"|no (?:information|mention|answer|data)|not enough information"
    r"|(?:cannot|can't|unable to) (?:be )?(?:answer|determine|find|tell)"
    r"|unknown|not possible to (?:answer|determine|say|tell))",
    re.IGNORECASE,
)


def normalize(text: str) -> str:
    """Lower-case words without accents, punctuation or articles, joined by single spaces.

    >>> normalize("The Hague!")
    'hague'
    >>> normalize("St. John's")
    'st johns'
    """
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()
    words = _NON_WORD.sub(" ", _APOSTROPHES.sub("", plain)).replace("_", " ").split()
    return " ".join(w for w in words if w not in _ARTICLES)


def _positions(words: list[str], phrase: list[str]) -> list[int]:
    """Start indices of ``phrase`` as a run of whole words in ``words``."""
    n = len(phrase)
    return [i for i in range(len(words) - n + 1) if words[i : i + n] == phrase]


def contains(answer: str, reference: str) -> bool:
    """Whether normalized ``reference`` occurs in normalized ``answer`` as whole words."""
    phrase = normalize(reference).split()
    return bool(phrase) and bool(_positions(normalize(answer).split(), phrase))


def _hedged(words: list[str], start: int, stop: int, window: int = 3) -> bool:
    """A hedge word ("or", "either", ...) within ``window`` words of the match."""
    near = words[max(0, start - window) : start] + words[stop : stop + window]
    return any(w in _HEDGES for w in near)


def grade(answer: str, references: Sequence[str]) -> bool:
    """Whether ``answer`` names one of ``references`` and does not hedge between candidates.

    Args:
        answer: the model's answer text.
        references: the reference answer and its aliases; any one of them counts.

    Returns:
        ``True`` when some reference occurs as whole words in the normalized answer with no
        hedge ("or", "either", "maybe", ...) within three words of it.
    """
    words = normalize(answer).split()
    found = False
    for reference in references:
        phrase = normalize(reference).split()
        for start in _positions(words, phrase) if phrase else []:
            if _hedged(words, start, start + len(phrase)):
                return False
            found = True
    return found


def grade_number(answer: str, expected: int, question: str = "") -> bool:
    """Exact grading of an integer answer: its first new number must equal ``expected``.

    Numbers that already occur in ``question`` are skipped, so an answer that restates the
    problem ("342 + 309 = 651") is graded on its result. Thousands separators are ignored
    ("1,234" is 1234); number words up to twenty count ("three" is 3); a decimal number never
    equals an int.
    """
    given = {_plain(m) for m in _NUMBER.findall(question)}
    spelled = _NUMBER_WORD.sub(lambda m: str(_WORDS.index(m.group(1).lower())), answer)
    for match in _NUMBER.findall(spelled):
        text = _plain(match)
        if text not in given:
            return "." not in text and int(text) == expected
    return False


def _plain(number: str) -> str:
    return number.replace(",", "")


def refuses(answer: str) -> bool:
    """Whether ``answer`` declines to answer ("I don't know", "the context does not mention it").

    The correct reply to a RAG question whose context does not hold the answer.
    """
    return bool(_REFUSAL.search(" ".join(answer.replace("’", "'").split())))
