"""``SpillguardChatEngine``: gate the replies of any LlamaIndex chat engine built on ``SpillguardLLM``.

>>> llm = SpillguardLLM.default(calibration=Calibration.bundled("rag"))
>>> chat = SpillguardChatEngine(index.as_chat_engine(chat_mode="context", llm=llm), "abstain")
>>> reply = chat.chat("Who built the lighthouse?")
>>> reply.response, reply.metadata["spillguard"]["action"]
"""

from __future__ import annotations

import threading
from collections.abc import AsyncGenerator, Generator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from llama_index.core.base.base_query_engine import BaseQueryEngine
from llama_index.core.base.llms.types import ChatMessage, ChatResponse, MessageRole
from llama_index.core.chat_engine.types import AgentChatResponse, BaseChatEngine, StreamingAgentChatResponse

from guardrail import (
    METADATA_KEY,
    Decision,
    InvalidInputError,
    Judged,
    Policy,
    RetryStep,
    arun_attempts,
    run_attempts,
)
from guardrail.policy import as_policy
from guardrail.validation import check_bool, check_finite, check_text
from llama_index_spillguard.judging import Answer, check_llm, judged, report
from llama_index_spillguard.query_engine import RAG_ABSTAIN_TEXT
from llama_index_spillguard.scope import QueryScope, aiterate_in, iterate_in, query_scope

__all__ = ["SpillguardChatEngine", "SpillguardStreamingChatResponse"]


@dataclass
class SpillguardStreamingChatResponse(StreamingAgentChatResponse):
    """A :class:`StreamingAgentChatResponse` that also carries the verdict.

    Attributes:
        metadata: ``{"spillguard": evidence}`` (as on an :class:`AgentChatResponse`); set when
            the stream ends under a flag policy, at once under retry and abstain.
    """

    metadata: dict[str, Any] | None = None


