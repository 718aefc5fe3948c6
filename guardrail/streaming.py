"""Streaming: one generation in a worker thread, its events read as they happen, cancellable.

Text deltas come from a ``transformers`` streamer as soon as each token is chosen; per-token
:class:`~guardrail.scores.TokenStep` values come from the capture hook one token later (spilled
energy needs the following step). :meth:`LiveGeneration.cancel` may be called from any thread:
generation stops at the next token (a stopping criterion), so a reader blocked on the next
event is released within one forward step.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from transformers import StoppingCriteria
from transformers.generation.streamers import BaseStreamer

from guardrail.scores import TokenScores, TokenStep

__all__ = ["Cancelled", "LiveGeneration"]


class Cancelled(StoppingCriteria):
    """Stops generation at the next token once ``event`` is set (from any thread)."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        stop = torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)
        return stop  # type: ignore[return-value]


@dataclass(frozen=True)
class _Finished:
    scores: TokenScores | None
    error: BaseException | None = None


class LiveGeneration:
    """Runs ``generate(on_step=, streamer=, stop=)`` in a thread; iterate to read its events.

    Iteration yields ``str`` text deltas and :class:`TokenStep` values in order of availability,
    then the steps the hook could not report on the fly (the last token); afterwards
    :attr:`scores` holds the final scores. An exception of the worker is re-raised in the
    reader's thread. Always :meth:`close` it (it cancels and joins the worker).
    """

    def __init__(self, generate: Callable[..., TokenScores], tokenizer: Any, eos_token_ids: list[int]) -> None:
        self._events: queue.Queue[object] = queue.Queue()
        self._stop = threading.Event()
        self._tail: list[TokenStep] | None = None
        self._streamed = 0
        self.scores: TokenScores | None = None
        streamer = _TextStreamer(tokenizer, eos_token_ids, self._events.put)
        self._worker = threading.Thread(
            target=self._run, args=(generate, streamer), name="spillguard-stream", daemon=True
        )
        self._worker.start()

    def _run(self, generate: Callable[..., TokenScores], streamer: BaseStreamer) -> None:
        try:
            scores = generate(on_step=self._events.put, streamer=streamer, stop=self._stop)
            self._events.put(_Finished(scores))
        except BaseException as exc:  # handed to the reader
            self._events.put(_Finished(None, exc))

    def __iter__(self) -> LiveGeneration:
        return self

    def __next__(self) -> str | TokenStep:
        if self._tail is None:
            item = self._events.get()
            if not isinstance(item, _Finished):
                self._streamed += isinstance(item, TokenStep)
                return item  # type: ignore[return-value]
            if item.error is not None:
                raise item.error
            assert item.scores is not None
            self.scores = item.scores
            self._tail = [_step(item.scores, i) for i in range(self._streamed, len(item.scores))]
        if not self._tail:
            raise StopIteration
        return self._tail.pop(0)

    def cancel(self) -> None:
        """Stop generating at the next token (thread-safe; the events up to there still arrive)."""
        self._stop.set()

    def close(self) -> None:
        """Cancel and wait for the worker to end."""
        self.cancel()
        self._worker.join()


class _TextStreamer(BaseStreamer):
    """Emits text deltas of the answer as tokens are chosen (prompt and EOS left out)."""

    def __init__(self, tokenizer: Any, eos: list[int], emit: Callable[[object], None]) -> None:
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
