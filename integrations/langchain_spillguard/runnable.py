"""``SpillguardRunnable``: a Runnable that flags, retries or abstains on high-spill answers.

>>> guarded = SpillguardRunnable(prompt | ChatSpillguard(), policy="retry")
>>> (guarded | StrOutputParser()).invoke({"question": "What is the capital of Honduras?"})

Control flow lives here, not in callbacks: the core's attempt loop
(:func:`guardrail.run_attempts`) runs the wrapped chain once per attempt. Each retry's
:class:`guardrail.RetryStep` (sampling temperature, seed, feedback turn) reaches the guarded chat
models of the chain through the run's config metadata under
:data:`~langchain_spillguard.evidence.STEP_KEY`; they generate exactly that attempt. Every
output is judged on exactly the text it returns: its sealed evidence must be about that text.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForChainRun, CallbackManagerForChainRun
from langchain_core.language_models import BaseChatModel, BaseLanguageModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.output_parsers import BaseOutputParser
from langchain_core.runnables import Runnable, RunnableBinding, RunnableConfig, RunnableSequence, RunnableSerializable
from langchain_core.runnables.config import ensure_config, patch_config
from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator

from guardrail import (
    METADATA_KEY,
    Action,
    AttemptLoop,
    Decision,
    Evidence,
    HallucinationDetected,
    InvalidInputError,
    Judged,
    NotGuardedError,
    Policy,
    RetryStep,
    UnscoredResponseError,
    arun_attempts,
    run_attempts,
)
from guardrail.policy import as_policy
from guardrail.validation import finite_or_none
from langchain_spillguard.chat_model import ChatSpillguard, invalid_arguments
from langchain_spillguard.evidence import QUESTION_KEY, STEP_KEY, STEPS_KEY, evidence_of

__all__ = ["SpillguardRunnable"]

_RETRY_TAG = re.compile(r"^retry:attempt:(\d+)$")


class SpillguardRunnable(RunnableSerializable[Any, BaseMessage]):
    """Guards a :class:`ChatSpillguard` (or a chain ending in one) with a flag/retry/abstain policy.

    Args:
        bound: the chat model or chain to guard; its output must be the model's message.
        policy: a :class:`guardrail.Policy` or ``"flag"`` (default: marks the answer),
            ``"retry"`` (regenerates up to ``max_attempts`` attempts and keeps the first that
            passes, else the lowest score) or ``"abstain"`` (returns ``abstain_text`` with the
            evidence in metadata).
        question_key: in RAG, the key of the chain input that holds the user's question (or, for
            a string input, the input itself when set): the guarded chat models treat that text
            as the question when localizing the answer, not the prompt that also holds the
            retrieved context (it travels in the run metadata under
            :data:`~langchain_spillguard.QUESTION_KEY`).
        raise_on_hallucination: raise :class:`guardrail.HallucinationDetected` when the final
            answer is still above the threshold (after the policy), for ``with_retry`` /
            ``with_fallbacks``. Under ``with_retry`` each retry also changes the decoding.

    The output is the chosen ``AIMessage``; ``response_metadata["spillguard"]`` holds the final
    ``action`` and ``text`` and, under ``"guard"``, every attempt's answer, score and decoding.
    Streaming passes tokens through under ``flag``; under ``retry``/``abstain`` it holds an
    answer back until it is judged, then emits it or the abstention (a streamed token cannot be
    taken back).

    Raises:
        NotGuardedError: ``bound`` is a chat model other than ``ChatSpillguard``, an LLM, or
            ends in an output parser (which drops the scores).
        UnscoredResponseError: at run time, when an output carries no valid evidence for its text.
    """

    bound: Runnable[Any, Any]
    policy: Policy = Field(default_factory=Policy)
    question_key: str | None = None
    raise_on_hallucination: bool = False

    model_config = ConfigDict(arbitrary_types_allowed=True)

    def __init__(self, bound: Runnable[Any, Any] | None = None, **kwargs: Any) -> None:
        if bound is not None:
            kwargs["bound"] = bound
        try:
            super().__init__(**kwargs)
        except ValidationError as exc:
            raise invalid_arguments(type(self).__name__, exc) from None

    @field_validator("policy", mode="before")
    @classmethod
    def _as_policy(cls, value: object) -> Policy:
        return as_policy(value)

    @model_validator(mode="after")
    def _check_bound(self) -> SpillguardRunnable:
        _check_guarded(self.bound)
        return self

    @classmethod
    def is_lc_serializable(cls) -> bool:
        return False

    def _question(self, input: Any) -> str | None:
        """The user's question in the chain input, under ``question_key``."""
        if self.question_key is None:
            return None
        question = input if isinstance(input, str) else None
        if isinstance(input, Mapping):
            question = input.get(self.question_key)
        if not isinstance(question, str) or not question.strip():
            raise InvalidInputError(
                f"`question_key`={self.question_key!r}: the chain input must be a str or a mapping with a "
                f"non-empty str under that key, got {input!r}"
            )
        return question

    # -- invoke ----------------------------------------------------------------------------

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> BaseMessage:
        return self._call_with_config(self._run, input, config, run_type="chain", **kwargs)

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> BaseMessage:
        return await self._acall_with_config(self._arun, input, config, run_type="chain", **kwargs)

    def _run(self, input: Any, run_manager: CallbackManagerForChainRun, config: RunnableConfig) -> BaseMessage:
        question = self._question(input)

        def attempt(step: RetryStep) -> Judged[BaseMessage]:
            return judged(self.bound.invoke(input, _child_config(config, run_manager, step, question)), step)

        return self._finish(run_attempts(self.policy, attempt, first=_first_attempt(run_manager.tags)))

    async def _arun(
        self, input: Any, run_manager: AsyncCallbackManagerForChainRun, config: RunnableConfig
    ) -> BaseMessage:
        question = self._question(input)

        async def attempt(step: RetryStep) -> Judged[BaseMessage]:
            return judged(await self.bound.ainvoke(input, _child_config(config, run_manager, step, question)), step)

        return self._finish(await arun_attempts(self.policy, attempt, first=_first_attempt(run_manager.tags)))

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
        input = list(inputs)[-1]
        question = self._question(input)
        loop: AttemptLoop[BaseMessage] = AttemptLoop(self.policy, first=_first_attempt(run_manager.tags))
        streamed = _StreamedAttempt(self.policy)
        while (step := loop.next_step()) is not None:
            streamed = _StreamedAttempt(self.policy)
            for chunk in self.bound.stream(input, _child_config(config, run_manager, step, question)):
                if streamed.take(chunk):
                    yield chunk
            loop.record(judged(streamed.message(), step))
        yield from self._finish_stream(loop.decide(), streamed)

    async def _atransform(
        self, inputs: AsyncIterator[Any], run_manager: AsyncCallbackManagerForChainRun, config: RunnableConfig
    ) -> AsyncIterator[BaseMessage]:
        input = [x async for x in inputs][-1]
        question = self._question(input)
        loop: AttemptLoop[BaseMessage] = AttemptLoop(self.policy, first=_first_attempt(run_manager.tags))
        streamed = _StreamedAttempt(self.policy)
        while (step := loop.next_step()) is not None:
            streamed = _StreamedAttempt(self.policy)
            async for chunk in self.bound.astream(input, _child_config(config, run_manager, step, question)):
                if streamed.take(chunk):
                    yield chunk
            loop.record(judged(streamed.message(), step))
        for chunk in self._finish_stream(loop.decide(), streamed):
            yield chunk

    # -- the decision ----------------------------------------------------------------------

    def _finish(self, decision: Decision[BaseMessage]) -> AIMessage:
        """The chosen message with the final decision in its (resealed) metadata."""
        final = decided_message(decision.best.result, decision, self.policy)
        if self.raise_on_hallucination and decision.action is not Action.ALLOW:
            raise HallucinationDetected(Evidence.from_dict(final.response_metadata[METADATA_KEY]))
        return final

    def _finish_stream(self, decision: Decision[BaseMessage], last: _StreamedAttempt) -> Iterator[BaseMessage]:
        """The last chunks: the held answer (or the abstention) and the decision."""
        final = self._finish(decision)
        metadata = {k: v for k, v in final.response_metadata.items() if k != STEPS_KEY}
        if last.passthrough or (
            decision.chosen == len(decision.attempts) - 1 and decision.action is not Action.ABSTAIN
        ):
            yield from last.held_text()
            yield AIMessageChunk(content="", response_metadata=metadata, chunk_position="last")
        else:
            yield AIMessageChunk(content=final.text, response_metadata=metadata, chunk_position="last")