class SpillguardChatEngine(BaseChatEngine):
    """Wraps a chat engine whose LLM is a :class:`SpillguardLLM` and gates its replies.

    Works with the engines of ``index.as_chat_engine(chat_mode=...)``: ``"context"``,
    ``"condense_plus_context"``, ``"condense_question"`` and ``"simple"``, and any other
    :class:`BaseChatEngine` whose ``chat`` takes ``chat_history``. Each turn runs the core's
    attempt loop (:func:`guardrail.run_attempts`), one wrapped ``chat`` per attempt inside a
    query scope, exactly as :class:`SpillguardQueryEngine` does: the reply is judged by the
    LLM call whose output is the reply text (not the condensing call), localized against the
    user's message, and ``policy`` flags it, retries the turn (sampled, optionally with
    feedback) or abstains.

    **The conversation lives here.** Every attempt restarts the wrapped engine from this
    engine's history (``reset()``, then ``chat(message, chat_history=history)``), so retried
    attempts never leak into the conversation; after the decision the user message and the
    reply that was returned (the kept answer, or the abstention text) are appended. Read it
    with :attr:`chat_history`; the wrapped engine's own memory is scratch.

    Replies are :class:`AgentChatResponse` with ``metadata["spillguard"]`` (the evidence of the
    query engine: action, score, threshold, span, every attempt and its LLM calls). Streams
    are :class:`SpillguardStreamingChatResponse`: under ``"flag"`` tokens arrive as generated
    and the turn enters the history, with its verdict in ``metadata``, when the stream has been
    consumed; under ``"retry"`` and ``"abstain"`` the reply is judged before anything is shown
    and streams in one piece. One engine holds one conversation: do not chat on it from two
    threads or tasks at once (make one engine per conversation, as with LlamaIndex's own).

    Args:
        chat_engine: any chat engine whose replies come from a :class:`SpillguardLLM`.
        policy: a :class:`guardrail.Policy`, or its ``on_hallucination`` as a string (then
            the abstention text is :data:`RAG_ABSTAIN_TEXT`); default flag.
        threshold: override the LLM calibration's threshold.
        chat_history: the conversation so far; default: the wrapped engine's.
        grounding: score the engine's LLM calls with the grounding feature added to the LLM's
            calibration, as :class:`SpillguardQueryEngine` does by default: for chat engines that
            retrieve (``context``, ``condense_plus_context``, ``condense_question``). Off by
            default, since a chat engine may answer without any passages (``simple``). Earlier
            replies in the history ground nothing.

    Raises:
        NotGuardedError: the engine's LLM is not a :class:`SpillguardLLM` (at construction
            when the engine exposes it, else at chat time).
        NoContextError: nothing was retrieved and nothing was generated.
        UnscoredResponseError: the reply is not the output of a guarded call.
        InvalidInputError: empty message, a history that is not a list of ``ChatMessage``.
    """

    def __init__(
        self,
        chat_engine: BaseChatEngine,
        policy: Policy | str | None = None,
        *,
        threshold: float | None = None,
        chat_history: Sequence[ChatMessage] | None = None,
        grounding: bool = False,
    ) -> None:
        given: object = chat_engine  # any object may arrive here
        if not isinstance(given, BaseChatEngine):
            hint = "; wrap a query engine in SpillguardQueryEngine" if isinstance(given, BaseQueryEngine) else ""
            raise InvalidInputError(
                f"`chat_engine` must be a LlamaIndex BaseChatEngine, got {type(given).__name__}: {given!r}{hint}"
            )
        check_llm(chat_engine, "chat_engine")
        self._chat_engine = chat_engine
        self._policy = as_policy(policy, abstain_text=RAG_ABSTAIN_TEXT)
        self._threshold = None if threshold is None else check_finite("threshold", threshold)
        self._grounding = check_bool("grounding", grounding)
        self._lock = threading.Lock()
        self._history = _history("chat_history", chat_engine.chat_history if chat_history is None else chat_history)

    @property
    def policy(self) -> Policy:
        """What happens to a reply above the threshold."""
        return self._policy

    @property
    def chat_engine(self) -> BaseChatEngine:
        """The wrapped engine."""
        return self._chat_engine

    @property
    def chat_history(self) -> list[ChatMessage]:
        """The conversation: user messages and the replies that were returned."""
        with self._lock:
            return list(self._history)

    def reset(self) -> None:
        """Forget the conversation (here and in the wrapped engine)."""
        with self._lock:
            self._history = []
        self._chat_engine.reset()

    def _scope(
        self, message: str, step: RetryStep, history: Sequence[ChatMessage]
    ) -> AbstractContextManager[QueryScope]:
        """The scope of one attempt at ``message``: this engine's grounding, under which the
        conversation's earlier replies ground nothing (:meth:`QueryScope.sources`)."""
        replies = [m.content for m in history if m.role == MessageRole.ASSISTANT and m.content]
        return query_scope(message, step=step, grounded=self._grounding, written=replies)

    # -- chat ------------------------------------------------------------------------------

    def chat(self, message: str, chat_history: list[ChatMessage] | None = None) -> AgentChatResponse:
        """Answer ``message``, judged and decided by the policy (``chat_history`` replaces the
        conversation first, as in LlamaIndex's engines)."""
        message, history = self._begin(message, chat_history)

        def attempt(step: RetryStep) -> Judged[Answer[AgentChatResponse]]:
            with self._scope(message, step, history) as scope:
                self._chat_engine.reset()
                response = _settle(self._chat_engine.chat(message, chat_history=list(history)))
            return self._judged(message, response, scope, step)

        return self._reply(message, run_attempts(self._policy, attempt))

    async def achat(self, message: str, chat_history: list[ChatMessage] | None = None) -> AgentChatResponse:
        """:meth:`chat` for async code."""
        message, history = self._begin(message, chat_history)

        async def attempt(step: RetryStep) -> Judged[Answer[AgentChatResponse]]:
            with self._scope(message, step, history) as scope:
                self._chat_engine.reset()
                response = await _asettle(await self._chat_engine.achat(message, chat_history=list(history)))
            return self._judged(message, response, scope, step)

        return self._reply(message, await arun_attempts(self._policy, attempt))

    def stream_chat(
        self, message: str, chat_history: list[ChatMessage] | None = None
    ) -> SpillguardStreamingChatResponse:
        """Stream the reply (live under a flag policy; judged first under retry and abstain)."""
        if not self._policy.streams_live:
            return _as_stream(self.chat(message, chat_history))
        message, history = self._begin(message, chat_history)
        step = self._policy.step(1)
        with self._scope(message, step, history) as scope:
            self._chat_engine.reset()
            inner = self._chat_engine.stream_chat(message, chat_history=list(history))

        def replies() -> Generator[ChatResponse, None, None]:
            text = ""
            for delta in iterate_in(scope, inner.response_gen):
                text += delta
                yield _chunk(text, delta)
            out.metadata = self._finish(message, text, inner, scope, step).metadata

        out = SpillguardStreamingChatResponse(
            chat_stream=replies(), sources=list(inner.sources), source_nodes=list(inner.source_nodes),
            is_writing_to_memory=False,
        )  # fmt: skip
        return out

    async def astream_chat(
        self, message: str, chat_history: list[ChatMessage] | None = None
    ) -> SpillguardStreamingChatResponse:
        """:meth:`stream_chat` for async code."""
        if not self._policy.streams_live:
            return _as_stream(await self.achat(message, chat_history))
        message, history = self._begin(message, chat_history)
        step = self._policy.step(1)
        with self._scope(message, step, history) as scope:
            self._chat_engine.reset()
            inner = await self._chat_engine.astream_chat(message, chat_history=list(history))

        async def replies() -> AsyncGenerator[ChatResponse, None]:
            text = ""
            async for delta in aiterate_in(scope, inner.async_response_gen()):
                text += delta
                yield _chunk(text, delta)
            out.metadata = self._finish(message, text, inner, scope, step).metadata

        out = SpillguardStreamingChatResponse(
            achat_stream=replies(), sources=list(inner.sources), source_nodes=list(inner.source_nodes),
            is_writing_to_memory=False,
        )  # fmt: skip
        return out

    # -- steps -----------------------------------------------------------------------------

    def _begin(self, message: str, chat_history: list[ChatMessage] | None) -> tuple[str, list[ChatMessage]]:
        """The checked message and the history this turn starts from."""
        message = check_text("message", message)
        with self._lock:
            if chat_history is not None:
                self._history = _history("chat_history", chat_history)
            return message, list(self._history)

    def _judged(
        self, message: str, response: AgentChatResponse, scope: QueryScope, step: RetryStep
    ) -> Judged[Answer[AgentChatResponse]]:
        return judged(message, response, response.response, response.source_nodes, scope, step, self._threshold)

    def _finish(
        self, message: str, text: str, inner: StreamingAgentChatResponse, scope: QueryScope, step: RetryStep
    ) -> AgentChatResponse:
        """The end of a live stream: judge its text (the policy's one attempt) and record the turn."""
        response = AgentChatResponse(text.strip(), list(inner.sources), list(inner.source_nodes))
        judged_once = self._judged(message, response, scope, step)
        return self._reply(message, run_attempts(self._policy, lambda _: judged_once))

    def _reply(self, message: str, decision: Decision[Answer[AgentChatResponse]]) -> AgentChatResponse:
        """The reply to return; the turn enters the conversation."""
        response = decision.best.result.response
        evidence = report(message, decision, self._policy)
        with self._lock:
            self._history += [
                ChatMessage(role=MessageRole.USER, content=message),
                ChatMessage(role=MessageRole.ASSISTANT, content=decision.text),
            ]
        return AgentChatResponse(
            response=decision.text, sources=list(response.sources), source_nodes=list(response.source_nodes),
            metadata={**(response.metadata or {}), METADATA_KEY: evidence},
        )  # fmt: skip


