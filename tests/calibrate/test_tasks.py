"""The dev tasks beyond capitals: countryinfo fields, BIG-bench tasks, quiz tables, RAG prompts
and tasks, JSONL rows with context, per-task sizes and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from guardrail.calibrate import bigbench, datasets
from guardrail.calibrate.datasets import Item, jsonl, tasks
from guardrail.calibrate.grading import grade_number, refuses
from guardrail.calibrate.rag import SHAPES, render
from guardrail.errors import DatasetError, InvalidInputError


def test_country_fields() -> None:
    continent = {i.question: i.answers for i in datasets.countries("continent").items}
    assert continent["On which continent is France?"] == ("Europe",)
    assert continent["On which continent is Brazil?"] == ("South America",)
    assert "North America" in continent["On which continent is Honduras?"]
    demonym = {i.question: i.answers for i in datasets.countries("demonym").items}
    assert demonym["What do you call a person from Honduras?"] == ("Honduran",)
    neighbours = {i.question: set(i.answers) for i in datasets.countries("neighbours").items}
    assert {"Guatemala", "Nicaragua"} <= neighbours["Name a country that borders Honduras."]
    with pytest.raises(InvalidInputError, match="`field` must be one of"):
        datasets.countries("flag")


def _cache(tmp_path: Path, name: str, examples: list[dict[str, object]]) -> Path:
    folder = tmp_path / "data" / "bigbench"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps({"examples": examples}))
    return tmp_path


def test_bigbench_tasks_from_the_cache(tmp_path: Path) -> None:
    cache = _cache(
        tmp_path,
        "general_knowledge.json",
        [{"input": "How many legs do horses have?", "target_scores": {"two": 0, "four": 1}}],
    )
    assert datasets.general_knowledge(cache).items == (Item("How many legs do horses have?", ("four", "4")),)
    _cache(tmp_path, "periodic_elements_0.json", [{"input": "Atomic number 1?", "target_scores": {"hydrogen": 1.0}}])
    _cache(tmp_path, "periodic_elements_1.json", [{"input": "One more proton than Hydrogen?", "target": "helium"}])
    assert [i.answers for i in datasets.periodic_elements(cache).items] == [("hydrogen",), ("helium",)]
    _cache(tmp_path, "object_counting.json", [{"input": "I have a cat and a dog. How many?", "target": ["two", "2"]}])
    counting = datasets.object_counting(cache).items[0]
    assert counting.numeric and counting.answers == ("2",)


def test_bigbench_missing_or_corrupt(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="spillguard data fetch bigbench"):
        datasets.general_knowledge(tmp_path)
    folder = tmp_path / "data" / "bigbench"
    folder.mkdir(parents=True)
    (folder / "general_knowledge.json").write_text("{not json")
    with pytest.raises(DatasetError, match="unreadable"):
        datasets.general_knowledge(tmp_path)


def test_legacy_qa_wikidata_cache_still_counts(tmp_path: Path) -> None:
    legacy = tmp_path / "data" / "qa_wikidata" / "task.json"
    legacy.parent.mkdir(parents=True)
    legacy.write_text(json.dumps({"examples": [{"input": "The country of Paris is", "target": "France"}]}))
    assert bigbench.task_file("qa_wikidata.json", tmp_path) == legacy
    assert datasets.qa_wikidata(tmp_path).items[0].question == "What is the country of Paris?"


def test_quiz_continuation_lines_and_new_tables(tmp_path: Path) -> None:
    (tmp_path / "bard").write_text(
        "The quality of mercy is not strain['|e]d:\\\nIt droppeth as the gentle rain:\\\n{The }Merchant of Venice:\\\n"
        "Portia\n"
    )
    (tmp_path / "pres").write_text("{G{eorge} }Washington:1789-{17}97:{J{ohn} }Adams:{J{ohn} }Adams\n")
    bard = datasets.quiz("bard", tmp_path).items
    assert bard[0].question.startswith('Which Shakespeare play has the line "The quality of mercy is not strain')
    assert "The Merchant of Venice" in bard[0].answers
    pres = datasets.quiz("pres", tmp_path).items[0]
    assert pres.question == "Who succeeded George Washington as President of the United States?"
    assert "John Adams" in pres.answers


def test_render_shapes() -> None:
    llama = render("llamaindex", "Paris is in France.", "Where is Paris?")
    assert [m["role"] for m in llama] == ["system", "user"]
    assert "Context information is below.\n---------------------\nParis is in France.\n" in llama[1]["content"]
    assert llama[1]["content"].endswith("Query: Where is Paris?\nAnswer: ")
    langchain = render("langchain", "ctx", "q?")
    assert len(langchain) == 1 and "Question: q? \nContext: ctx \nAnswer:" in langchain[0]["content"]
    own = render("Use {context} to answer {question}", "C", "Q")
    assert own == [{"role": "user", "content": "Use C to answer Q"}]
    with pytest.raises(InvalidInputError, match="`template` must name a prompt shape"):
        render("no placeholders", "C", "Q")
    assert set(SHAPES) == {"llamaindex", "langchain", "langchain-system"}


def test_llamaindex_shape_is_llamaindex_own_prompt() -> None:
    prompts = pytest.importorskip("llama_index.core.prompts.chat_prompts")
    system, user = prompts.TEXT_QA_PROMPT_TMPL_MSGS
    ours = render("llamaindex", "CTX", "QUERY")
    assert ours[0]["content"] == system.content
    assert ours[1]["content"] == user.content.format(context_str="CTX", query_str="QUERY")


def test_rag_countries_task() -> None:
    data = datasets.rag("countries", n=40, seed=1)
    assert len(data) == 40 and data.name == "rag:countries"
    answerable = [i for i in data.items if not i.unanswerable]
    unanswerable = [i for i in data.items if i.unanswerable]
    assert len(answerable) == len(unanswerable) == 20
    assert {i.template for i in data.items} == set(SHAPES)
    for item in answerable:
        assert item.context is not None and any(a in item.context for a in item.answers)
    for item in unanswerable:
        assert item.context is not None and not any(a in item.context for a in item.answers)
    prompt = answerable[0].prompt()
    assert isinstance(prompt, list) and answerable[0].question in prompt[-1]["content"]
    assert answerable[0].key != answerable[0].question and datasets.rag("countries", n=40, seed=1) == data


def test_rag_elements_task(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    names = ["hydrogen", "helium", "lithium", "beryllium", "boron", "carbon"]
    examples = [
        {"input": f"What is the name of the element with an atomic number of {n}?", "target_scores": {name: 1.0}}
        for n, name in enumerate(names, start=1)
    ]
    monkeypatch.setenv("SPILLGUARD_CACHE", str(_cache(tmp_path, "periodic_elements_0.json", examples)))
    data = datasets.load("rag:elements")
    assert data.name == "rag:elements" and len(data) == 6
    for item in data.items:
        number = item.question.split()[-1].rstrip("?")
        own = f"The element with atomic number {number} is {item.answers[0]}."
        assert item.context is not None and (own in item.context) != item.unanswerable
        assert len(item.context.split("\n\n")) == 3


def test_refusals_and_number_words() -> None:
    assert refuses("I don't know.") and refuses("The context does not mention the capital of Peru.")
    assert refuses("That information is not provided.") and not refuses("The capital of Peru is Lima.")
    assert grade_number("You have three instruments.", 3) and not grade_number("You have four.", 3)


def _write(tmp_path: Path, rows: list[object]) -> Path:
    path = tmp_path / "mine.jsonl"
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def test_jsonl_with_context_and_template(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        [
            {"question": "What is the capital of Peru?", "answers": ["Lima"], "context": "Peru's capital is Lima."},
            {
                "question": "Capital of Chad?",
                "answers": [],
                "context": "Mali's capital is Bamako.",
                "unanswerable": True,
            },
            {"question": "Capital of Mali?", "answers": ["Bamako"], "context": "Bamako.", "template": "langchain"},
        ],
    )
    items = jsonl(path, template="Context: {context}\nQ: {question}").items
    assert [i.template for i in items] == ["Context: {context}\nQ: {question}"] * 2 + ["langchain"]
    assert items[0].prompt() == [
        {"role": "user", "content": "Context: Peru's capital is Lima.\nQ: What is the capital of Peru?"}
    ]
    assert items[1].unanswerable and items[1].answers == ()
    assert jsonl(path).items[0].template is None and jsonl(path).items[0].prompt()[0]["role"] == "system"


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"question": "q?", "answers": ["x"], "template": "langchain"}, "`template` needs a `context`"),
        ({"question": "q?", "answers": ["x"], "context": "c", "template": "nope"}, "`template` must name"),
        ({"question": "q?", "answers": [], "unanswerable": True}, "`unanswerable` needs a `context`"),
        ({"question": "q?", "answers": ["x"], "unanswerable": "yes"}, "`unanswerable` must be true or false"),
        ('{"question": "\\ud800?", "answers": ["x"]}', "`question` is not valid text"),
        ('{"question": "q?", "answers": ["\\udfff"]}', "`answers` is not valid text"),
        ("[" * 5000 + "]" * 5000, "nested deeper than 32 levels"),
    ],
)
def test_jsonl_bad_context_rows(tmp_path: Path, row: object, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message) as info:
        jsonl(_write(tmp_path, [row]))
    assert "line 1" in str(info.value)


def test_jsonl_huge_line_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    path = tmp_path / "huge.jsonl"
    with path.open("w") as out:
        out.write('{"question": "q?", "answers": ["' + "x" * (2 << 20) + '"]}\n')
    with pytest.raises(InvalidInputError, match="line 1 is longer than 1048576 bytes"):
        jsonl(path)


def test_tasks_sizes_and_split(tmp_path: Path) -> None:
    path = _write(tmp_path, [{"question": f"q{i}?", "answers": [f"a{i}"]} for i in range(10)])
    parts = tasks(f"arithmetic@6+{path}", seed=0)
    assert [len(p) for p in parts] == [6, 10]
    val = tasks(f"arithmetic@6+{path}", split=0.5, part="val")
    test = tasks(f"arithmetic@6+{path}", split=0.5, part="test")
    assert [len(p) for p in val] == [3, 5] and not set(val[0].items) & set(test[0].items)
    for bad in (1.5, float("nan"), 0.0, -1.0):
        with pytest.raises(InvalidInputError, match="`split` must be a fraction"):
            tasks("arithmetic", split=bad)
    with pytest.raises(InvalidInputError, match="size after '@'"):
        tasks("arithmetic@zero")
