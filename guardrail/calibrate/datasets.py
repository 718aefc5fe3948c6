"""Labelled question sets for calibration and evaluation: real data written by others, offline.

Sources (see ``docs/calibration.md``):

- ``capitals``: world capitals from the ``countryinfo`` package (MIT);
- ``qa-wikidata``: BIG-bench ``qa_wikidata`` (Apache-2.0), fetched once from the
  ``bigbench==1.0.0`` sdist into the user cache by ``spillguard data fetch qa-wikidata``;
- ``quiz:TABLE``: the bsdgames ``quiz`` tables (Debian ``bsdgames``, BSD-3), e.g. ``quiz:state``;
- ``arithmetic``: synthetic additions as in the paper's §5.1, graded exactly (``arithmetic:D``
  for D-digit operands, default 2);
- ``arithmetic-forced``: the paper's teacher-forced variant, a correct and an offset sum per
  prompt, scored without generating (``arithmetic-forced:D``, default 13 digits as in the paper);
- any JSONL file of ``{"question": str, "answers": [str, ...]}`` rows.

Every loader drops items whose reference answer already occurs in the question.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from guardrail.calibrate.grading import contains
from guardrail.errors import DatasetError, InvalidInputError
from guardrail.loading import cache_root

__all__ = [
    "DATASETS",
    "Dataset",
    "Item",
    "arithmetic",
    "arithmetic_forced",
    "cache_root",
    "capitals",
    "expand",
    "fetch_qa_wikidata",
    "jsonl",
    "load",
    "qa_wikidata",
    "quiz",
    "select",
]

QUIZ_DIR = Path("/usr/share/games/bsdgames/quiz")
_BIGBENCH = "bigbench==1.0.0"
_TASK_MEMBER = "bigbench/benchmark_tasks/qa_wikidata/task.json"
_FETCH_COMMAND = "spillguard data fetch qa-wikidata"


@dataclass(frozen=True)
class Item:
    """One labelled question.

    Attributes:
        question: the question put to the model.
        answers: the reference answer first, then accepted aliases.
        numeric: grade as an exact integer (the answer's first number that the question does not
            hold) instead of aliases.
        given: an answer to score teacher-forced instead of generating one; its prompt is
            ``question`` fed as raw text (no chat template).
    """

    question: str
    answers: tuple[str, ...]
    numeric: bool = False
    given: str | None = None


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
    kept = tuple(i for i in items if i.numeric or not any(contains(i.question, a) for a in i.answers))
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


# -- BIG-bench qa_wikidata ------------------------------------------------------------------


def _task_path(cache: Path | None) -> Path:
    return (cache or cache_root()) / "data" / "qa_wikidata" / "task.json"


def fetch_qa_wikidata(cache: Path | None = None, *, log: Callable[[str], None] | None = None) -> Path:
    """Download the ``bigbench`` sdist once, keep only ``qa_wikidata/task.json``, delete the rest.

    Returns the cached file's path; does nothing when it is already cached.
    """
    target = _task_path(cache)
    if target.is_file():
        return target
    say = log or (lambda message: print(message, file=sys.stderr))
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        say(f"downloading the {_BIGBENCH} sdist (358 MB) with pip; only qa_wikidata is kept")
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-binary",
            ":all:",
            "--no-build-isolation",
            "--disable-pip-version-check",
            "--quiet",
            _BIGBENCH,
            "-d",
            tmp,
        ]
        done = subprocess.run(command, capture_output=True, text=True)
        archives = list(Path(tmp).glob("bigbench-*.tar.gz"))
        if done.returncode != 0 or not archives:
            raise DatasetError(
                f"cannot download {_BIGBENCH} from PyPI (no network?); `{_FETCH_COMMAND}` needs PyPI "
                f"once. pip said: {done.stderr.strip()[-500:]}"
            )
        _extract_task(archives[0], target)
    return target


def _extract_task(archive: Path, target: Path) -> None:
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            if member.isfile() and member.name.endswith(_TASK_MEMBER):
                source = tar.extractfile(member)
                assert source is not None
                partial = target.with_suffix(".part")
                with partial.open("wb") as out:
                    shutil.copyfileobj(source, out)
                partial.replace(target)
                return
    raise DatasetError(f"{archive.name} holds no {_TASK_MEMBER}")


_FACT = re.compile(r"^The (.+?) of (.+) is$")


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
    path = _task_path(cache)
    if not path.is_file():
        raise DatasetError(f"qa_wikidata is not cached at {path}; run `{_FETCH_COMMAND}` once (needs PyPI)")
    try:
        examples = json.loads(path.read_text(encoding="utf-8"))["examples"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DatasetError(f"cached {path} is unreadable ({exc}); delete it and run `{_FETCH_COMMAND}`") from exc
    items = []
    for example in examples:
        targets = example.get("target")
        answers = tuple(
            t for t in (targets if isinstance(targets, list) else [targets]) if isinstance(t, str) and t.strip()
        )
        if isinstance(example.get("input"), str) and answers:
            items.append(Item(_wikidata_question(example["input"]), answers))
    return _dataset("qa-wikidata", items)


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
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
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


# -- user JSONL ------------------------------------------------------------------------------


def jsonl(path: str | Path) -> Dataset:
    """Rows of ``{"question": str, "answers": [str, ...]}``, one JSON object per line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read dataset file {str(path)!r}: {exc}") from exc
    items = [_row(path, n, line) for n, line in enumerate(lines, 1) if line.strip()]
    if not items:
        raise InvalidInputError(f"dataset file {str(path)!r} has no rows")
    return _dataset(path.stem, items)