def _history(name: str, messages: object) -> list[ChatMessage]:
    if not isinstance(messages, list | tuple) or not all(isinstance(m, ChatMessage) for m in messages):
        raise InvalidInputError(f"`{name}` must be a list of ChatMessage, got {messages!r}")
    return list(messages)


def _settle(response: AgentChatResponse | StreamingAgentChatResponse) -> AgentChatResponse:
    """A plain :class:`AgentChatResponse`, draining a stream."""
    if isinstance(response, StreamingAgentChatResponse):
        text = "".join(response.response_gen)
        return AgentChatResponse(text.strip(), list(response.sources), list(response.source_nodes))
    if not isinstance(response, AgentChatResponse):
        raise InvalidInputError(f"the wrapped engine must return an AgentChatResponse, got {type(response).__name__}")
    return response


async def _asettle(response: AgentChatResponse | StreamingAgentChatResponse) -> AgentChatResponse:
    if isinstance(response, StreamingAgentChatResponse):
        text = "".join([delta async for delta in response.async_response_gen()])
        return AgentChatResponse(text.strip(), list(response.sources), list(response.source_nodes))
    return _settle(response)


def _chunk(text: str, delta: str) -> ChatResponse:
    return ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=text), delta=delta)


def _as_stream(reply: AgentChatResponse) -> SpillguardStreamingChatResponse:
    """A decided reply as a stream of one piece (sync and async readers both work)."""

    def chunks() -> Generator[ChatResponse, None, None]:
        yield _chunk(reply.response, reply.response)

    async def achunks() -> AsyncGenerator[ChatResponse, None]:
        yield _chunk(reply.response, reply.response)

    return SpillguardStreamingChatResponse(
        chat_stream=chunks(), achat_stream=achunks(), sources=list(reply.sources),
        source_nodes=list(reply.source_nodes), is_writing_to_memory=False, metadata=reply.metadata,
    )  # fmt: skip
