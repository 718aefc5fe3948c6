"""``HallucinationGuard``: a Runnable that flags, retries or abstains on high-spill answers.

>>> guard = HallucinationGuard(prompt | ChatSpillguard(), policy=Policy(on_hallucination="retry"))
>>> (guard | StrOutputParser()).invoke({"question": "What is the capital of Mali?"})

Control flow lives here, not in callbacks. Each retry changes the decoding of the guarded chat
models of the wrapped chain (sampling with the policy's temperature and a per-attempt seed, plus
a feedback message under ``retry_strategy="feedback"``), passed down through the run's config
metadata under :data:`~langchain_spillguard.DECODING_KEY`; greedy retries would repeat the
answer. The lowest-scoring attempt is kept.
"""

from __future__ import annotations

import math
import re
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForChainRun,
    CallbackManagerForChainRun,
)
from langchain_core.language_models import BaseChatModel, BaseLanguageModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.output_parsers import BaseOutputParser
from langchain_core.runnables import (
    Runnable,
    RunnableBinding,
    RunnableConfig,
    RunnableSequence,
    RunnableSerializable,
)
from langchain_core.runnables.config import ensure_config, patch_config
from pydantic import ConfigDict, Field, model_validator

from guardrail.policy import Action, Policy
from langchain_spillguard.chat_model import ChatSpillguard
from langchain_spillguard.errors import (
    HallucinationFlagged,
    NotGuardedError,
    UnscoredResponseError,
)
from langchain_spillguard.evidence import (
    DECODING_KEY,
    METADATA_KEY,
    STEPS_KEY,
    Evidence,
    evidence_of,
)

__all__ = ["HallucinationGuard"]

_RETRY_TAG = re.compile(r"^retry:attempt:(\d+)$")


