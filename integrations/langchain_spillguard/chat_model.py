"""``ChatSpillguard``: a local Hugging Face chat model whose answers carry spilled-energy verdicts."""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.runnables.config import RunnableConfig, ensure_config, run_in_executor
from pydantic import ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from guardrail import (
    METADATA_KEY,
    Calibration,
    Guard,
    HallucinationDetected,
    InvalidInputError,
    ModelError,
    Policy,
    RetryStep,
    TokenStep,
    Verdict,
)
from guardrail.loading import DEFAULT_MODEL_NAME
from guardrail.tools import ToolCall, choose_tools, parse_tool_calls, with_tool_calls
from langchain_spillguard.evidence import QUESTION_KEY, STEP_KEY, STEPS_KEY, logprobs_of
from langchain_spillguard.messages import to_chat_dicts, to_lc_tool_calls
from langchain_spillguard.structured import (
    ToolLike,
    format_tools,
    json_instruction,
    structured_output,
)

__all__ = ["ChatSpillguard", "invalid_arguments"]

_CALL_OPTIONS = frozenset(
    {"temperature", "max_tokens", "top_p", "seed", "model", "tools", "tool_choice", "response_format", "localize_in"}
    | {STEP_KEY}
)
_RETRY_TAG = re.compile(r"^retry:attempt:(\d+)$")
_LOAD_LOCK = threading.Lock()


@dataclass(frozen=True)
class _Request:
    """One call: the chat messages, the decoding options, the attempt step (if any), the tools
    to render and the question text for localization."""

    chat: list[dict[str, Any]]
    generation: dict[str, Any]
    step: RetryStep | None
    tools: list[dict[str, Any]] | None = None
    localize_in: str | None = None
    started: float = field(default_factory=time.monotonic)

    def options(self) -> dict[str, Any]:
        """Keyword arguments of ``Guard.ask`` / ``Guard.stream``."""
        return {"step": self.step, "tools": self.tools, "localize_in": self.localize_in, **self.generation}


