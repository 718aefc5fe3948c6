"""Streaming: run one generation in a worker thread and yield its events as they happen.

Text deltas come from a ``transformers`` streamer as soon as each token is chosen; per-token
:class:`~guardrail.scores.TokenStep` values come from the capture hook one token later (spilled
energy needs the following step). Closing the consumer's generator stops generation at the next
token through a stopping criterion.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from guardrail.scores import TokenScores, TokenStep

__all__ = ["stream_generation"]


def stream_generation(
    generate: Callable[..., TokenScores], tokenizer: Any, eos_token_ids: list[int]
) -> Generator[str | TokenStep, None, TokenScores]:
    """Run ``generate(on_step=, streamer=, stopping_criteria=)`` in a thread, yield its events.

    Yields ``str`` text deltas and :class:`TokenStep` values in order of availability, then the
    steps the hook could not report on the fly (the last token); returns the final scores.
    Exceptions of the worker are re-raised in the consumer's thread.
    """
    events: queue.Queue[object] = queue.Queue()
    stop = threading.Event()

    def run() -> None:
        try:
            scores = generate(
                on_step=events.put,
                streamer=_TextStreamer(tokenizer, eos_token_ids, events.put),
                stopping_criteria=StoppingCriteriaList([_Cancelled(stop)]),
            )
            events.put(_Finished(scores))
        except BaseException as exc:  # handed to the consumer
            events.put(_Finished(None, exc))

    worker = threading.Thread(target=run, name="spillguard-stream", daemon=True)
    worker.start()
    try:
        streamed = 0
        while not isinstance(item := events.get(), _Finished):
            streamed += isinstance(item, TokenStep)
            yield item  # type: ignore[misc]
        if item.error is not None:
            raise item.error
        assert item.scores is not None
        for i in range(streamed, len(item.scores)):
            yield _step(item.scores, i)
        return item.scores
    finally:
        stop.set()
        worker.join()


@dataclass(frozen=True)
class _Finished:
    scores: TokenScores | None
    error: BaseException | None = None


class _Cancelled(StoppingCriteria):
    """Stops generation once the consumer closed the stream."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self.stop.is_set(), dtype=torch.bool, device=input_ids.device)  # type: ignore[return-value]


class _TextStreamer(BaseStreamer):
    """Emits text deltas of the answer as tokens are chosen (prompt and EOS left out)."""

    def __init__(self, tokenizer: Any, eos: list[int], emit: Any) -> None:
        self.tokenizer, self.eos, self.emit = tokenizer, set(eos), emit
        self.ids: list[int] = []
        self.text = ""
        self.prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        self.ids += [i for i in value.view(-1).tolist() if i not in self.eos]
        text = self.tokenizer.decode(self.ids)
        if text.endswith("\ufffd") or len(text) <= len(self.text):
            return
        delta, self.text = text[len(self.text) :], text
        self.emit(delta)

    def end(self) -> None:
        """Nothing to flush: every complete character was emitted."""


def _step(scores: TokenScores, i: int) -> TokenStep:
    """Token ``i`` of finished scores as a :class:`TokenStep`."""
    return TokenStep(
        index=i,
        token_id=int(scores.token_ids[i]),
        chosen_logit=float(scores.chosen_logit[i]),
        log_partition=float(scores.log_partition[i]),
        next_log_partition=float(scores.next_log_partition[i]),
        entropy=float(scores.entropy[i]),
    )
