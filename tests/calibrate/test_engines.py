"""Engines answer, the run caches: whatever an engine does, the cache holds each question once and a
rerun regenerates only what is missing, whichever engine wrote the rest (tiny model, no Ray)."""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from guardrail.calibrate.datasets import Dataset, Item
from guardrail.calibrate.engines import Answer, EngineError, LocalEngine, batches
from guardrail.calibrate.ray_engine import RayEngine, _Replica
from guardrail.calibrate.runs import generate
from guardrail.errors import ContextLengthError, InvalidInputError
from guardrail.guard import Guard

DATA = Dataset(
    "tiny",
    tuple(
        Item(q, ("paris",))
        for q in ("what is the capital of france ?", "what is a city ?", "what is a country ?", "what is paris ?")
    ),
)


class Recording(LocalEngine):
    """The local engine, remembering what it was asked; optionally misbehaving."""

    def __init__(self, *, repeat: bool = False, drop: str | None = None) -> None:
        self.asked: list[str] = []
        self.repeat, self.drop = repeat, drop

    def answer(
        self, guard: Any, questions: Sequence[str], *, batch_size: int, max_new_tokens: int
    ) -> Iterator[list[Answer]]:
        self.asked += questions
        for part in super().answer(guard, questions, batch_size=batch_size, max_new_tokens=max_new_tokens):
            kept = [a for a in part if a.question != self.drop]
            yield kept
            if self.repeat:  # a retried batch delivered twice, and an answer nobody asked for
                yield [*kept, Answer("what is rome ?", "rome", kept[0].scores)]


def _cached(run: Any) -> list[str]:
    return [json.loads(line)["question"] for line in run.cache_file.read_text().splitlines()]


def test_batches_are_cut_in_order() -> None:
    assert batches(["a", "b", "c", "d", "e"], 2) == [["a", "b"], ["c", "d"], ["e"]]
    with pytest.raises(InvalidInputError, match="`batch_size`"):
        batches(["a"], 0)


def test_the_local_engine_is_the_default(tiny_guard: Any) -> None:
    plain = generate(tiny_guard, DATA, batch_size=3, max_new_tokens=4, cache=False, progress=False)
    local = generate(
        tiny_guard, DATA, batch_size=3, max_new_tokens=4, cache=False, progress=False, engine=LocalEngine()
    )
    assert [r.text for r in local.records] == [r.text for r in plain.records]
    for a, b in zip(local.records, plain.records, strict=True):
        np.testing.assert_array_equal(a.scores.spilled_energy, b.scores.spilled_energy)


def test_repeated_or_unasked_answers_are_cached_once(tiny_guard: Any, tmp_path: Path) -> None:
    run = generate(
        tiny_guard, DATA, batch_size=2, max_new_tokens=4, cache=tmp_path, progress=False, engine=Recording(repeat=True)
    )
    assert sorted(_cached(run)) == sorted(i.question for i in DATA.items)
    assert [r.item for r in run.records] == list(DATA.items)


def test_a_lost_answer_is_an_error_and_a_rerun_asks_only_for_it(tiny_guard: Any, tmp_path: Path) -> None:
    lost = DATA.items[2].question
    with pytest.raises(EngineError, match="no answer to 1 of 4 questions"):
        generate(
            tiny_guard,
            DATA,
            batch_size=2,
            max_new_tokens=4,
            cache=tmp_path,
            progress=False,
            engine=Recording(drop=lost),
        )
    other = Recording()
    run = generate(tiny_guard, DATA, batch_size=2, max_new_tokens=4, cache=tmp_path, progress=False, engine=other)
    assert other.asked == [lost] and run.generated == 1
    assert sorted(_cached(run)) == sorted(i.question for i in DATA.items)
    again = Recording()
    assert generate(tiny_guard, DATA, max_new_tokens=4, cache=tmp_path, progress=False, engine=again).generated == 0
    assert again.asked == []


def test_ray_engine_arguments_are_checked_before_any_cluster() -> None:
    with pytest.raises(InvalidInputError, match="`factory`"):
        RayEngine("Guard.default")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="`replicas`"):
        RayEngine(dict, replicas=0)
    with pytest.raises(InvalidInputError, match="`cpus_per_replica` must be a finite number > 0, got 0"):
        RayEngine(dict, cpus_per_replica=0)
    with pytest.raises(InvalidInputError, match="`gpus_per_replica`"):
        RayEngine(dict, gpus_per_replica=float("nan"))
    with pytest.raises(InvalidInputError, match="`retries`"):
        RayEngine(dict, retries=-1)
    assert RayEngine(dict).cpus_per_replica == 0.5  # a fraction by default


def _row(replica: _Replica, questions: list[str], max_new_tokens: int = 4) -> Any:
    out = replica({"questions": np.array([json.dumps(questions)])}, batch_size=2, max_new_tokens=max_new_tokens)
    (blob,) = out["answers"]
    return pickle.loads(blob)


def test_a_replica_answers_rows_of_batches_and_returns_the_guards_errors(tiny_guard: Guard) -> None:
    fingerprint = tiny_guard.fingerprint.model_dump()
    replica = _Replica(lambda: tiny_guard, fingerprint)
    questions = [i.question for i in DATA.items[:3]]
    answers = _row(replica, questions)
    expected = tiny_guard.ask_batch(questions[:2], batch_size=2, max_new_tokens=4)
    assert [a.question for a in answers] == questions and answers[0].text == expected[0].best.answer
    assert isinstance(_row(replica, questions, max_new_tokens=1000), ContextLengthError)  # raised on the driver


def test_a_replica_that_loads_another_model_says_so(tiny_model: Any, tiny_tokenizer: Any, tiny_guard: Guard) -> None:
    impostor = _Replica(
        lambda: Guard(tiny_model, tiny_tokenizer, name="another-model"), tiny_guard.fingerprint.model_dump()
    )
    error = _row(impostor, ["what is a city ?"])
    assert isinstance(error, EngineError) and "a replica loaded another model" in str(error)