class ChatSpillguard(BaseChatModel):
    """A guarded local chat model: every answer carries its spilled-energy verdict.

    Build it from a :class:`guardrail.Guard`, a local model path, or nothing (the bundled
    SmolLM2-135M-Instruct). The model loads on first use. Calls on one model are serialized,
    so ``batch``/``abatch``/concurrent ``ainvoke`` are safe; each call answers alone (greedy by
    default, hence deterministic).

    Example:
        >>> chat = ChatSpillguard(max_tokens=24)
        >>> message = chat.invoke("What is the capital of Honduras?")
        >>> message.response_metadata["spillguard"]["score"]

    Args:
        guard: a ready guard (model, tokenizer, calibration, policy). Excludes ``model_path``,
            ``calibration`` and ``policy``.
        model_path: a local model directory or ``.gguf`` file to load instead of the bundled model.
        model_name: name reported to tracing (alias ``model``).
        calibration: a :class:`guardrail.Calibration` or the path of a calibration JSON file,
            used when the guard is built here; default: the shipped calibration of the bundled
            model, or uncalibrated.
        policy: the core policy applied inside each call (``flag`` by default; ``retry`` and
            ``abstain`` work too, see :class:`guardrail.Policy`).
        temperature: ``None`` or ``0`` decodes greedily; above ``0`` samples.
        max_tokens: answer length limit (default: the guard's ``max_new_tokens``).
        top_p: nucleus sampling when sampling.
        seed: seed of sampled answers (reproducible runs).
        stop: stop strings; the answer ends with the stop string that ended it.
        timeout: seconds of generation after which the answer is cut (transformers'
            ``max_time``; ``finish_reason`` is then ``"length"``); ``None`` for no limit.
        max_retries: LangChain's standard parameter, accepted so that generic code can pass it;
            a local model makes no network request, so there is nothing to retry and it must be
            an int >= 0. To regenerate flagged answers use ``policy=Policy("retry")`` or
            :class:`~langchain_spillguard.SpillguardRunnable`.
        streaming: make ``invoke`` stream internally (callbacks see each token).
        logprobs: also put OpenAI-shaped ``logprobs``, the per-token arrays of every attempt and
            (when streaming) each token's energies in the metadata; off by default, since they
            cost about 200 bytes per token in traces and stored history.
        raise_on_hallucination: raise :class:`guardrail.HallucinationDetected` instead of
            returning a flagged answer (for ``with_retry``/``with_fallbacks``). Under
            ``with_retry`` each retry samples (the attempt's seed and the policy's temperature),
            so it does not repeat the same greedy answer.

    Call arguments: ``temperature``, ``max_tokens``, ``top_p``, ``seed``, ``stop`` override the
    fields; ``localize_in`` (or the run metadata key :data:`~langchain_spillguard.QUESTION_KEY`)
    is the text treated as the question when localizing the answer (in RAG, the user's query
    rather than the prompt holding the retrieved context); ``tools``/``tool_choice`` (from
    :meth:`bind_tools`) and ``response_format`` (from :meth:`with_structured_output`). Anything
    else is refused.

    Pickling keeps the configuration only (a lazily loaded model is loaded again on first use);
    a model built from a ``guard`` cannot be pickled. It is not LangChain-serializable
    (``dumpd`` gives LangChain's ``not_implemented`` stub): the weights are not configuration.
    """

    guard: Guard | None = Field(default=None, exclude=True)
    model_path: str | None = None
    model_name: str = Field(default=DEFAULT_MODEL_NAME, alias="model")
    calibration: Calibration | str | None = Field(default=None, exclude=True)
    policy: Policy | None = Field(default=None, exclude=True)
    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: list[str] | None = None
    timeout: float | None = None
    max_retries: int = 0
    streaming: bool = False
    logprobs: bool = False
    raise_on_hallucination: bool = False

    model_config = ConfigDict(populate_by_name=True, arbitrary_types_allowed=True, extra="forbid")

    _loaded: Guard | None = PrivateAttr(default=None)

    def __init__(self, **kwargs: Any) -> None:
        try:
            super().__init__(**kwargs)
        except ValidationError as exc:
            raise invalid_arguments(type(self).__name__, exc) from None

    @model_validator(mode="after")
    def _check_fields(self) -> ChatSpillguard:
        if self.guard is not None and not isinstance(self.guard, Guard):
            raise InvalidInputError(f"`guard` must be a guardrail.Guard, got {type(self.guard).__name__}")
        if self.guard is not None and (self.model_path or self.calibration is not None or self.policy is not None):
            raise InvalidInputError(
                "`guard` already holds its model, calibration and policy; do not also pass "
                f"`model_path`={self.model_path!r}, `calibration` or `policy`"
            )
        if self.max_tokens is not None and (not isinstance(self.max_tokens, int) or self.max_tokens < 1):
            raise InvalidInputError(f"`max_tokens` must be an int >= 1, got {self.max_tokens!r}")
        if self.temperature is not None and not 0 <= self.temperature < float("inf"):
            raise InvalidInputError(f"`temperature` must be a finite number >= 0, got {self.temperature!r}")
        if self.timeout is not None and not 0 < self.timeout < float("inf"):
            raise InvalidInputError(f"`timeout` must be a finite number of seconds > 0, got {self.timeout!r}")
        if isinstance(self.max_retries, bool) or self.max_retries < 0:
            raise InvalidInputError(f"`max_retries` must be an int >= 0, got {self.max_retries!r}")
        return self

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str], **kwargs: Any) -> ChatSpillguard:
        """A chat model over a local model directory or ``.gguf`` file (loaded on first use)."""
        return cls(model_path=str(path), model_name=Path(path).name, **kwargs)

    # -- LangChain hooks -------------------------------------------------------------------

    @property
    def _llm_type(self) -> str:
        return "spillguard"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "model_path": self.model_path,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "top_p": self.top_p,
            "seed": self.seed,
        }

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> Any:
        params = super()._get_ls_params(stop=stop or self.stop, **kwargs)
        params["ls_provider"] = "spillguard"
        params["ls_model_name"] = str(kwargs["model"]) if isinstance(kwargs.get("model"), str) else self.model_name
        return params

    def invoke(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AIMessage:
        return super().invoke(input, config, stop=stop, **_run_options(config, kwargs))

    async def ainvoke(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AIMessage:
        return await super().ainvoke(input, config, stop=stop, **_run_options(config, kwargs))

    def stream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> Iterator[AIMessageChunk]:
        yield from super().stream(input, config, stop=stop, **_run_options(config, kwargs))

    async def astream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[AIMessageChunk]:
        async for chunk in super().astream(input, config, stop=stop, **_run_options(config, kwargs)):
            yield chunk

    def get_token_ids(self, text: str) -> list[int]:
        """Token ids of ``text`` from the model's own tokenizer (offline, exact)."""
        return self.get_guard().token_ids(text)

    def get_num_tokens_from_messages(self, messages: list[BaseMessage], tools: Sequence[Any] | None = None) -> int:
        """Tokens of the prompt the model would be fed for ``messages`` (chat template and
        ``tools`` included), from the model's own tokenizer."""
        specs = format_tools(tools) if tools else None
        return len(self.get_guard().prompt_ids(to_chat_dicts(messages), tools=specs))

    def bind_tools(
        self,
        tools: Sequence[ToolLike],
        *,
        tool_choice: str | bool | Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """The model with ``tools`` rendered by its chat template; calls come back in
        ``AIMessage.tool_calls``.

        Args:
            tools: LangChain tools, functions, pydantic models or OpenAI-style dicts.
            tool_choice: which tools are rendered: ``None``/``"auto"``/``"any"``/``"required"``
                all, ``"none"`` none, a tool name only that one. A local model is not
                constrained: it may answer in text even when a call is required.
            **kwargs: further call arguments.

        The chat template must render tools (Qwen2.5, Llama-3.1, Hermes-style, ...); otherwise
        the call raises :class:`guardrail.InvalidInputError` saying so (checked when the model
        runs, since the model loads on first use).
        """
        specs = format_tools(tools)
        choose_tools(specs, tool_choice)
        return self.bind(tools=specs, tool_choice=tool_choice, **kwargs)

    def with_structured_output(
        self,
        schema: Mapping[str, Any] | type,
        *,
        include_raw: bool = False,
        method: str = "json_schema",
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, Any]:
        """The model, then a parser of its JSON answer into ``schema``.

        Args:
            schema: a pydantic model, a TypedDict, a JSON schema or an OpenAI function dict.
            include_raw: return ``{"raw", "parsed", "parsing_error"}``; the raw ``AIMessage``
                carries the spillguard verdict.
            method: ``"json_schema"`` (the schema goes into a system instruction),
                ``"json_mode"`` (JSON asked for, the prompt describes it) or
                ``"function_calling"`` (the schema as a tool; needs a tool-aware template).
            strict: accepted for LangChain compatibility; the answer is always validated by
                parsing (decoding is not constrained).

        Raises:
            InvalidInputError: an unknown ``method`` or argument.
        """
        if kwargs:
            raise InvalidInputError(f"with_structured_output does not support the arguments {sorted(kwargs)}")
        return structured_output(self, schema, method=method, include_raw=include_raw, strict=strict)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        guard = self.get_guard()
        request = self._request(guard, messages, stop, run_manager, kwargs)
        verdict = guard.ask(request.chat, **request.options())
        return self._result(verdict, request, run_manager)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        guard = await run_in_executor(None, self.get_guard)
        request = self._request(guard, messages, stop, run_manager, kwargs)
        verdict = await guard.aask(request.chat, **request.options())
        return self._result(verdict, request, run_manager)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        guard = self.get_guard()
        request = self._request(guard, messages, stop, run_manager, kwargs)
        chunks = _Chunks(self, request, run_manager)
        events = guard.stream(request.chat, **request.options())
        try:
            for event in events:
                yield from chunks.take(event)
        finally:
            events.close()

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        guard = await run_in_executor(None, self.get_guard)
        request = self._request(guard, messages, stop, run_manager, kwargs)
        chunks = _Chunks(self, request, run_manager)
        events = cast(
            "AsyncGenerator[str | TokenStep | Verdict, None]", guard.astream(request.chat, **request.options())
        )
        try:
            async for event in events:
                for chunk in chunks.take(event):
                    yield chunk
        finally:
            await events.aclose()

    def __getstate__(self) -> dict[Any, Any]:
        """The configuration only: a lazily loaded model is dropped (and loaded again on use)."""
        if self.guard is not None:
            raise ModelError(
                "a ChatSpillguard built from a `guard` holds its loaded model and cannot be pickled; "
                "build it from `model_path` (or the bundled model) to pickle its configuration"
            )
        state = dict(super().__getstate__())
        state["__pydantic_private__"] = {**(state.get("__pydantic_private__") or {}), "_loaded": None}
        return state

    # -- the guard -------------------------------------------------------------------------

    def get_guard(self) -> Guard:
        """The guard answering the calls (built, and the model loaded, on first use)."""
        if self.guard is not None:
            return self.guard
        with _LOAD_LOCK:
            if self._loaded is None:
                self._loaded = self._build_guard()
            return self._loaded

    def _build_guard(self) -> Guard:
        kwargs: dict[str, Any] = {}
        if self.calibration is not None:
            calibration = self.calibration
            kwargs["calibration"] = (
                calibration if isinstance(calibration, Calibration) else Calibration.load(calibration)
            )
        if self.policy is not None:
            kwargs["policy"] = self.policy
        if self.model_path:
            return Guard.from_pretrained(self.model_path, name=self.model_name, **kwargs)
        return Guard.default(**kwargs)

    # -- steps -----------------------------------------------------------------------------

    def _request(
        self,
        guard: Guard,
        messages: list[BaseMessage],
        stop: list[str] | None,
        run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None,
        options: Mapping[str, Any],
    ) -> _Request:
        """Chat dicts, decoding options and the attempt step of one call."""
        unknown = sorted(set(options) - _CALL_OPTIONS)
        if unknown:
            raise InvalidInputError(
                f"ChatSpillguard does not support the call arguments {unknown}; "
                f"supported: {sorted(_CALL_OPTIONS)} and `stop`"
            )
        if options.get("model", self.model_name) != self.model_name:
            raise InvalidInputError(
                f"ChatSpillguard runs one local model: the call's `model`={options['model']!r} is not its "
                f"`model_name` {self.model_name!r}; build another ChatSpillguard for another model"
            )
        max_tokens = options.get("max_tokens", self.max_tokens)
        if max_tokens is not None and (
            isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
        ):
            raise InvalidInputError(f"`max_tokens` must be an int >= 1, got {max_tokens!r}")
        temperature = options.get("temperature", self.temperature)
        generation: dict[str, Any] = {"max_new_tokens": max_tokens or guard.max_new_tokens}
        if temperature:
            top_p = options.get("top_p", self.top_p)
            generation.update(do_sample=True, temperature=float(temperature), top_k=0, top_p=top_p or 1.0)
            seed = options.get("seed", self.seed)
            if seed is not None:
                generation["seed"] = seed
        stops = stop if stop is not None else self.stop
        if stops:
            generation["stop_strings"] = list(stops)
        if self.timeout is not None:
            generation["max_time"] = float(self.timeout)
        chat = to_chat_dicts(messages)
        if "response_format" in options:
            chat = _with_instruction(chat, json_instruction(options["response_format"]))
        tools = choose_tools(options["tools"], options.get("tool_choice")) if options.get("tools") else None
        return _Request(
            chat,
            generation,
            _step_of(guard, run_manager, options.get(STEP_KEY)),
            tools or None,
            _question_of(run_manager, options.get("localize_in")),
        )

    def _result(
        self,
        verdict: Verdict,
        request: _Request,
        run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None,
    ) -> ChatResult:
        text, calls, info = self._answer(verdict, request)
        message = AIMessage(
            content=text, tool_calls=to_lc_tool_calls(calls), response_metadata=info, usage_metadata=_usage(verdict)
        )
        self._maybe_raise(verdict, run_manager)
        return ChatResult(generations=[ChatGeneration(message=message, generation_info=info)])

    def _answer(self, verdict: Verdict, request: _Request) -> tuple[str, list[ToolCall], dict[str, Any]]:
        """The message text, its tool calls and its metadata.

        With tools bound, tool-call markup in the answer becomes tool calls and the message
        text is the rest; the verdict (resealed with that text) still scores the whole answer
        the model wrote.
        """
        limit = int(request.generation["max_new_tokens"])
        timed_out = self.timeout is not None and time.monotonic() - request.started >= self.timeout
        finish = "length" if len(verdict.best.scores) >= limit or timed_out else "stop"
        data = verdict.to_dict(per_token=self.logprobs)
        text, calls = verdict.text, list[ToolCall]()
        if request.tools:
            text, calls = parse_tool_calls(verdict.text)
            if calls:
                data = with_tool_calls(data, text, calls)
                finish = "tool_calls"
        info: dict[str, Any] = {
            "model_name": self.model_name,
            "model_provider": "spillguard",
            "finish_reason": finish,
            METADATA_KEY: data,
        }
        if self.logprobs:
            info["logprobs"] = logprobs_of(verdict)
        return text, calls, info

    def _maybe_raise(
        self, verdict: Verdict, run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None
    ) -> None:
        if self.raise_on_hallucination and verdict.hallucinated:
            raise HallucinationDetected(verdict, run_id=run_manager.run_id if run_manager else None)


class _Chunks:
    """Turns the guard's stream events into LangChain chunks: one per text delta, then the verdict.

    With ``logprobs`` on, each token's energies (which arrive one token late) ride on the next
    text chunk, and the last ones on the final chunk; otherwise they are dropped. With tools
    bound the text is held back (it may be a tool call) and comes, with the calls, in the final
    chunk.
    """

    def __init__(
        self,
        chat: ChatSpillguard,
        request: _Request,
        run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None,
    ) -> None:
        self.chat, self.request, self.run_manager = chat, request, run_manager
        self.steps: list[dict[str, Any]] = []

    def take(self, event: str | TokenStep | Verdict) -> list[ChatGenerationChunk]:
        if isinstance(event, TokenStep):
            if self.chat.logprobs:
                self.steps.append(_step_entry(event))
            return []
        if isinstance(event, Verdict):
            self.chat._maybe_raise(event, self.run_manager)
            text, calls, info = self.chat._answer(event, self.request)
            info = {**info, **self._pending()}
            chunks = [
                tool_call_chunk(name=c.name, args=json.dumps(dict(c.arguments)), id=c.id, index=i)
                for i, c in enumerate(calls)
            ]
            message = AIMessageChunk(
                content=text if self.request.tools else "",
                tool_call_chunks=chunks,
                response_metadata=info,
                usage_metadata=_usage(event),
                chunk_position="last",
            )
            return [ChatGenerationChunk(message=message, generation_info=info)]
        if self.request.tools:
            return []
        return [ChatGenerationChunk(message=AIMessageChunk(content=event, response_metadata=self._pending()))]

    def _pending(self) -> dict[str, Any]:
        steps, self.steps = self.steps, []
        return {STEPS_KEY: steps} if steps else {}


def _step_of(
    guard: Guard,
    run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None,
    given: object = None,
) -> RetryStep | None:
    """The attempt this call makes: a step given as the call argument ``spillguard_step``
    (:class:`SpillguardMiddleware`) or in the run metadata (:class:`SpillguardRunnable`), or,
    under LangChain's ``with_retry`` (tag ``retry:attempt:N``), a resampled attempt N."""
    if given is not None:
        if not isinstance(given, Mapping):
            raise InvalidInputError(f"`{STEP_KEY}` must be a RetryStep dict, got {given!r}")
        return RetryStep.from_dict(given)
    if run_manager is None:
        return None
    step = run_manager.metadata.get(STEP_KEY)
    if isinstance(step, Mapping):
        return RetryStep.from_dict(step)
    attempt = max([int(m.group(1)) for t in run_manager.tags if (m := _RETRY_TAG.match(t))], default=1)
    return guard.policy.step(attempt) if attempt > 1 else None


def _question_of(
    run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None, given: object = None
) -> str | None:
    """The text treated as the question: the call argument ``localize_in``, else the run
    metadata's :data:`QUESTION_KEY` (set by the caller or ``SpillguardRunnable(question_key=...)``)."""
    question = given
    if question is None and run_manager is not None:
        question = run_manager.metadata.get(QUESTION_KEY)
    if question is not None and not isinstance(question, str):
        raise InvalidInputError(f"`localize_in` / `{QUESTION_KEY}` must be a str, got {question!r}")
    return question


def _with_instruction(chat: list[dict[str, Any]], instruction: str) -> list[dict[str, Any]]:
    """``chat`` with ``instruction`` appended to its system message (or as a new first one)."""
    if chat and chat[0]["role"] == "system":
        return [{**chat[0], "content": f"{chat[0]['content']}\n\n{instruction}"}, *chat[1:]]
    return [{"role": "system", "content": instruction}, *chat]


def invalid_arguments(owner: str, error: ValidationError) -> InvalidInputError:
    """A constructor's pydantic validation error as the core's typed error, naming each argument."""
    problems = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"])
        message = str(item["msg"]).removeprefix("Value error, ")
        problems.append(f"`{where}`: {message} (got {item['input']!r})" if where else message)
    return InvalidInputError(f"{owner}: " + "; ".join(problems))


def _run_options(config: RunnableConfig | None, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The call's arguments plus the attempt step and question of its run config's metadata.

    LangChain hands ``_stream`` no run manager, so what a :class:`SpillguardRunnable` (or the
    caller) put in the config metadata is passed on as call arguments (visible in traces).
    """
    metadata = ensure_config(config).get("metadata") or {}
    extra = {}
    if STEP_KEY in metadata and STEP_KEY not in kwargs:
        extra[STEP_KEY] = metadata[STEP_KEY]
    if QUESTION_KEY in metadata and "localize_in" not in kwargs:
        extra["localize_in"] = metadata[QUESTION_KEY]
    return {**kwargs, **extra}


def _step_entry(step: TokenStep) -> dict[str, Any]:
    return {
        "position": step.index,
        "token_id": step.token_id,
        "spilled_energy": step.spilled_energy,
        "logprob": step.logprob,
        "entropy": step.entropy,
    }


def _usage(verdict: Verdict) -> UsageMetadata:
    """Tokens read and written over all attempts."""
    read = sum(a.prompt_tokens for a in verdict.attempts)
    written = sum(len(a.scores) for a in verdict.attempts)
    return UsageMetadata(input_tokens=read, output_tokens=written, total_tokens=read + written)
