"""Dataset loaders and the grader: real data (countryinfo, bsdgames, BIG-bench), tricky grading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from guardrail.calibrate import datasets
from guardrail.calibrate.datasets import Dataset, Item, expand, jsonl, load
from guardrail.calibrate.grading import contains, grade, grade_number, normalize
from guardrail.errors import DatasetError, InvalidInputError

# -- grading ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The Hague!", "hague"),
        ("St. John's", "st johns"),
        ("Asunción", "asuncion"),
        ("  BOGOTÁ,  D.C. ", "bogota d c"),
        ("an apple a day", "apple day"),
    ],
)
def test_normalize(text: str, expected: str) -> None:
    assert normalize(text) == expected


@pytest.mark.parametrize(
    ("answer", "references", "correct"),
    [
        ("The capital of Australia is Canberra.", ["Canberra"], True),
        ("The capital of Paraguay is Asuncion.", ["Asunción"], True),  # accents
        ("the capital is CANBERRA", ["Canberra"], True),  # case
        ("It is The Hague.", ["Hague"], True),  # article
        ("The capital is St John's.", ["St. John's"], True),  # punctuation
        ("The capital of Sudan is Khartoum North.", ["Khartoum"], True),
        ("Romeo and Juliet was written by William Shakespeare.", ["Shakespeare"], True),
        ("The capital of Niger is Niamey.", ["Nia"], False),  # whole words only
        ("The capital is Parisian.", ["Paris"], False),
        ("The capital is Sydney or Canberra.", ["Canberra"], False),  # several candidates
        ("It is either Canberra or Sydney.", ["Canberra"], False),
        ("Maybe Canberra.", ["Canberra"], False),
        ("The capital of Australia is Sydney.", ["Canberra"], False),
        ("", ["Canberra"], False),
        ("Washington", ["Washington, D.C.", "Washington"], True),  # any alias
        ("The capital is Andorra la Vieja.", ["Andorra la Vella", "Andorra la Vieja"], True),
    ],
)
def test_grade(answer: str, references: list[str], correct: bool) -> None:
    assert grade(answer, references) is correct


def test_grade_empty_reference_never_matches() -> None:
    assert grade("anything", ["", "..."]) is False
    assert contains("The capital is Paris.", "paris") and not contains("Parisian", "Paris")


@pytest.mark.parametrize(
    ("answer", "expected", "correct"),
    [
        ("1207", 1207, True),
        ("The answer is 1,207.", 1207, True),
        ("1206", 1207, False),
        ("1207.5", 1207, False),
        ("no idea", 1207, False),
        ("-5 is it", -5, True),
        ("12070", 1207, False),
    ],
)
def test_grade_number(answer: str, expected: int, correct: bool) -> None:
    assert grade_number(answer, expected) is correct


@pytest.mark.parametrize(
    ("answer", "correct"),
    [
        ("342 + 309 = 651", True),
        ("342 + 309 = 631", False),
        ("342 + 309 = 342 * 309", False),
        ("To add 342 and 309, first", False),
        ("651", True),
        ("It is 651.5", False),
    ],
)
def test_grade_number_skips_numbers_of_the_question(answer: str, correct: bool) -> None:
    assert grade_number(answer, 651, "What is 342 + 309? Answer with the number only.") is correct


# -- loaders ----------------------------------------------------------------------------------


def test_capitals_from_countryinfo() -> None:
    data = datasets.capitals()
    assert len(data) > 200
    by_question = {i.question: i.answers for i in data.items}
    assert by_question["What is the capital of Australia?"] == ("Canberra",)
    assert "Oranjestad" in by_question["What is the capital of Bonaire, Sint Eustatius and Saba?"]
    # answers found in the question are dropped (Singapore, Luxembourg, Djibouti, ...)
    assert "What is the capital of Singapore?" not in by_question
    assert all(not contains(i.question, a) for i in data.items for a in i.answers)


def test_expand_quiz_patterns() -> None:
    assert expand("Cal{if{ornia}}|CA") == ["Cal", "Calif", "California", "CA"]
    assert expand("Andorra la V[ell|iej]a") == ["Andorra la Vella", "Andorra la Vieja"]
    with pytest.raises(InvalidInputError, match="unbalanced"):
        expand("Bahr[a|e")


def test_quiz_table(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("Cal{if{ornia}}|CA:Sacramento:CA:poppy\nNew York|NY:Albany:NY:rose\nbroken line\n")
    data = datasets.quiz("state", tmp_path)
    assert [i.question for i in data.items] == [
        "What is the capital of the US state of California?",
        "What is the capital of the US state of New York?",
    ]
    assert data.items[1].answers == ("Albany",)


def test_quiz_real_tables_when_installed() -> None:
    if not (datasets.QUIZ_DIR / "state").is_file():
        pytest.skip("Debian package bsdgames is not installed")
    states, elements = datasets.quiz("state"), datasets.quiz("elements")
    assert len(states) == 50 and len(elements) > 100
    assert Item("What is the chemical symbol of the element Gold?", ("Au",)) in elements.items


def test_quiz_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="apt-get install bsdgames"):
        datasets.quiz("state", tmp_path)
    with pytest.raises(InvalidInputError, match="`table` must be one of"):
        datasets.quiz("nope", tmp_path)


def test_arithmetic_is_seeded_and_exact() -> None:
    a, b = datasets.arithmetic(5, 3, seed=1), datasets.arithmetic(5, 3, seed=1)
    assert a == b and all(i.numeric for i in a.items)
    q = a.items[0]
    x, y = (int(t) for t in q.question.split("What is ")[1].split("?")[0].split(" + "))
    assert q.answers == (str(x + y),)
    forced = datasets.arithmetic_forced(4, 13, seed=0).items
    assert len(forced) == 8 and all(i.numeric and i.given for i in forced)
    for right, wrong in zip(forced[::2], forced[1::2], strict=True):
        assert right.question == wrong.question and "Answer: x is" in right.question
        assert right.given == right.answers[0] == wrong.answers[0] and len(right.answers[0]) in (13, 14)
        assert 1 <= abs(int(right.given) - int(str(wrong.given))) < 10
    assert datasets.load("arithmetic-forced") == datasets.arithmetic_forced()
    assert datasets.load("arithmetic:3") == datasets.arithmetic(digits=3)
    with pytest.raises(InvalidInputError, match="must be an int, e.g. arithmetic-forced:3"):
        datasets.load("arithmetic-forced:x")
    with pytest.raises(InvalidInputError, match="`digits`"):
        datasets.arithmetic(5, 30)


def _write(tmp_path: Path, rows: list[object]) -> Path:
    path = tmp_path / "mine.jsonl"
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_jsonl_loads_and_drops_answers_in_question(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        [
            {"question": "Who wrote Hamlet?", "answers": ["Shakespeare", "William Shakespeare"]},
            {"question": "Is Paris the capital of France?", "answers": ["Paris"]},
            "",
            {"question": "Capital of Peru?", "answers": "Lima"},
        ],
    )
    data = jsonl(path)
    assert data.name == "mine"
    assert [i.question for i in data.items] == ["Who wrote Hamlet?", "Capital of Peru?"]
    assert load(str(path)).items == data.items


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"answers": ["x"]}, "needs keys `question` and `answers`"),
        ({"question": "q?"}, "needs keys `question` and `answers`"),
        ({"question": "q?", "answers": [1, 2]}, "`answers` must be a non-empty list of non-empty str"),
        ({"question": "q?", "answers": []}, "`answers` must be"),
        ({"question": 3, "answers": ["x"]}, "`question` must be a non-empty str"),
        ("{not json", "is not JSON"),
    ],
)
def test_jsonl_bad_rows(tmp_path: Path, row: object, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message) as info:
        jsonl(_write(tmp_path, [row]))
    assert "line 1" in str(info.value)


def test_empty_datasets(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(InvalidInputError, match="has no rows"):
        jsonl(empty)
    with pytest.raises(InvalidInputError, match="is empty"):
        jsonl(_write(tmp_path, [{"question": "Is it Paris?", "answers": ["Paris"]}]))
    with pytest.raises(DatasetError, match="cannot read"):
        jsonl(tmp_path / "missing.jsonl")
    with pytest.raises(InvalidInputError, match="must name a dataset"):
        load("no-such-dataset")


def test_sample_and_split_are_seeded() -> None:
    data = Dataset("d", tuple(Item(f"q{i}?", (f"a{i}",)) for i in range(10)))
    assert data.sample(4, seed=3).items == data.sample(4, seed=3).items
    val, test = data.split(0.5, seed=1)
    assert len(val) == 5 and len(test) == 5 and not set(val.items) & set(test.items)
    assert data.split(0.5, seed=1) == (val, test)
    with pytest.raises(InvalidInputError, match="`fraction`"):
        data.split(1.5)


def test_qa_wikidata_missing_cache_names_the_command(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="spillguard data fetch bigbench"):
        datasets.qa_wikidata(tmp_path)


def test_qa_wikidata_fetch_failure_is_clear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIP_INDEX_URL", (tmp_path / "no-index").as_uri())
    with pytest.raises(DatasetError, match="no network"):
        datasets.fetch_qa_wikidata(tmp_path, log=lambda _: None)


def test_qa_wikidata_real() -> None:
    """Fetches the sdist once (358 MB from PyPI) when the cache is missing, then loads."""
    try:
        datasets.fetch_qa_wikidata()
    except DatasetError as exc:
        pytest.skip(f"qa_wikidata not cached and not fetchable: {exc}")
    calls: list[str] = []
    datasets.fetch_qa_wikidata(log=calls.append)  # cached: no download
    assert calls == []
    data = datasets.qa_wikidata()
    assert len(data) > 15000
    item = next(i for i in data.items if "1912 Summer Olympics" in i.question)
    assert item.question == "What is the country of 1912 Summer Olympics?" and item.answers == ("Sweden",)