def _row(path: Path, number: int, line: str) -> Item:
    where = f"{path.name} line {number}"
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"{where} is not JSON ({exc.msg}): {line[:80]!r}") from exc
    if not isinstance(row, dict) or "question" not in row or "answers" not in row:
        raise InvalidInputError(f"{where} needs keys `question` and `answers`, got {line[:80]!r}")
    question, answers = row["question"], row["answers"]
    if not isinstance(question, str) or not question.strip():
        raise InvalidInputError(f"{where}: `question` must be a non-empty str, got {question!r}")
    if isinstance(answers, str):
        answers = [answers]
    if not isinstance(answers, list) or not answers or not all(isinstance(a, str) and a.strip() for a in answers):
        raise InvalidInputError(f"{where}: `answers` must be a non-empty list of non-empty str, got {answers!r}")
    return Item(question.strip(), tuple(a.strip() for a in answers))


# -- by name ---------------------------------------------------------------------------------

DATASETS: tuple[str, ...] = (
    "capitals",
    "qa-wikidata",
    "arithmetic",
    "arithmetic-forced",
    *(f"quiz:{t}" for t in QUIZ_TABLES),
)


def load(spec: str, *, limit: int | None = None, seed: int = 0) -> Dataset:
    """A dataset by name (:data:`DATASETS`) or JSONL path, optionally a seeded sample.

    Several specs joined by ``+`` are concatenated ("capitals+qa-wikidata").
    """
    if not isinstance(spec, str) or not spec.strip():
        raise InvalidInputError(f"`data` must name a dataset ({', '.join(DATASETS)}) or a JSONL file, got {spec!r}")
    parts = [_load_one(s.strip()) for s in spec.split("+")]
    dataset = (
        parts[0]
        if len(parts) == 1
        else Dataset("+".join(p.name for p in parts), tuple(i for p in parts for i in p.items))
    )
    return dataset if limit is None else dataset.sample(limit, seed)


def select(spec: str, *, limit: int | None = None, seed: int = 0, split: float = 1.0, part: str = "val") -> Dataset:
    """Each ``+``-joined dataset of ``spec`` sampled (``limit`` items) and split on its own, then
    concatenated: with ``split < 1``, ``part`` ``"val"`` keeps the validation part, ``"test"`` the rest."""
    if part not in ("val", "test"):
        raise InvalidInputError(f"`part` must be 'val' or 'test', got {part!r}")
    parts = []
    for one in spec.split("+") if isinstance(spec, str) else [spec]:
        dataset = load(one, limit=limit, seed=seed)
        if split < 1.0:
            validation, test = dataset.split(split, seed)
            dataset = validation if part == "val" else test
        parts.append(dataset)
    if len(parts) == 1:
        return parts[0]
    return Dataset("+".join(p.name for p in parts), tuple(i for p in parts for i in p.items))


def _load_one(spec: str) -> Dataset:
    if spec == "capitals":
        return capitals()
    if spec in ("qa-wikidata", "qa_wikidata"):
        return qa_wikidata()
    name, _, digits = spec.partition(":")
    if name in ("arithmetic", "arithmetic-forced"):
        if digits and not digits.isdigit():
            raise InvalidInputError(f"`data` {spec!r}: the digits after ':' must be an int, e.g. {name}:3")
        build = arithmetic if name == "arithmetic" else arithmetic_forced
        return build(digits=int(digits)) if digits else build()
    if spec.startswith("quiz:"):
        return quiz(spec.split(":", 1)[1])
    if spec.endswith(".jsonl") or Path(spec).is_file():
        return jsonl(spec)
    raise InvalidInputError(f"`data` must name a dataset ({', '.join(DATASETS)}) or a JSONL file, got {spec!r}")
