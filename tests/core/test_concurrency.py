"""Cancellation of the async twins, and other code sharing the tokenizer while the guard runs."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import pytest

from guardrail import Calibration, Guard, Verdict
from tests.conftest import build_tiny_model
from tests.core import zoo

QUESTION = "what is the capital of france ?"
LONG = 2000  # tokens asked for; a cancelled call must stop far earlier


class Steps:
    """Counts forward passes; slows each one a little so that a cancellation lands mid-generation."""

    def __init__(self, model: Any, *, after: int = 3, pause: float = 0.002) -> None:
        self.count = 0
        self.started = threading.Event()
        self.after, self.pause = after, pause
        model.register_forward_hook(self._seen)

    def _seen(self, *_: Any) -> None:
        self.count += 1
        if self.count >= self.after:
            self.started.set()
        time.sleep(self.pause)


def long_guard() -> tuple[Guard, Steps]:
    model = build_tiny_model()
    model.config.max_position_embeddings = LONG + 64
    guard = Guard(model, zoo.word_tokenizer(), calibration=Calibration.uncalibrated(), name="tiny", max_new_tokens=LONG)
    return guard, Steps(model)


def run(main: Callable[[], Awaitable[None]]) -> list[dict[str, Any]]:
    """Run ``main`` in a fresh event loop; return what reached the loop's exception handler."""
    problems: list[dict[str, Any]] = []

    async def wrapped() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: problems.append(context))
        await main()

    asyncio.run(wrapped())
    return problems


def test_cancelling_aask_stops_generation_and_frees_the_model() -> None:
    guard, steps = long_guard()

    async def main() -> None:
        task = asyncio.create_task(guard.aask(QUESTION, min_new_tokens=LONG))
        assert await asyncio.to_thread(steps.started.wait, 60)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        stopped = steps.count
        assert stopped < LONG // 10, stopped  # stopped at the next token, not at the token limit
        await asyncio.sleep(0.05)
        assert steps.count == stopped  # the worker had finished when the CancelledError arrived
        verdict = await asyncio.wait_for(guard.aask(QUESTION, max_new_tokens=3), 60)  # the model is free
        assert isinstance(verdict, Verdict) and len(verdict.scores) <= 3

    assert run(main) == []


def test_cancelling_an_astream_consumer_stops_generation() -> None:
    guard, steps = long_guard()
    seen: list[object] = []

    async def consume() -> None:
        async for event in guard.astream(QUESTION, min_new_tokens=LONG):
            seen.append(event)

    async def main() -> None:
        task = asyncio.create_task(consume())
        while len(seen) < 3:
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        stopped = steps.count
        assert stopped < LONG // 10, stopped
        await asyncio.sleep(0.05)
        assert steps.count == stopped
        assert not any(isinstance(e, Verdict) for e in seen)
        events = [e async for e in guard.astream(QUESTION, max_new_tokens=3)]  # another call works at once
        assert isinstance(events[-1], Verdict)

    assert run(main) == []


def test_closing_an_astream_early_stops_generation() -> None:
    guard, steps = long_guard()

    async def main() -> None:
        stream = guard.astream(QUESTION, min_new_tokens=LONG)
        first = await stream.__anext__()
        assert isinstance(first, str)
        await stream.aclose()
        stopped = steps.count
        assert stopped < LONG // 10, stopped
        await asyncio.sleep(0.05)
        assert steps.count == stopped
        assert isinstance(await guard.aask(QUESTION, max_new_tokens=2), Verdict)

    assert run(main) == []


def test_many_cancellations_never_leave_errors_behind() -> None:
    """The issue saw "generator already executing" in 5-6 of 8 tries and "cannot join current thread"."""
    guard, steps = long_guard()
    steps.pause = 0.0005

    async def main() -> None:
        for i in range(8):
            seen = 0

            async def consume() -> None:
                nonlocal seen
                async for _ in guard.astream(QUESTION, min_new_tokens=LONG):
                    seen += 1

            task = asyncio.create_task(consume() if i % 2 else guard.aask(QUESTION, min_new_tokens=LONG))
            await asyncio.sleep(0.01 * (i % 3))
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            stopped = steps.count
            await asyncio.sleep(0.02)
            assert steps.count == stopped, f"try {i}: generation went on after the cancellation"
        assert steps.count < LONG, steps.count  # eight tries together stayed far below one full answer
        verdicts = await asyncio.gather(*(guard.aask(q, max_new_tokens=2) for q in (QUESTION, "paris ?")))
        assert all(isinstance(v, Verdict) for v in verdicts)

    assert run(main) == []


def test_other_threads_using_the_tokenizer_never_change_verdicts() -> None:
    """The guard pads by hand and encodes with a private copy of the tokenizer's backend, so
    another thread flipping ``padding_side`` or tokenizing with padding and truncation (which fast
    tokenizers keep as shared backend state) changes nothing, and the guard changes nothing of it."""
    tokenizer = zoo.word_tokenizer()
    guard = Guard(build_tiny_model(), tokenizer, calibration=Calibration.uncalibrated(), name="tiny", max_new_tokens=3)
    questions = [QUESTION, "paris ?", "is rome a city and a country ?", "what is a country ?"]
    alone = guard.ask_batch(questions, batch_size=4, min_new_tokens=3)
    stop = threading.Event()

    def meddle() -> None:
        i = 0
        while not stop.is_set():
            tokenizer.padding_side = "right" if i % 2 else "left"
            tokenizer(["paris", "rome is a city"], padding="max_length", max_length=40)
            tokenizer(["paris rome city", "rome is"], truncation=True, max_length=2)
            i += 1

    thread = threading.Thread(target=meddle)
    thread.start()
    try:
        for _ in range(8):
            for v, again in zip(alone, guard.ask_batch(questions, batch_size=4, min_new_tokens=3), strict=True):
                assert again.answer == v.answer and again.best.prompt_tokens == v.best.prompt_tokens
                np.testing.assert_allclose(again.scores.spilled_energy, v.scores.spilled_energy, atol=1e-5)
    finally:
        stop.set()
        thread.join()
    tokenizer.padding_side = "right"
    tokenizer.backend_tokenizer.enable_truncation(7)
    guard.ask_batch(questions[:2])
    guard.check(QUESTION, "paris")
    assert tokenizer.padding_side == "right" and tokenizer.backend_tokenizer.truncation["max_length"] == 7
