"""``SpilledEnergyLLM``: a LlamaIndex LLM over a local Hugging Face model whose answers carry scores.

>>> from llama_index.core import Settings
>>> Settings.llm = SpilledEnergyLLM.default()          # bundled SmolLM2-135M-Instruct
>>> r = Settings.llm.complete("What is the capital of France?")
>>> r.additional_kwargs["spilled_energy"]["action"], r.logprobs[0][0].logprob
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import Any

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.callbacks import CallbackManager
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.custom import CustomLLM

from guardrail import Guard, InvalidInputError, Policy, Verdict
from guardrail.locks import async_model_lock
from llama_index_spillguard.evidence import (
    EVIDENCE_KEY,
    verdict_evidence,
    verdict_logprobs,
)
from llama_index_spillguard.scope import QueryScope, current_scope

__all__ = ["SpilledEnergyLLM"]

GENERATION_KEYS = frozenset(
    {"max_new_tokens", "do_sample", "temperature", "top_k", "top_p", "repetition_penalty", "stop_strings"}
)
"""Decoding options accepted per call (and in ``generate_kwargs``)."""

_CALL_KEYS = frozenset({"seed", "localize_in", "raw"})


class SpilledEnergyLLM(CustomLLM):
    """A local causal LM guarded by spilled energy, as a LlamaIndex LLM.

    Every response carries the guard's verdict: ``additional_kwargs["spilled_energy"]`` (a
    JSON-ready dict: action, score, threshold, span, per-token metrics), ``logprobs`` (one
    :class:`~llama_index.core.base.llms.types.LogProb` per answer token) and ``raw`` (the
    :class:`guardrail.Verdict` itself). The response text is ``verdict.text``: the answer, or
    the guard policy's abstention text. Inside a :class:`GuardedQueryEngine` the engine's
    policy decides instead and the LLM returns the answer itself.

    Calls on one model are serialized by a lock; async methods run the model in a worker
    thread (``asyncio.to_thread``) so the event loop stays free, and wait for the model in the
    event loop (an asyncio lock), never in a worker thread.

    Args:
        guard: the :class:`guardrail.Guard` to use; default ``Guard.default()`` (the bundled
            SmolLM2-135M-Instruct), or ``Guard.from_pretrained(model_path)``.
        model_path: a local model directory or ``.gguf`` file (instead of ``guard``).
        guard_kwargs: keyword arguments for ``Guard.default`` / ``Guard.from_pretrained``.
        generate_kwargs: default decoding options (``max_new_tokens``, ``do_sample``,
            ``temperature``, ``top_k``, ``top_p``, ``repetition_penalty``, ``stop_strings``).
        callback_manager: LlamaIndex callback manager.
        **kwargs: other :class:`~llama_index.core.llms.LLM` fields (``system_prompt``, ...).
    """

    model_name: str = Field(description="Name of the guarded model.")
    context_window: int = Field(gt=0, description="The model's context window in tokens.")
    num_output: int = Field(gt=0, description="Most new tokens per answer.")
    is_chat_model: bool = Field(description="Whether prompts go through the tokenizer's chat template.")
    generate_kwargs: dict[str, Any] = Field(default_factory=dict, description="Default decoding options.")

    _guard: Guard = PrivateAttr()
    _engine_guard: Guard = PrivateAttr()

    def __init__(
        self,
        guard: Guard | None = None,
        *,
        model_path: str | os.PathLike[str] | None = None,
        guard_kwargs: Mapping[str, Any] | None = None,
        generate_kwargs: Mapping[str, Any] | None = None,
        callback_manager: CallbackManager | None = None,
        **kwargs: Any,
    ) -> None:
        guard = _make_guard(guard, model_path, guard_kwargs)
        options = dict(generate_kwargs or {})
        _check_generation("generate_kwargs", options)
        num_output = int(options.get("max_new_tokens", guard.max_new_tokens))
        super().__init__(
            model_name=kwargs.pop("model_name", guard.fingerprint.name),
            context_window=kwargs.pop("context_window", _context_window(guard)),
            num_output=num_output,
            is_chat_model=kwargs.pop("is_chat_model", bool(getattr(guard.tokenizer, "chat_template", None))),
            generate_kwargs=options,
            callback_manager=callback_manager,
            **kwargs,
        )
        self._guard = guard
        self._engine_guard = _flagging_view(guard)

    @classmethod
    def default(cls, **guard_kwargs: Any) -> SpilledEnergyLLM:
        """The bundled SmolLM2-135M-Instruct (loaded once per process)."""
        return cls(Guard.default(**guard_kwargs))

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str], **guard_kwargs: Any) -> SpilledEnergyLLM:
        """A model from a local directory or ``.gguf`` file."""
        return cls(model_path=path, guard_kwargs=guard_kwargs)

    @classmethod
    def class_name(cls) -> str:
        return "SpilledEnergyLLM"

    @property
    def guard(self) -> Guard:
        """The guard that generates and judges the answers."""
        return self._guard

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(
            context_window=self.context_window,
            num_output=self.num_output,
            is_chat_model=self.is_chat_model,
            is_function_calling_model=False,
            model_name=self.model_name,
            system_role=MessageRole.SYSTEM,
        )

    # -- completion ------------------------------------------------------------------------

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        """Answer ``prompt`` (chat-templated as one user message unless ``raw=True``)."""
        return self._complete(prompt, formatted, kwargs)

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        """Stream the answer; the last chunk (empty ``delta``) carries the verdict."""
        return self._stream_complete(prompt, formatted, kwargs)

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        """:meth:`complete` in a worker thread."""
        async with async_model_lock(self._guard.model):
            return await asyncio.to_thread(self._complete, prompt, formatted, kwargs)

    @llm_completion_callback()
    async def astream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseAsyncGen:
        """:meth:`stream_complete`, each step in a worker thread."""
        return _in_threads(self._stream_complete(prompt, formatted, kwargs), self._guard.model)

    # -- chat ------------------------------------------------------------------------------

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """Answer the conversation ``messages``."""
        return self._chat(messages, kwargs)

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        """Stream the reply; the last chunk (empty ``delta``) carries the verdict."""
        return self._stream_chat(messages, kwargs)

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """:meth:`chat` in a worker thread."""
        async with async_model_lock(self._guard.model):
            return await asyncio.to_thread(self._chat, messages, kwargs)

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        """:meth:`stream_chat`, each step in a worker thread."""
        return _in_threads(self._stream_chat(messages, kwargs), self._guard.model)

    # -- implementation --------------------------------------------------------------------

    def _complete(self, prompt: str, formatted: bool, kwargs: dict[str, Any]) -> CompletionResponse:
        question, options = self._completion_input(prompt, formatted, kwargs)
        verdict, scope = self._ask(question, options, "complete")
        return _completion(verdict, scope)

    def _chat(self, messages: Sequence[ChatMessage], kwargs: dict[str, Any]) -> ChatResponse:
        question, options = self._chat_input(messages, kwargs)
        verdict, scope = self._ask(question, options, "chat")
        completion = _completion(verdict, scope)
        return _chat_response(completion, completion.text)

    def _stream_complete(self, prompt: str, formatted: bool, kwargs: dict[str, Any]) -> CompletionResponseGen:
        question, options = self._completion_input(prompt, formatted, kwargs)
        return self._stream(question, options, "stream_complete", current_scope())

    def _stream_chat(self, messages: Sequence[ChatMessage], kwargs: dict[str, Any]) -> ChatResponseGen:
        question, options = self._chat_input(messages, kwargs)
        scope = current_scope()

        def gen() -> ChatResponseGen:
            for chunk in self._stream(question, options, "stream_chat", scope):
                yield _chat_response(chunk, chunk.text)

        return gen()

    def _completion_input(self, prompt: str, formatted: bool, kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        if not isinstance(prompt, str):
            raise InvalidInputError(f"`prompt` must be a str, got {type(prompt).__name__}: {prompt!r}")
        if not formatted and self.completion_to_prompt is not None:
            prompt = self.completion_to_prompt(prompt)
        return prompt, self._options(kwargs, raw_default=not self.is_chat_model)

    def _chat_input(self, messages: Sequence[ChatMessage], kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        if not self.is_chat_model:
            return self.messages_to_prompt(messages), self._options(kwargs, raw_default=True)
        return _as_dicts(messages), self._options(kwargs, raw_default=False)

    def _options(self, kwargs: Mapping[str, Any], *, raw_default: bool) -> dict[str, Any]:
        _check_generation("kwargs", kwargs, extra=_CALL_KEYS)
        options = {**self.generate_kwargs, **kwargs}
        options.setdefault("raw", raw_default)
        if not isinstance(options["raw"], bool):
            raise InvalidInputError(f"`raw` must be a bool, got {options['raw']!r}")
        return options

    def _ask(self, question: Any, options: dict[str, Any], kind: str) -> tuple[Verdict, QueryScope | None]:
        scope = current_scope()
        guard, generation = self._plan(options, scope)
        verdict = guard.ask(question, **generation)
        if scope is not None:
            scope.record(kind, verdict)
        return verdict, scope

    def _stream(
        self, question: Any, options: dict[str, Any], kind: str, scope: QueryScope | None
    ) -> CompletionResponseGen:
        guard, generation = self._plan(options, scope)
        text = ""
        for item in guard.stream(question, **generation):
            if isinstance(item, str):
                text += item
                yield CompletionResponse(text=text, delta=item)
            elif isinstance(item, Verdict):
                if scope is not None:
                    scope.record(kind, item)
                final = _completion(item, scope)
                yield final.model_copy(update={"text": text, "delta": ""})

    def _plan(self, options: dict[str, Any], scope: QueryScope | None) -> tuple[Guard, dict[str, Any]]:
        """The guard and the ``ask``/``stream`` keyword arguments (seed included) of one call."""
        generation = dict(options)
        if scope is None:
            return self._guard, generation
        generation.update(scope.decoding)
        generation.setdefault("localize_in", scope.query)
        if scope.seed is not None:
            generation["seed"] = scope.seed
        return self._engine_guard, generation


def _make_guard(
    guard: Guard | None, model_path: str | os.PathLike[str] | None, guard_kwargs: Mapping[str, Any] | None
) -> Guard:
    if guard is not None and model_path is not None:
        raise InvalidInputError(f"pass either `guard` or `model_path`, not both (model_path={model_path!r})")
    if guard is not None:
        if not isinstance(guard, Guard):
            raise InvalidInputError(f"`guard` must be a guardrail.Guard, got {type(guard).__name__}: {guard!r}")
        if guard_kwargs:
            raise InvalidInputError(
                f"`guard_kwargs` only apply when the guard is built here, got {dict(guard_kwargs)!r}"
            )
        return guard
    if model_path is not None:
        return Guard.from_pretrained(model_path, **dict(guard_kwargs or {}))
    return Guard.default(**dict(guard_kwargs or {}))


def _flagging_view(guard: Guard) -> Guard:
    """The same guard (same model) with a one-attempt flag policy, for use inside an engine."""
    if guard.policy.on_hallucination == "flag":
        return guard
    return guard.with_policy(Policy(on_hallucination="flag", abstain_text=guard.policy.abstain_text))


def _check_generation(name: str, options: Mapping[str, Any], extra: frozenset[str] = frozenset()) -> None:
    unknown = sorted(set(options) - GENERATION_KEYS - extra)
    if unknown:
        allowed = sorted(GENERATION_KEYS | extra)
        raise InvalidInputError(f"`{name}` has unknown options {unknown}; allowed: {allowed}")


def _context_window(guard: Guard) -> int:
    limit = getattr(getattr(guard.model, "config", None), "max_position_embeddings", None)
    return int(limit) if isinstance(limit, int) and limit > 0 else 2048


def _as_dicts(messages: Sequence[ChatMessage]) -> list[dict[str, str]]:
    if not messages:
        raise InvalidInputError(f"`messages` must be a non-empty list of ChatMessage, got {messages!r}")
    return [{"role": _role(m.role), "content": m.content or ""} for m in messages]


def _role(role: Any) -> str:
    value = getattr(role, "value", role)
    return "system" if value in ("system", "developer") else str(value)


def _completion(verdict: Verdict, scope: QueryScope | None) -> CompletionResponse:
    return CompletionResponse(
        text=verdict.text,
        additional_kwargs={EVIDENCE_KEY: verdict_evidence(verdict, query_id=scope.id if scope else None)},
        logprobs=verdict_logprobs(verdict),
        raw=verdict,
    )


def _chat_response(completion: CompletionResponse, text: str) -> ChatResponse:
    return ChatResponse(
        message=ChatMessage(role=MessageRole.ASSISTANT, content=text),
        delta=completion.delta,
        logprobs=completion.logprobs,
        additional_kwargs=completion.additional_kwargs,
        raw=completion.raw,
    )


async def _in_threads(gen: Iterator[Any], model: Any) -> AsyncIterator[Any]:
    """Iterate a blocking generator from async code, one step per worker-thread call.

    The model's asyncio lock is held for the whole stream, so other tasks wait in the loop.
    """
    done = object()
    step: Callable[[], Any] = lambda: next(gen, done)  # noqa: E731
    async with async_model_lock(model):
        try:
            while (item := await asyncio.to_thread(step)) is not done:
                yield item
        finally:
            await asyncio.to_thread(getattr(gen, "close", lambda: None))
