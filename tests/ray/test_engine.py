"""The Ray engine on a local two-CPU cluster with the bundled model: the same records as the local
engine, resumable after an interruption, a crashed replica retried without losing or duplicating
an item, the guard's own errors, and no waiting forever for a replica that cannot run."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from guardrail.calibrate.datasets import load
from guardrail.calibrate.engines import Answer, EngineError
from guardrail.calibrate.ray_engine import RayEngine
from guardrail.calibrate.runs import generate
from guardrail.cli import main
from guardrail.errors import ContextLengthError, InvalidInputError
from guardrail.guard import Guard

pytestmark = pytest.mark.integration


def _cached(path: Path) -> list[str]:
    return [json.loads(line)["question"] for line in path.read_text().splitlines()]


def test_evaluate_on_ray_prints_what_the_local_engine_prints(
    ray_cluster: str, bundled: Any, one_thread: None, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["evaluate", "--data", "capitals", "--limit", "8", "--batch-size", "4", "--max-new-tokens", "16"]
    results = []
    for engine in (["--engine", "local"], ["--engine", "ray", "--replicas", "2"]):
        assert main([*argv, *engine, "--json", "--no-cache", "--quiet"]) == 0
        results.append(json.loads(capsys.readouterr().out))
    local, on_ray = results
    for a, b in zip(local["items"], on_ray["items"], strict=True):
        assert (a["question"], a["answer"], a["flagged"], a["span"]) == (
            b["question"],
            b["answer"],
            b["flagged"],
            b["span"],
        )
        assert b["score"] == pytest.approx(a["score"], abs=1e-5)
    for summary in (local["summary"], on_ray["summary"]):
        summary.pop("questions_per_second")
    assert on_ray["summary"] == local["summary"]  # every AUROC, the calibration's quality, the counts


class Interrupted(RayEngine):
    """A Ray run stopped (Ctrl-C) after its first batch came back."""

    def answer(self, guard: Any, questions: Sequence[str], **kwargs: Any) -> Iterator[list[Answer]]:
        for part in super().answer(guard, questions, **kwargs):
            yield part
            raise KeyboardInterrupt


def test_an_interrupted_ray_run_resumes_with_either_engine(ray_cluster: str, real_guard: Guard, tmp_path: Path) -> None:
    data = load("capitals", limit=4, seed=3)
    options: dict[str, Any] = {"batch_size": 2, "max_new_tokens": 8, "cache": tmp_path, "progress": False}
    with pytest.raises(KeyboardInterrupt):
        generate(real_guard, data, engine=Interrupted(Guard.default), **options)
    path = next(tmp_path.glob("generations/*/capitals.jsonl"))
    assert len(_cached(path)) == 2  # the batch that came back was kept
    resumed = generate(real_guard, data, engine=RayEngine(Guard.default), **options)
    assert resumed.generated == 2
    assert generate(real_guard, data, **options).generated == 0  # the local engine reads what Ray wrote
    assert sorted(_cached(path)) == sorted(i.question for i in data.items)


def _crash_once(marker: Path, question: str) -> Any:
    """A replica's guard that kills its process the first time it meets ``question``."""
    guard = Guard.default()
    ask_batch = guard.ask_batch

    def crashing(questions: Sequence[str], **kwargs: Any) -> Any:
        if question in questions and not marker.exists():
            marker.touch()
            os._exit(1)  # the replica dies as on a lost node or an out-of-memory kill
        return ask_batch(questions, **kwargs)

    guard.ask_batch = crashing  # type: ignore[method-assign]
    return guard


def test_a_crashed_replica_is_restarted_and_its_batch_retried_once(
    ray_cluster: str, real_guard: Guard, tmp_path: Path
) -> None:
    data = load("capitals", limit=4, seed=4)
    marker = tmp_path / "crashed"
    engine = RayEngine(functools.partial(_crash_once, marker, data.items[2].question), replicas=2, retries=2)
    run = generate(real_guard, data, batch_size=2, max_new_tokens=8, cache=tmp_path, progress=False, engine=engine)
    assert marker.exists()  # a replica did die
    assert run.generated == 4 and run.cache_file is not None
    assert sorted(_cached(run.cache_file)) == sorted(i.question for i in data.items)  # each exactly once
    marker.unlink()
    never = RayEngine(functools.partial(_crash_once, marker, data.items[2].question), retries=0)
    with pytest.raises(EngineError, match="the Ray run failed after 0 retries of a replica that died"):
        generate(real_guard, data, batch_size=2, max_new_tokens=8, cache=False, progress=False, engine=never)


def test_the_guards_errors_come_back_as_they_are(ray_cluster: str, real_guard: Guard) -> None:
    data = load("capitals", limit=2)
    with pytest.raises(ContextLengthError, match="exceeds the model's context of 8192 tokens"):
        generate(real_guard, data, max_new_tokens=10**6, cache=False, progress=False, engine=RayEngine(Guard.default))


def test_a_replica_no_node_can_hold_is_refused_at_once(ray_cluster: str, real_guard: Guard) -> None:
    data = load("capitals", limit=2)
    with pytest.raises(EngineError, match="no node of the Ray cluster can hold a replica of 0.5 CPU and 1 GPU"):
        generate(real_guard, data, cache=False, progress=False, engine=RayEngine(Guard.default, gpus_per_replica=1))
    with pytest.raises(EngineError, match="replica of 3 CPU"):
        generate(real_guard, data, cache=False, progress=False, engine=RayEngine(Guard.default, cpus_per_replica=3))
    with pytest.raises(InvalidInputError, match="carries a loaded model"):
        generate(real_guard, data, cache=False, progress=False, engine=RayEngine(lambda: real_guard))
