"""``SpillguardQueryEngine``: gate the answers of any query engine built on ``SpillguardLLM``.

>>> engine = SpillguardQueryEngine(index.as_query_engine(llm=SpillguardLLM.default()), "abstain")
>>> response = engine.query("Who founded the lighthouse society?")
>>> response.response, response.metadata["spillguard"]["action"]
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator

from llama_index.core.base.base_query_engine import BaseQueryEngine
from llama_index.core.base.response.schema import RESPONSE_TYPE, AsyncStreamingResponse, Response, StreamingResponse
from llama_index.core.callbacks import CallbackManager
from llama_index.core.chat_engine.types import BaseChatEngine
from llama_index.core.instrumentation import get_dispatcher  # type: ignore[attr-defined]  # re-exported, no __all__
from llama_index.core.prompts.mixin import PromptMixinType
from llama_index.core.schema import QueryBundle

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
from llama_index_spillguard.scope import QueryScope, aiterate_in, iterate_in, query_scope

__all__ = ["RAG_ABSTAIN_TEXT", "SpillguardQueryEngine"]

RAG_ABSTAIN_TEXT = "The documents do not answer this question."
"""Default reply of an abstaining :class:`SpillguardQueryEngine`."""

dispatcher = get_dispatcher(__name__)


class SpillguardQueryEngine(BaseQueryEngine):
    """Wraps a query engine whose LLM is a :class:`SpillguardLLM` and gates its answers.

    The core's attempt loop (:func:`guardrail.run_attempts`) runs the wrapped engine once per
    attempt, inside a query scope, so the LLM records the verdicts of the calls made for this
    attempt only (concurrent queries, in threads or asyncio tasks, do not mix) and makes the
    attempt's :class:`guardrail.RetryStep`. The answer's verdict is that of the LLM call whose
    output is exactly the response text (the last call of a refine chain, the root of a tree
    summary); an engine that returns text no guarded call produced (``response_mode=
    "accumulate"``, say) is refused with :class:`guardrail.UnscoredResponseError`. Then, by
    ``policy``:

    - ``"flag"``: the answer is returned; ``metadata["spillguard"]`` says whether it scored
      above the threshold;
    - ``"retry"``: the query is answered again, up to ``policy.max_attempts`` times in all, each
      retry sampled with ``policy.retry_temperature`` and seed ``policy.seed + attempt``
      (strategy ``"feedback"`` also continues the LLM's conversation with the previous answer
      and ``policy.feedback``, exactly as the guard does; retrieval still uses the original
      query); the first answer at or below the threshold is kept, else the lowest-scoring one,
      and if still above the threshold ``policy.after_retries`` applies;
    - ``"abstain"``: ``policy.abstain_text`` replaces the answer; the source nodes and the
      evidence are kept.

    A streaming engine (``as_query_engine(streaming=True)``) stays streaming: under ``"flag"``
    the tokens reach the caller as they are generated and ``metadata["spillguard"]`` is set
    when the stream ends (``get_response()`` and ``print_response_stream()`` see it); under
    ``"retry"`` and ``"abstain"`` the answer is judged before anything is shown, so the
    stream yields the decided text in one piece.

    Args:
        query_engine: any query engine whose answers come from a :class:`SpillguardLLM`.
        policy: a :class:`guardrail.Policy`, or its ``on_hallucination`` as a string (then
            the abstention text is :data:`RAG_ABSTAIN_TEXT`); default flag.
        threshold: override the LLM calibration's threshold.
        grounding: score the engine's LLM calls with the grounding feature added to the LLM's
            calibration (:meth:`guardrail.Calibration.with_grounding`): an answer whose span is
            not in the prompt (the retrieved passages, instructions and query) scores
            :data:`guardrail.calibration.GROUNDING_VETO` more, which flags it. With
            the bundled model's default calibration that is ``Calibration.bundled("rag")``. A
            calibration that already has the feature, or scores the whole answer (rarely copied
            word for word), is used as is; ``False``: the LLM's calibration as is.
        callback_manager: default: the wrapped engine's.

    Raises:
        NotGuardedError: the engine's LLM is not a :class:`SpillguardLLM` (at construction
            when the engine exposes its synthesizer, else at query time).
        NoContextError: nothing was retrieved (e.g. an empty index), so nothing was answered.
        UnscoredResponseError: the response text is not the output of a guarded call.
        InvalidInputError: empty query.
    """

    def __init__(
        self,
        query_engine: BaseQueryEngine,
        policy: Policy | str | None = None,
        *,
        threshold: float | None = None,
        grounding: bool = True,
        callback_manager: CallbackManager | None = None,
    ) -> None:
        given: object = query_engine  # any object may arrive here
        if not isinstance(given, BaseQueryEngine):
            hint = "; wrap a chat engine in SpillguardChatEngine instead" if isinstance(given, BaseChatEngine) else ""
            raise InvalidInputError(
                "`query_engine` must be a LlamaIndex BaseQueryEngine, "
                f"got {type(query_engine).__name__}: {query_engine!r}{hint}"
            )
        check_llm(query_engine, "query_engine")
        self._query_engine = query_engine
        self._policy = as_policy(policy, abstain_text=RAG_ABSTAIN_TEXT)
        self._threshold = None if threshold is None else check_finite("threshold", threshold)
        self._grounding = check_bool("grounding", grounding)
        super().__init__(callback_manager or getattr(query_engine, "callback_manager", None))

    @property
    def policy(self) -> Policy:
        """What happens to an answer above the threshold."""
        return self._policy

    @property
    def query_engine(self) -> BaseQueryEngine:
        """The wrapped engine."""
        return self._query_engine

    def _get_prompt_modules(self) -> PromptMixinType:
        return {"query_engine": self._query_engine}

    @dispatcher.span
    def _query(self, query_bundle: QueryBundle) -> RESPONSE_TYPE:
        query = check_text("query", query_bundle.query_str)
        if self._policy.streams_live:
            step = self._policy.step(1)
            with query_scope(query, step=step, grounded=self._grounding) as scope:
                response = self._query_engine.query(query_bundle)
                if isinstance(response, StreamingResponse):
                    return self._live_stream(query, response, scope, step)
                answer = _settle(response)
            return self._respond(query, self._once(query, answer, scope, step))
        streamed = False

        def attempt(step: RetryStep) -> Judged[Answer[Response]]:
            nonlocal streamed
            with query_scope(query, step=step, grounded=self._grounding) as scope:
                response = self._query_engine.query(query_bundle)
                streamed = streamed or isinstance(response, StreamingResponse)
                answer = _settle(response)  # inside the scope: a stream's LLM call starts when drained
            return self._judged(query, answer, scope, step)

        response = self._respond(query, run_attempts(self._policy, attempt))
        return _as_stream(response) if streamed else response

    @dispatcher.span
    async def _aquery(self, query_bundle: QueryBundle) -> RESPONSE_TYPE:
        query = check_text("query", query_bundle.query_str)
        if self._policy.streams_live:
            step = self._policy.step(1)
            with query_scope(query, step=step, grounded=self._grounding) as scope:
                response = await self._query_engine.aquery(query_bundle)
                if isinstance(response, AsyncStreamingResponse):
                    return self._alive_stream(query, response, scope, step)
                answer = await _asettle(response)
            return self._respond(query, self._once(query, answer, scope, step))
        streamed = False

        async def attempt(step: RetryStep) -> Judged[Answer[Response]]:
            nonlocal streamed
            with query_scope(query, step=step, grounded=self._grounding) as scope:
                response = await self._query_engine.aquery(query_bundle)
                streamed = streamed or isinstance(response, AsyncStreamingResponse)
                answer = await _asettle(response)
            return self._judged(query, answer, scope, step)

        response = self._respond(query, await arun_attempts(self._policy, attempt))
        return _as_astream(response) if streamed else response

    # -- steps ---------------------------------------------------------------------------

    def _judged(self, query: str, response: Response, scope: QueryScope, step: RetryStep) -> Judged[Answer[Response]]:
        text = str(response.response or "")
        return judged(query, response, text, response.source_nodes, scope, step, self._threshold)

    def _once(self, query: str, response: Response, scope: QueryScope, step: RetryStep) -> Decision[Answer[Response]]:
        """The decision on the one attempt a flag policy makes (already made, in ``scope``)."""
        return run_attempts(self._policy, lambda _: self._judged(query, response, scope, step))

    def _respond(self, query: str, decision: Decision[Answer[Response]]) -> Response:
        response = decision.best.result.response
        metadata = {**(response.metadata or {}), METADATA_KEY: report(query, decision, self._policy)}
        return Response(response=decision.text, source_nodes=list(response.source_nodes), metadata=metadata)

    def _live_stream(
        self, query: str, inner: StreamingResponse, scope: QueryScope, step: RetryStep
    ) -> StreamingResponse:
        """Pass the tokens through as they come; judge the text when the stream ends."""

        def tokens() -> Generator[str, None, None]:
            text = ""
            for delta in iterate_in(scope, inner.response_gen):
                text += delta
                yield delta
            answer = Response(text, list(inner.source_nodes), inner.metadata)
            out.metadata = self._respond(query, self._once(query, answer, scope, step)).metadata

        out = StreamingResponse(tokens(), source_nodes=list(inner.source_nodes), metadata=dict(inner.metadata or {}))
        return out

    def _alive_stream(
        self, query: str, inner: AsyncStreamingResponse, scope: QueryScope, step: RetryStep
    ) -> AsyncStreamingResponse:
        """:meth:`_live_stream` for async engines."""

        async def tokens() -> AsyncGenerator[str, None]:
            text = ""
            async for delta in aiterate_in(scope, inner.async_response_gen()):
                text += delta
                yield delta
            answer = Response(text, list(inner.source_nodes), inner.metadata)
            out.metadata = self._respond(query, self._once(query, answer, scope, step)).metadata

        out = AsyncStreamingResponse(
            tokens(), source_nodes=list(inner.source_nodes), metadata=dict(inner.metadata or {})
        )
        return out


def _settle(response: RESPONSE_TYPE) -> Response:
    """A plain :class:`Response`, draining a stream (inside the query's scope)."""
    if isinstance(response, StreamingResponse):
        return response.get_response()
    if isinstance(response, AsyncStreamingResponse):
        raise InvalidInputError("an async streaming response needs `aquery`, got one from `query`")
    if not isinstance(response, Response):
        raise InvalidInputError(f"the wrapped engine must return a Response, got {type(response).__name__}")
    return response


async def _asettle(response: RESPONSE_TYPE) -> Response:
    if isinstance(response, AsyncStreamingResponse):
        return await response.get_response()
    return _settle(response)


def _as_stream(response: Response) -> StreamingResponse:
    """A decided answer as a stream of one piece (what a streaming engine's caller expects)."""

    def tokens() -> Generator[str, None, None]:
        yield response.response or ""

    return StreamingResponse(tokens(), list(response.source_nodes), response.metadata)


def _as_astream(response: Response) -> AsyncStreamingResponse:
    async def tokens() -> AsyncGenerator[str, None]:
        yield response.response or ""

    return AsyncStreamingResponse(tokens(), list(response.source_nodes), response.metadata)