def decided_message(best: BaseMessage, decision: Decision[Any], policy: Policy) -> AIMessage:
    """``best`` (the kept attempt's message) with the final action, text and every attempt in
    its resealed evidence, and the decided text as its content."""
    evidence = evidence_of(best)
    assert evidence is not None  # every recorded attempt was judged
    data = evidence.updated(
        action=decision.action.value,
        text=decision.text,
        hallucinated=decision.action is not Action.ALLOW,
        guard={
            "policy": policy.on_hallucination,
            "chosen": decision.chosen,
            "attempts": [
                {"answer": j.answer, "score": finite_or_none(j.score), "decoding": j.step.label()}
                for j in decision.attempts
            ],
        },
    )
    return AIMessage(
        content=decision.text,
        response_metadata={**best.response_metadata, METADATA_KEY: data},
        usage_metadata=getattr(best, "usage_metadata", None),
        id=best.id,
        name=best.name,
    )


def judged(output: object, step: RetryStep) -> Judged[BaseMessage]:
    """An output with its evidence, which must be sealed and about exactly its text."""
    if not isinstance(output, BaseMessage):
        raise UnscoredResponseError(
            f"the guarded runnable's output ({type(output).__name__})",
            "it is not a chat message with spillguard metadata",
        )
    evidence = evidence_of(output)
    if evidence is None:
        raise UnscoredResponseError(
            f"the guarded runnable's {type(output).__name__}",
            "it carries no spillguard scores (no response_metadata['spillguard']); produce it with ChatSpillguard "
            "and keep the AIMessage (put output parsers after the guard)",
        )
    evidence.check(output.text, what=f"the guarded runnable's {type(output).__name__}")
    return Judged(output, evidence.answer, evidence.score, evidence.threshold, step)


