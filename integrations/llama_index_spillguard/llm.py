"""``SpillguardLLM``: a LlamaIndex LLM over a local Hugging Face model whose answers carry verdicts.

>>> from llama_index.core import Settings
>>> Settings.llm = SpillguardLLM.default(max_new_tokens=32)   # bundled SmolLM2-135M-Instruct
>>> r = Settings.llm.complete("What is the capital of France?")
>>> r.additional_kwargs["spillguard"]["action"], r.logprobs[0][0].logprob
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from llama_index.core.base.llms.generic_utils import (
    astream_completion_response_to_chat_response,
    completion_response_to_chat_response,
    stream_completion_response_to_chat_response,
)
from llama_index.core.base.llms.generic_utils import (
    messages_to_prompt as generic_messages_to_prompt,
)
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
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import ToolSelection
from llama_index.core.tools import BaseTool

from guardrail import METADATA_KEY, Guard, InvalidInputError, TokenStep, Verdict
from guardrail.grounding import prompt_sources
from guardrail.tools import choose_tools, parse_tool_calls, template_supports_tools, with_tool_calls
from guardrail.validation import check_finite, check_int, check_str
from llama_index_spillguard.evidence import verdict_evidence, verdict_logprobs
from llama_index_spillguard.messages import to_chat_dicts, tool_call_kwargs, tool_selections, tool_specs
from llama_index_spillguard.scope import QueryScope, current_scope

__all__ = ["GENERATION_KEYS", "SpillguardLLM"]

GENERATION_KEYS = frozenset(
    {"max_new_tokens", "do_sample", "temperature", "top_k", "top_p", "repetition_penalty", "stop_strings"}
)
"""Decoding options accepted per call (and in ``generate_kwargs``)."""

_CALL_KEYS = frozenset({"seed", "localize_in", "raw"})


class SpillguardLLM(FunctionCallingLLM):
    """A local causal LM guarded by spilled energy, as a LlamaIndex LLM.

    Every response carries the guard's verdict: ``additional_kwargs["spillguard"]`` (a sealed,
    JSON-ready dict: action, score, threshold, span, attempts), ``logprobs`` (one
    :class:`~llama_index.core.base.llms.types.LogProb` per answer token) and ``raw`` (the
    :class:`guardrail.Verdict` itself). The response text is ``verdict.text``: the answer, or
    the guard policy's abstention text. Inside a :class:`SpillguardQueryEngine` the engine's
    policy decides instead and the LLM returns the answer itself.

    It is a ``FunctionCallingLLM`` (``chat_with_tools``, ``get_tool_calls_from_response``, so
    ``FunctionAgent`` and function-calling structured output work) when the tokenizer's chat
    template renders tools (Qwen2.5, Llama-3.1, Hermes-style, ...): the tools go through the
    template, the tool-call markup the model writes comes back as tool calls in
    ``message.additional_kwargs["tool_calls"]``, and the verdict scores the whole text the model
    wrote. With another template ``metadata.is_function_calling_model`` is false and tools are
    refused with the reason; a ``ReActAgent`` (tools described in the prompt) works with any.

    Calls on one model are serialized; async methods run the model in a worker thread and wait
    for the model in the event loop (:meth:`guardrail.Guard.aask`), and cancelling one stops
    generation at the next token.

    Args:
        guard: the :class:`guardrail.Guard` to use; default ``Guard.default()`` (the bundled
            SmolLM2-135M-Instruct), or ``Guard.from_pretrained(model_path)``.
        model_path: a local model directory or ``.gguf`` file (instead of ``guard``).
        guard_kwargs: keyword arguments for ``Guard.default`` / ``Guard.from_pretrained``.
        temperature: ``0`` decodes greedily (default); above ``0`` samples (also per call).
        max_new_tokens: answer length limit (default: the guard's ``max_new_tokens``).
        context_window: the model's context in tokens (default: read from its config).
        generate_kwargs: other default decoding options (``top_k``, ``top_p``,
            ``repetition_penalty``, ``stop_strings``).
        callback_manager: LlamaIndex callback manager.
        **kwargs: other :class:`~llama_index.core.llms.LLM` fields (``system_prompt``, ...).
    """

    model_name: str = Field(description="Name of the guarded model.")
    context_window: int = Field(gt=0, description="The model's context window in tokens.")
    max_new_tokens: int = Field(gt=0, description="Most new tokens per answer.")
    temperature: float = Field(ge=0, description="0 decodes greedily; above 0 samples.")
    is_chat_model: bool = Field(description="Whether prompts go through the tokenizer's chat template.")
    generate_kwargs: dict[str, Any] = Field(default_factory=dict, description="Default decoding options.")

    _guard: Guard = PrivateAttr()

    def __init__(
        self,
        guard: Guard | None = None,
        *,
        model_path: str | os.PathLike[str] | None = None,
        guard_kwargs: Mapping[str, Any] | None = None,
        temperature: float = 0.0,
        max_new_tokens: int | None = None,
        context_window: int | None = None,
        generate_kwargs: Mapping[str, Any] | None = None,
        callback_manager: CallbackManager | None = None,
        **kwargs: Any,
    ) -> None:
        guard = _make_guard(guard, model_path, guard_kwargs)
        options = dict(generate_kwargs or {})
        _check_generation("generate_kwargs", options)
        super().__init__(
            model_name=kwargs.pop("model_name", guard.fingerprint.name),
            context_window=context_window if context_window is not None else _context_window(guard),
            max_new_tokens=max_new_tokens
            if max_new_tokens is not None
            else options.pop("max_new_tokens", guard.max_new_tokens),
            temperature=check_finite("temperature", temperature) if temperature else 0.0,
            is_chat_model=kwargs.pop("is_chat_model", bool(getattr(guard.tokenizer, "chat_template", None))),
            generate_kwargs=options,
            callback_manager=callback_manager,
            **kwargs,
        )
        self._guard = guard

    @classmethod
    def default(
        cls,
        *,
        temperature: float = 0.0,
        max_new_tokens: int | None = None,
        context_window: int | None = None,
        generate_kwargs: Mapping[str, Any] | None = None,
        **guard_kwargs: Any,
    ) -> SpillguardLLM:
        """The bundled SmolLM2-135M-Instruct (loaded once per process); other keywords go to the guard."""
        return cls(
            Guard.default(**guard_kwargs), temperature=temperature, max_new_tokens=max_new_tokens,
            context_window=context_window, generate_kwargs=generate_kwargs,
        )  # fmt: skip

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str], **guard_kwargs: Any) -> SpillguardLLM:
        """A model from a local directory or ``.gguf`` file."""
        return cls(model_path=path, guard_kwargs=guard_kwargs)

    @classmethod
    def class_name(cls) -> str:
        return "SpillguardLLM"

    @property
    def guard(self) -> Guard:
        """The guard that generates and judges the answers."""
        return self._guard

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(
            context_window=self.context_window,
            num_output=self.max_new_tokens,
            is_chat_model=self.is_chat_model,
            is_function_calling_model=self.is_chat_model and template_supports_tools(self._guard.tokenizer),
            model_name=self.model_name,
            system_role=MessageRole.SYSTEM,
        )

    # -- completion ------------------------------------------------------------------------

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        """Answer ``prompt`` (chat-templated as one user message unless ``raw=True``)."""
        question, options = self._completion_input(prompt, formatted, kwargs)
        return self._answer(question, options, "complete")

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        """:meth:`complete` for async code."""
        question, options = self._completion_input(prompt, formatted, kwargs)
        return await self._aanswer(question, options, "complete")

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        """Stream the answer; the last chunk (empty ``delta``) carries the verdict."""
        question, options = self._completion_input(prompt, formatted, kwargs)
        return self._stream(question, options, "stream_complete")

    @llm_completion_callback()
    async def astream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseAsyncGen:
        """:meth:`stream_complete` for async code; closing it stops generation at the next token."""
        question, options = self._completion_input(prompt, formatted, kwargs)
        return self._astream(question, options, "astream_complete")

    # -- chat ------------------------------------------------------------------------------

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """Answer the conversation ``messages``."""
        question, options = self._chat_input(messages, kwargs)
        return _chat(self._answer(question, options, "chat"))

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """:meth:`chat` for async code."""
        question, options = self._chat_input(messages, kwargs)
        return _chat(await self._aanswer(question, options, "chat"))

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        """Stream the reply; the last chunk (empty ``delta``) carries the verdict."""
        question, options = self._chat_input(messages, kwargs)
        return _chat_stream(stream_completion_response_to_chat_response(self._stream(question, options, "stream_chat")))

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        """:meth:`stream_chat` for async code."""
        question, options = self._chat_input(messages, kwargs)
        chunks = astream_completion_response_to_chat_response(self._astream(question, options, "astream_chat"))
        return _achat_stream(chunks)

    # -- tools ---------------------------------------------------------------------------

    def _prepare_chat_with_tools(
        self,
        tools: Sequence[BaseTool],
        user_msg: str | ChatMessage | None = None,
        chat_history: list[ChatMessage] | None = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        tool_choice: str | Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """The ``chat`` arguments of ``chat_with_tools``: the conversation and the tool specs.

        ``tool_choice`` chooses which tools are rendered (``"none"``: none; a name: that one);
        decoding is not constrained, so ``tool_required`` and ``allow_parallel_tool_calls``
        cannot force the model's hand: it may still answer in text, or call several tools.
        """
        messages = list(chat_history or [])
        if isinstance(user_msg, str):
            messages.append(ChatMessage(role=MessageRole.USER, content=user_msg))
        elif user_msg is not None:
            messages.append(user_msg)
        specs = choose_tools(tool_specs(tools), tool_choice) if tools else []
        return {"messages": messages, **({"tools": specs} if specs else {}), **kwargs}

    def get_tool_calls_from_response(
        self, response: ChatResponse, error_on_no_tool_call: bool = True, **kwargs: Any
    ) -> list[ToolSelection]:
        """The tool calls of a :meth:`chat` reply (``[]``, or :class:`InvalidInputError` when
        ``error_on_no_tool_call``, if the model wrote none)."""
        selections = tool_selections(response.message)
        if not selections and error_on_no_tool_call:
            raise InvalidInputError(f"expected at least one tool call, the model wrote {response.message.content!r}")
        return selections

    # -- implementation --------------------------------------------------------------------

    def _answer(self, question: Any, options: dict[str, Any], kind: str) -> CompletionResponse:
        scope = current_scope()
        tools = "tools" in options
        return _completion(
            self._scoring(scope).ask(question, **self._call(question, options, scope)), scope, kind, tools=tools
        )

    async def _aanswer(self, question: Any, options: dict[str, Any], kind: str) -> CompletionResponse:
        scope = current_scope()
        tools = "tools" in options
        guard = self._scoring(scope)
        return _completion(await guard.aask(question, **self._call(question, options, scope)), scope, kind, tools=tools)

    def _stream(self, question: Any, options: dict[str, Any], kind: str) -> CompletionResponseGen:
        scope = current_scope()
        tools = "tools" in options
        events = self._scoring(scope).stream(question, **self._call(question, options, scope))

        def gen() -> CompletionResponseGen:
            stream = _Stream(scope, kind, tools)
            try:
                for event in events:
                    yield from stream.take(event)
            finally:
                events.close()

        return gen()

    def _astream(self, question: Any, options: dict[str, Any], kind: str) -> CompletionResponseAsyncGen:
        scope = current_scope()
        tools = "tools" in options
        call = self._call(question, options, scope)
        guard = self._scoring(scope)

        async def gen() -> CompletionResponseAsyncGen:
            stream = _Stream(scope, kind, tools)
            async for event in guard.astream(question, **call):
                for chunk in stream.take(event):
                    yield chunk

        return gen()

    def _completion_input(self, prompt: str, formatted: bool, kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        check_str("prompt", prompt)
        convert: Callable[[str], str] | None = self.completion_to_prompt
        if not formatted and convert is not None:
            prompt = convert(prompt)
        return prompt, self._options(kwargs, raw_default=not self.is_chat_model)

    def _chat_input(self, messages: Sequence[ChatMessage], kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        kwargs = dict(kwargs)
        tools = kwargs.pop("tools", None)
        if not self.is_chat_model:
            if tools:
                raise InvalidInputError(
                    "`tools` were given but this model has no chat template, so it cannot render them; "
                    "describe the tools in the prompt instead (a ReActAgent does)"
                )
            to_prompt = self.messages_to_prompt or generic_messages_to_prompt
            return to_prompt(messages), self._options(kwargs, raw_default=True)
        options = self._options(kwargs, raw_default=False)
        if tools:
            options["tools"] = tool_specs(tools)
        return to_chat_dicts(messages), options

    def _options(self, kwargs: Mapping[str, Any], *, raw_default: bool) -> dict[str, Any]:
        """This call's options: the LLM's defaults, then the call's own; temperature > 0 samples."""
        _check_generation("kwargs", kwargs, extra=_CALL_KEYS)
        options = {"max_new_tokens": self.max_new_tokens, "temperature": self.temperature, **self.generate_kwargs}
        options.update(kwargs)
        options.setdefault("raw", raw_default)
        if not isinstance(options["raw"], bool):
            raise InvalidInputError(f"`raw` must be a bool, got {options['raw']!r}")
        check_int("max_new_tokens", options["max_new_tokens"], minimum=1)
        temperature = options.pop("temperature")
        if temperature:
            options.setdefault("do_sample", True)
            options["temperature"] = check_finite("temperature", temperature, positive=True)
        return options

    def _scoring(self, scope: QueryScope | None) -> Guard:
        """The guard that answers a call: inside a grounded scope (a query engine's),
        :meth:`guardrail.Guard.with_grounding` (made per call, so it follows the guard's state)."""
        return self._guard.with_grounding() if scope is not None and scope.grounded else self._guard

    def _call(self, question: Any, options: dict[str, Any], scope: QueryScope | None) -> dict[str, Any]:
        """The ``ask``/``stream`` keyword arguments of one call; inside an engine's scope, the
        attempt it makes (the engine's policy decides, not the guard's), its query, and in a
        grounded scope the text the span is looked up in (:meth:`QueryScope.sources`)."""
        call = dict(options)
        if scope is not None:
            call.setdefault("localize_in", scope.query)
            call["step"] = scope.step
            if scope.grounded:
                call["sources"] = scope.sources(prompt_sources(question))
        return call


class _Stream:
    """Turns the guard's stream events into completion chunks; records the verdict in the scope.

    With tools the text is held back (it may be a tool call) and comes, with the calls, in the
    final chunk; otherwise the final chunk has an empty ``delta`` and carries the verdict.
    """

    def __init__(self, scope: QueryScope | None, kind: str, tools: bool = False) -> None:
        self.scope, self.kind, self.tools, self.text = scope, kind, tools, ""

    def take(self, event: str | TokenStep | Verdict) -> list[CompletionResponse]:
        if isinstance(event, str):
            self.text += event
            return [] if self.tools else [CompletionResponse(text=self.text, delta=event)]
        if isinstance(event, Verdict):
            final = _completion(event, self.scope, self.kind, tools=self.tools)
            if self.tools:
                return [final.model_copy(update={"delta": final.text})]
            return [final.model_copy(update={"text": self.text, "delta": ""})]
        return []


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


def _check_generation(name: str, options: Mapping[str, Any], extra: frozenset[str] = frozenset()) -> None:
    unknown = sorted(set(options) - GENERATION_KEYS - extra)
    if unknown:
        allowed = sorted(GENERATION_KEYS | extra)
        raise InvalidInputError(f"`{name}` has unknown options {unknown}; allowed: {allowed}")


def _context_window(guard: Guard) -> int:
    limit = getattr(getattr(guard.model, "config", None), "max_position_embeddings", None)
    return int(limit) if isinstance(limit, int) and limit > 0 else 2048


def _completion(verdict: Verdict, scope: QueryScope | None, kind: str, *, tools: bool = False) -> CompletionResponse:
    """The response of one call. With tools, tool-call markup in the answer becomes tool calls and
    the text is the rest; the evidence (resealed with that text) still scores all the model wrote."""
    if scope is not None:
        scope.record(kind, verdict)
    query_id = scope.id if scope else None
    text, calls = parse_tool_calls(verdict.text) if tools else (verdict.text, [])
    evidence = verdict_evidence(verdict, query_id=query_id)
    if calls:
        evidence = {**with_tool_calls(verdict.to_dict(per_token=False), text, calls), "query_id": query_id}
    return CompletionResponse(
        text=text if calls else verdict.text,
        additional_kwargs={METADATA_KEY: evidence, **tool_call_kwargs(calls)},
        logprobs=verdict_logprobs(verdict),
        raw=verdict,
    )


def _chat(completion: CompletionResponse) -> ChatResponse:
    """LlamaIndex's own conversion, plus the verdict and logprobs on the response itself."""
    chat = completion_response_to_chat_response(completion)
    return chat.model_copy(update={"additional_kwargs": completion.additional_kwargs, "logprobs": completion.logprobs})


def _chat_stream(chunks: ChatResponseGen) -> ChatResponseGen:
    for chunk in chunks:
        yield chunk.model_copy(update={"additional_kwargs": chunk.message.additional_kwargs})


async def _achat_stream(chunks: ChatResponseAsyncGen) -> ChatResponseAsyncGen:
    async for chunk in chunks:
        yield chunk.model_copy(update={"additional_kwargs": chunk.message.additional_kwargs})
