"""Evaluation: AUROC and its bootstrap interval, threshold metrics, the generation cache."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from guardrail.calibrate.datasets import Dataset, Item
from guardrail.calibrate.runs import Record, generate
from guardrail.calibrate.scoring import BASELINES, Scorer, default_direction, locate, standard_localizers
from guardrail.calibration import Calibration
from guardrail.errors import InvalidInputError
from guardrail.scores import TokenScores


def test_directions_and_baselines() -> None:
    assert default_direction("logprob", "mean") == -1
    assert default_direction("spilled_energy", "min") == -1
    assert default_direction("spilled_energy", "mean") == 1
    assert Scorer("logprob", "mean", "whole").name == "-logprob[mean]@whole"
    names = [n for n, _ in BASELINES]
    assert "mean token log-prob" in names and "min token log-prob" in names


def test_record_json_round_trip() -> None:
    scores = TokenScores([5, 6], [1.0, 2.0], [3.0, 4.0], [4.0, 5.0], [0.5, 0.25])
    record = Record(Item("Q?", ("A", "B")), " A.", scores)
    back = Record.from_json(json.loads(json.dumps(record.to_json())))
    assert back.item == record.item and back.text == record.text
    np.testing.assert_array_equal(back.scores.spilled_energy, scores.spilled_energy)
    assert Record(Item("What is 2 + 2?", ("4",), numeric=True), "It is 4.", scores).correct


def test_generate_caches_and_resumes(tiny_guard: Any, tmp_path: Path) -> None:
    dataset = Dataset(
        "tiny",
        (
            Item("what is the capital of france ?", ("paris",)),
            Item("what is a city ?", ("rome",)),
            Item("what is a country ?", ("france",)),
        ),
    )
    first = generate(tiny_guard, dataset, batch_size=2, max_new_tokens=4, cache=tmp_path, progress=False)
    assert first.generated == 3 and first.cache_file is not None and first.cache_file.is_file()
    again = generate(tiny_guard, dataset, batch_size=2, max_new_tokens=4, cache=tmp_path, progress=False)
    assert again.generated == 0
    assert [r.text for r in again.records] == [r.text for r in first.records]
    np.testing.assert_allclose(again.records[0].scores.spilled_energy, first.records[0].scores.spilled_energy)
    # an interrupted run: the last row is truncated, the rerun regenerates only that item
    lines = first.cache_file.read_text().splitlines()
    first.cache_file.write_text("\n".join(lines[:2]) + "\n" + lines[2][:20])
    resumed = generate(tiny_guard, dataset, batch_size=2, max_new_tokens=4, cache=tmp_path, progress=False)
    assert resumed.generated == 1
    other = generate(tiny_guard, dataset, batch_size=2, max_new_tokens=3, cache=tmp_path, progress=False)
    assert other.generated == 3  # other generation settings, other cache file


def test_given_answers_are_scored_teacher_forced_in_order(tiny_guard: Any, tmp_path: Path) -> None:
    question = "what is the capital of france ?"
    dataset = Dataset(
        "mixed",
        (
            Item(question, ("paris",), given="paris"),
            Item("what is a city ?", ("rome",)),
            Item(question, ("paris",), given="rome"),
        ),
    )
    run = generate(tiny_guard, dataset, max_new_tokens=4, cache=tmp_path, progress=False)
    assert run.generated == 1 and [r.item for r in run.records] == list(dataset.items)
    right, _, wrong = run.records
    assert (right.text, right.correct, wrong.text, wrong.correct) == ("paris", True, "rome", False)
    expected = tiny_guard.check(question, "rome", raw=True).best.scores
    np.testing.assert_allclose(wrong.scores.spilled_energy, expected.spilled_energy)
    assert len(run.cache_file.read_text().splitlines()) == 1  # given answers are not cached


def test_locate_and_score(tiny_guard: Any) -> None:
    dataset = Dataset(
        "tiny", (Item("what is the capital of france ?", ("paris",)), Item("what is a city ?", ("rome",)))
    )
    run = generate(tiny_guard, dataset, max_new_tokens=4, cache=False, progress=False)
    scored = locate(run.records, standard_localizers(None, ("heuristic", "whole")), tiny_guard.tokenizer.decode)
    assert set(scored.spans) == {"heuristic", "whole"}
    values = scored.values(Scorer("logprob", "mean", "whole"))
    assert values.shape == (len(scored.records),) and np.all(values >= 0)
    calibrated = scored.calibrated(Calibration.uncalibrated())
    assert calibrated.shape == values.shape
    with pytest.raises(InvalidInputError, match="`localizers`"):
        standard_localizers(None, ("llm",))
    with pytest.raises(InvalidInputError, match="empty"):
        generate(tiny_guard, Dataset("none", ()), cache=False)


def test_cache_is_private_and_stays_inside(tiny_model: Any, tiny_tokenizer: Any, tmp_path: Path) -> None:
    """Before: the folder took the model name as is, so ``../../x`` wrote outside the cache, and
    files were 0644 in 0755 folders."""
    import stat

    from guardrail.guard import Guard

    guard = Guard(tiny_model, tiny_tokenizer, max_new_tokens=2, name="../../x")
    dataset = Dataset("../../evil", (Item("what is a city ?", ("rome",)),))
    cache = tmp_path / "cache"
    run = generate(guard, dataset, batch_size=1, max_new_tokens=2, cache=cache, progress=False)
    path = run.cache_file
    assert path is not None and path.is_file()
    assert cache.resolve() in path.resolve().parents and not list(tmp_path.glob("x*"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_generate_checks_sizes_first(tiny_guard: Any, tmp_path: Path) -> None:
    dataset = Dataset("tiny", (Item("what is a city ?", ("rome",)),))
    with pytest.raises(InvalidInputError, match="`batch_size` must be an int >= 1"):
        generate(tiny_guard, dataset, batch_size=0, cache=tmp_path, progress=False)
    with pytest.raises(InvalidInputError, match="`max_new_tokens` must be an int >= 1"):
        generate(tiny_guard, dataset, max_new_tokens=0, cache=tmp_path, progress=False)


def test_rag_items_are_cached_by_their_whole_prompt(tiny_guard: Any, tmp_path: Path) -> None:
    question = "what is the capital of france ?"
    dataset = Dataset(
        "rag",
        (
            Item(question, ("paris",), context="paris is the capital of france ."),
            Item(question, ("paris",), context="rome is a city .", unanswerable=True),
        ),
    )
    run = generate(tiny_guard, dataset, batch_size=2, max_new_tokens=3, cache=tmp_path, progress=False)
    assert run.generated == 2 and [r.item for r in run.records] == list(dataset.items)
    assert generate(tiny_guard, dataset, batch_size=2, max_new_tokens=3, cache=tmp_path, progress=False).generated == 0
    # an unanswerable item is correct only when the answer refuses
    assert Record(dataset.items[1], "I don't know.", run.records[1].scores).correct
    assert not Record(dataset.items[1], "Paris.", run.records[1].scores).correct