def _child_config(
    config: RunnableConfig,
    run_manager: CallbackManagerForChainRun | AsyncCallbackManagerForChainRun,
    step: RetryStep,
    question: str | None,
) -> RunnableConfig:
    child = patch_config(config, callbacks=run_manager.get_child(f"spillguard:attempt:{step.attempt}"))
    metadata = {**ensure_config(config).get("metadata", {}), STEP_KEY: step.to_dict()}
    if question is not None:
        metadata[QUESTION_KEY] = question
    child["metadata"] = metadata
    return child


def _first_attempt(tags: list[str]) -> int:
    """Under ``with_retry`` attempt N of the outer retry starts this loop at attempt N."""
    return max([int(m.group(1)) for t in tags if (m := _RETRY_TAG.match(t))], default=1)


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
            "scores; put the parser after the guard: SpillguardRunnable(prompt | chat) | parser"
        )


def _last_step(runnable: Runnable[Any, Any]) -> Runnable[Any, Any]:
    while True:
        if isinstance(runnable, RunnableSequence):
            runnable = runnable.last
        elif isinstance(runnable, RunnableBinding):
            runnable = runnable.bound
        else:
            return runnable


class _StreamedAttempt:
    """The chunks of one streamed attempt: merged for judging, held back unless passed through."""

    def __init__(self, policy: Policy) -> None:
        self.passthrough = policy.on_hallucination == "flag"
        self.merged: Any = None
        self.held: list[Any] = []

    def take(self, chunk: Any) -> bool:
        """Absorb ``chunk``; true when it should be yielded at once (flag policy, text only)."""
        self.merged = chunk if self.merged is None else self.merged + chunk
        if self.passthrough and not _carries_verdict(chunk):
            return True
        self.held.append(chunk)
        return False

    def message(self) -> object:
        """The merged output of the attempt (``None`` when nothing was streamed)."""
        return self.merged

    def held_text(self) -> list[Any]:
        """The held chunks without the one that carries the inner verdict."""
        return [c for c in self.held if not _carries_verdict(c)]


def _carries_verdict(chunk: object) -> bool:
    return isinstance(chunk, BaseMessage) and METADATA_KEY in chunk.response_metadata
