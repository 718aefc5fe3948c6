"""``ChatSpillguard``: a local Hugging Face chat model whose answers carry spilled-energy verdicts."""

from __future__ import annotations

import os
import re
import threading
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.chat_models import agenerate_from_stream, generate_from_stream
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables.config import run_in_executor
from pydantic import ConfigDict, Field, PrivateAttr, model_validator

from guardrail import (
    METADATA_KEY,
    Calibration,
    Guard,
    HallucinationDetected,
    InvalidInputError,
    Policy,
    RetryStep,
    TokenStep,
    Verdict,
)
from guardrail.loading import DEFAULT_MODEL_NAME
from langchain_spillguard.evidence import STEP_KEY, STEPS_KEY, logprobs_of
from langchain_spillguard.messages import to_chat_dicts

__all__ = ["ChatSpillguard"]

_CALL_OPTIONS = frozenset({"temperature", "max_tokens", "top_p", "seed", "model"})
_RETRY_TAG = re.compile(r"^retry:attempt:(\d+)$")
_LOAD_LOCK = threading.Lock()


@dataclass(frozen=True)
class _Request:
    """One call: the chat messages, the decoding options and the attempt step (if any)."""

    chat: list[dict[str, str]]
    generation: dict[str, Any]
    step: RetryStep | None


class ChatSpillguard(BaseChatModel):
    """A guarded local chat model: every answer carries its spilled-energy verdict.

    Build it from a :class:`guardrail.Guard`, a local model path, or nothing (the bundled
    SmolLM2-135M-Instruct). The model loads on first use. Calls on one model are serialized,
    so ``batch``/``abatch``/concurrent ``ainvoke`` are safe; each call answers alone (greedy by
    default, hence deterministic).

    Example:
        >>> chat = ChatSpillguard(max_tokens=24)
        >>> message = chat.invoke("What is the capital of Mali?")
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

    def get_token_ids(self, text: str) -> list[int]:
        """Token ids of ``text`` from the model's own tokenizer (offline, exact)."""
        return self.get_guard().token_ids(text)

    def get_num_tokens_from_messages(self, messages: list[BaseMessage], tools: Sequence[Any] | None = None) -> int:
        """Tokens of the prompt the model would be fed for ``messages`` (chat template included)."""
        if tools:
            raise InvalidInputError("ChatSpillguard counts tokens without tools; pass `tools=None`")
        return len(self.get_guard().prompt_ids(to_chat_dicts(messages)))

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self.streaming:
            return generate_from_stream(self._stream(messages, stop, run_manager, **kwargs))
        guard = self.get_guard()
        request = self._request(guard, messages, stop, run_manager, kwargs)
        verdict = guard.ask(request.chat, step=request.step, **request.generation)
        return self._result(verdict, request, run_manager)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self.streaming:
            return await agenerate_from_stream(self._astream(messages, stop, run_manager, **kwargs))
        guard = await run_in_executor(None, self.get_guard)
        request = self._request(guard, messages, stop, run_manager, kwargs)
        verdict = await guard.aask(request.chat, step=request.step, **request.generation)
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
        events = guard.stream(request.chat, step=request.step, **request.generation)
        try:
            for event in events:
                for chunk in chunks.take(event):
                    if run_manager and chunk.text:
                        run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                    yield chunk
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
        async for event in guard.astream(request.chat, step=request.step, **request.generation):
            for chunk in chunks.take(event):
                if run_manager and chunk.text:
                    await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                yield chunk

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
        return _Request(to_chat_dicts(messages), generation, _step_of(guard, run_manager))

    def _result(
        self,
        verdict: Verdict,
        request: _Request,
        run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None,
    ) -> ChatResult:
        info = self._info(verdict, request)
        message = AIMessage(content=verdict.text, response_metadata=info, usage_metadata=_usage(verdict))
        self._maybe_raise(verdict, run_manager)
        return ChatResult(generations=[ChatGeneration(message=message, generation_info=info)])

    def _info(self, verdict: Verdict, request: _Request) -> dict[str, Any]:
        finish = "length" if len(verdict.best.scores) >= int(request.generation["max_new_tokens"]) else "stop"
        info: dict[str, Any] = {
            "model_name": self.model_name,
            "model_provider": "spillguard",
            "finish_reason": finish,
            METADATA_KEY: verdict.to_dict(per_token=self.logprobs),
        }
        if self.logprobs:
            info["logprobs"] = logprobs_of(verdict)
        return info

    def _maybe_raise(
        self, verdict: Verdict, run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None
    ) -> None:
        if self.raise_on_hallucination and verdict.hallucinated:
            raise HallucinationDetected(verdict, run_id=run_manager.run_id if run_manager else None)


class _Chunks:
    """Turns the guard's stream events into LangChain chunks: one per text delta, then the verdict.

    With ``logprobs`` on, each token's energies (which arrive one token late) ride on the next
    text chunk, and the last ones on the final chunk; otherwise they are dropped.
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
            info = {**self.chat._info(event, self.request), **self._pending()}
            message = AIMessageChunk(
                content="", response_metadata=info, usage_metadata=_usage(event), chunk_position="last"
            )
            return [ChatGenerationChunk(message=message, generation_info=info)]
        return [ChatGenerationChunk(message=AIMessageChunk(content=event, response_metadata=self._pending()))]

    def _pending(self) -> dict[str, Any]:
        steps, self.steps = self.steps, []
        return {STEPS_KEY: steps} if steps else {}


def _step_of(
    guard: Guard, run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None
) -> RetryStep | None:
    """The attempt this call makes: a :class:`SpillguardRunnable`'s step from the run metadata,
    or, under LangChain's ``with_retry`` (tag ``retry:attempt:N``), a resampled attempt N."""
    if run_manager is None:
        return None
    step = run_manager.metadata.get(STEP_KEY)
    if isinstance(step, Mapping):
        return RetryStep.from_dict(step)
    attempt = max([int(m.group(1)) for t in run_manager.tags if (m := _RETRY_TAG.match(t))], default=1)
    return guard.policy.step(attempt) if attempt > 1 else None


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