class HallucinationGuard(RunnableSerializable[Any, BaseMessage]):
    """Guards a :class:`ChatSpillguard` (or a chain ending in one) with a flag/retry/abstain policy.

    Args:
        bound: the chat model or chain to guard; its output must be the model's message.
        policy: :class:`guardrail.Policy`: ``flag`` (default) marks the answer, ``retry``
            regenerates up to ``max_attempts`` attempts with a change per attempt and keeps the
            best, ``abstain`` returns ``abstain_text`` with the evidence in metadata.
        raise_on_hallucination: raise :class:`~langchain_spillguard.HallucinationFlagged` when the
            final answer is still above the threshold (after the policy), for ``with_retry`` /
            ``with_fallbacks``. Under ``with_retry`` each retry also changes the decoding.

    The output is the chosen ``AIMessage``; ``response_metadata["spillguard"]`` holds the final
    ``action`` and ``text`` and, under ``"guard"``, every attempt's answer, score and decoding.
    Streaming passes tokens through under ``flag``; under ``retry``/``abstain`` it holds an
    answer back until it is judged, then emits it or the abstention (a streamed token cannot be
    taken back).

    Raises:
        NotGuardedError: ``bound`` is a chat model other than ``ChatSpillguard``, an LLM, or
            ends in an output parser (which drops the scores).
        UnscoredResponseError: at run time, when the output carries no spillguard scores.
    """

    bound: Runnable[Any, Any]
    policy: Policy = Field(default_factory=Policy)
    raise_on_hallucination: bool = False

    model_config = ConfigDict(arbitrary_types_allowed=True)

    def __init__(self, bound: Runnable[Any, Any] | None = None, **kwargs: Any) -> None:
        if bound is not None:
            kwargs["bound"] = bound
        super().__init__(**kwargs)

    @model_validator(mode="after")
    def _check_bound(self) -> HallucinationGuard:
        _check_guarded(self.bound)
        if not isinstance(self.policy, Policy):
            raise NotGuardedError(f"`policy` must be a guardrail.Policy, got {type(self.policy).__name__}")
        return self

    @classmethod
    def is_lc_serializable(cls) -> bool:
        return False

    # -- invoke ----------------------------------------------------------------------------

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> BaseMessage:
        return self._call_with_config(self._run, input, config, run_type="chain", **kwargs)

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> BaseMessage:
        return await self._acall_with_config(self._arun, input, config, run_type="chain", **kwargs)

    def _run(self, input: Any, run_manager: CallbackManagerForChainRun, config: RunnableConfig) -> BaseMessage:
        tried: list[tuple[BaseMessage, Evidence, str]] = []
        for attempt in self._attempts(run_manager.tags):
            change = self._change(attempt, tried)
            output = self.bound.invoke(input, self._child_config(config, run_manager, attempt, change))
            tried.append((*_scored(output), _label(change)))
            if not tried[-1][1].hallucinated:
                break
        return self._decide(tried)

    async def _arun(
        self, input: Any, run_manager: AsyncCallbackManagerForChainRun, config: RunnableConfig
    ) -> BaseMessage:
        tried: list[tuple[BaseMessage, Evidence, str]] = []
        for attempt in self._attempts(run_manager.tags):
            change = self._change(attempt, tried)
            output = await self.bound.ainvoke(input, self._child_config(config, run_manager, attempt, change))
            tried.append((*_scored(output), _label(change)))
            if not tried[-1][1].hallucinated:
                break
        return self._decide(tried)

    # -- stream ----------------------------------------------------------------------------

    def stream(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Iterator[BaseMessage]:
        yield from self._transform_stream_with_config(
            iter([input]), self._transform, config, run_type="chain", **kwargs
        )

    async def astream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[BaseMessage]:
        async def inputs() -> AsyncIterator[Any]:
            yield input

        async for chunk in self._atransform_stream_with_config(
            inputs(), self._atransform, config, run_type="chain", **kwargs
        ):
            yield chunk

    def _transform(
        self, inputs: Iterator[Any], run_manager: CallbackManagerForChainRun, config: RunnableConfig
    ) -> Iterator[BaseMessage]:
        input = _single(inputs)
        tried: list[tuple[BaseMessage, Evidence, str]] = []
        passthrough = self.policy.on_hallucination == "flag"
        for attempt in self._attempts(run_manager.tags):
            change = self._change(attempt, tried)
            streamed = _StreamedAttempt(passthrough)
            for chunk in self.bound.stream(input, self._child_config(config, run_manager, attempt, change)):
                if streamed.take(chunk):
                    yield chunk
            tried.append((*_scored(streamed.merged), _label(change)))
            if not tried[-1][1].hallucinated:
                break
        yield from self._finish_stream(tried, streamed.held, passthrough)

    async def _atransform(
        self, inputs: AsyncIterator[Any], run_manager: AsyncCallbackManagerForChainRun, config: RunnableConfig
    ) -> AsyncIterator[BaseMessage]:
        input = [x async for x in inputs][-1]  # the last input, as in _single
        tried: list[tuple[BaseMessage, Evidence, str]] = []
        passthrough = self.policy.on_hallucination == "flag"
        for attempt in self._attempts(run_manager.tags):
            change = self._change(attempt, tried)
            streamed = _StreamedAttempt(passthrough)
            async for chunk in self.bound.astream(input, self._child_config(config, run_manager, attempt, change)):
                if streamed.take(chunk):
                    yield chunk
            tried.append((*_scored(streamed.merged), _label(change)))
            if not tried[-1][1].hallucinated:
                break
        for chunk in self._finish_stream(tried, streamed.held, passthrough):
            yield chunk

    def _finish_stream(
        self, tried: list[tuple[BaseMessage, Evidence, str]], held: list[Any], passthrough: bool
    ) -> Iterator[BaseMessage]:
        """The last chunks: the held answer (or the chosen one, or the abstention) + the verdict."""
        final = self._decide(tried)
        chosen_is_last = final.response_metadata[METADATA_KEY]["guard"]["chosen"] == len(tried) - 1
        action = final.response_metadata[METADATA_KEY]["action"]
        metadata = {k: v for k, v in final.response_metadata.items() if k != STEPS_KEY}
        if passthrough or (chosen_is_last and action != Action.ABSTAIN.value):
            text_chunks = [c for c in held if not _carries_verdict(c)]
            yield from text_chunks
            yield AIMessageChunk(content="", response_metadata=metadata, chunk_position="last")
        else:
            yield AIMessageChunk(content=final.text, response_metadata=metadata, chunk_position="last")

    # -- steps -----------------------------------------------------------------------------

    def _attempts(self, tags: list[str]) -> range:
        """Attempt numbers of this run; under ``with_retry`` attempt N starts at N."""
        first = max([int(m.group(1)) for t in tags if (m := _RETRY_TAG.match(t))], default=1)
        return range(first, first + self.policy.attempts)

    def _change(self, attempt: int, tried: list[tuple[BaseMessage, Evidence, str]]) -> dict[str, Any]:
        change = self.policy.retry_decoding(attempt)
        if "feedback" in change:
            previous = tried[-1][1].answer if tried else None
            change = (
                {**change, "previous_answer": previous}
                if previous
                else {k: v for k, v in change.items() if k != "feedback"}
            )
        return change

    @staticmethod
    def _child_config(
        config: RunnableConfig,
        run_manager: CallbackManagerForChainRun | AsyncCallbackManagerForChainRun,
        attempt: int,
        change: Mapping[str, Any],
    ) -> RunnableConfig:
        child = patch_config(config, callbacks=run_manager.get_child(f"spillguard:attempt:{attempt}"))
        child["metadata"] = {**ensure_config(config).get("metadata", {}), DECODING_KEY: dict(change)}
        return child

    def _decide(self, tried: list[tuple[BaseMessage, Evidence, str]]) -> BaseMessage:
        chosen = min(range(len(tried)), key=lambda i: tried[i][1].score)
        message, evidence, _ = tried[chosen]
        action = self.policy.decide(evidence.score, evidence.threshold)
        text = self.policy.abstain_text if action is Action.ABSTAIN else message.text
        data = {
            **evidence.data,
            "action": action.value,
            "text": text,
            "hallucinated": action is not Action.ALLOW,
            "guard": {
                "policy": self.policy.on_hallucination,
                "chosen": chosen,
                "attempts": [
                    {"answer": e.answer, "score": e.score if math.isfinite(e.score) else None, "decoding": label}
                    for _, e, label in tried
                ],
            },
        }
        final = AIMessage(
            content=text,
            response_metadata={**message.response_metadata, METADATA_KEY: data},
            usage_metadata=getattr(message, "usage_metadata", None),
            id=message.id,
        )
        if self.raise_on_hallucination and action is not Action.ALLOW:
            raise HallucinationFlagged(data)
        return final


def _check_guarded(bound: object) -> None:
    """Refuse runnables that can never carry spillguard scores; accept unknown ones."""
    if not isinstance(bound, Runnable):
        raise NotGuardedError(f"`bound` must be a LangChain Runnable ending in ChatSpillguard, got {bound!r}")
    last = _last_step(bound)
    if isinstance(last, ChatSpillguard):
        return
    if isinstance(last, (BaseChatModel, BaseLanguageModel)):
        raise NotGuardedError(
            f"`bound` ends in {type(last).__name__}, which does not produce spillguard scores; "
            "use langchain_spillguard.ChatSpillguard (a local Hugging Face model) as the chat model"
        )
    if isinstance(last, BaseOutputParser):
        raise NotGuardedError(
            f"`bound` ends in the output parser {type(last).__name__}, which drops the model's "
            "scores; put the parser after the guard: HallucinationGuard(prompt | chat) | parser"
        )


def _last_step(runnable: Runnable[Any, Any]) -> Runnable[Any, Any]:
    while True:
        if isinstance(runnable, RunnableSequence):
            runnable = runnable.last
        elif isinstance(runnable, RunnableBinding):
            runnable = runnable.bound
        else:
            return runnable


def _scored(output: object) -> tuple[BaseMessage, Evidence]:
    if not isinstance(output, BaseMessage):
        raise UnscoredResponseError(f"the guarded runnable's output ({type(output).__name__})")
    evidence = evidence_of(output)
    if evidence is None:
        raise UnscoredResponseError(f"the guarded runnable's {type(output).__name__}")
    return output, evidence


class _StreamedAttempt:
    """The chunks of one streamed attempt: merged for scoring, held back unless passed through."""

    def __init__(self, passthrough: bool) -> None:
        self.passthrough = passthrough
        self.merged: Any = None
        self.held: list[Any] = []

    def take(self, chunk: Any) -> bool:
        """Absorb ``chunk``; True when it should be yielded at once (flag policy, text only)."""
        self.merged = chunk if self.merged is None else self.merged + chunk
        if self.passthrough and not _carries_verdict(chunk):
            return True
        self.held.append(chunk)
        return False


def _carries_verdict(chunk: object) -> bool:
    return isinstance(chunk, BaseMessage) and METADATA_KEY in chunk.response_metadata


def _single(inputs: Iterator[Any]) -> Any:
    items = list(inputs)
    return items[0] if len(items) == 1 else items[-1]


def _label(change: Mapping[str, Any]) -> str:
    if not change:
        return "greedy"
    label = f"sample(temperature={change['temperature']}, seed={change['seed']})"
    return label + " + feedback" if "feedback" in change else label
