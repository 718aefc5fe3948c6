"""``ChatSpillguard``: a local Hugging Face chat model whose answers carry spilled-energy scores."""

from __future__ import annotations

import os
import threading
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.chat_models import generate_from_stream
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables.config import run_in_executor
from pydantic import ConfigDict, Field, PrivateAttr, model_validator

from guardrail.calibration import Calibration
from guardrail.errors import InvalidInputError
from guardrail.guard import Guard
from guardrail.loading import DEFAULT_MODEL_NAME
from guardrail.locks import async_model_lock
from guardrail.policy import Policy
from guardrail.scores import TokenStep
from guardrail.verdict import Verdict
from langchain_spillguard.errors import HallucinationFlagged
from langchain_spillguard.evidence import DECODING_KEY, STEPS_KEY, verdict_metadata
from langchain_spillguard.messages import to_chat_dicts

__all__ = ["ChatSpillguard"]

_CALL_OPTIONS = frozenset({"temperature", "max_tokens", "top_p", "seed", "model"})
_LOAD_LOCK = threading.Lock()


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
        streaming: make ``invoke`` stream internally (callbacks see each token).
        raise_on_hallucination: raise :class:`~langchain_spillguard.HallucinationFlagged` instead
            of returning a flagged answer (for ``with_retry``/``with_fallbacks``).
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
    streaming: bool = False
    raise_on_hallucination: bool = False

    model_config = ConfigDict(populate_by_name=True, arbitrary_types_allowed=True)

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
        if self.temperature is not None and self.temperature < 0:
            raise InvalidInputError(f"`temperature` must be >= 0, got {self.temperature!r}")
        return self

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str], **kwargs: Any) -> ChatSpillguard:
        """A chat model over a local model directory or ``.gguf`` file (loaded on first use)."""
        return cls(model_path=str(path), model=Path(path).name, **kwargs)

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
        params["ls_model_name"] = kwargs.get("model") if isinstance(kwargs.get("model"), str) else self.model_name
        return params

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
        chat, generation = self._request(guard, messages, stop, run_manager, kwargs)
        verdict = guard.ask(chat, **generation)
        return self._result(verdict, generation, run_manager)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        guard = await run_in_executor(None, self.get_guard)
        sync_manager = run_manager.get_sync() if run_manager else None
        async with async_model_lock(guard.model):
            return await run_in_executor(None, self._generate, messages, stop, sync_manager, **kwargs)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        for chunk in self._locked_chunks(messages, stop, run_manager, kwargs):
            if run_manager:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        guard = await run_in_executor(None, self.get_guard)
        sync_manager = run_manager.get_sync() if run_manager else None
        async with async_model_lock(guard.model):
            chunks = self._locked_chunks(messages, stop, sync_manager, kwargs)
            done = object()
            try:
                while (chunk := await run_in_executor(None, next, chunks, done)) is not done:
                    assert isinstance(chunk, ChatGenerationChunk)
                    if run_manager:
                        await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                    yield chunk
            finally:
                await run_in_executor(None, chunks.close)

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
        run_manager: CallbackManagerForLLMRun | None,
        options: Mapping[str, Any],
    ) -> tuple[list[dict[str, str]], dict[str, Any]]:
        """Chat dicts and generation kwargs (sampling seed included) of one call."""
        unknown = sorted(set(options) - _CALL_OPTIONS)
        if unknown:
            raise InvalidInputError(
                f"ChatSpillguard does not support the call arguments {unknown}; "
                f"supported: {sorted(_CALL_OPTIONS)} and `stop`"
            )
        chat = to_chat_dicts(messages)
        change = _decoding_change(run_manager)
        if change.get("feedback") and change.get("previous_answer"):
            chat += [
                {"role": "assistant", "content": str(change["previous_answer"])},
                {"role": "user", "content": str(change["feedback"])},
            ]
        temperature = change.get("temperature", options.get("temperature", self.temperature))
        seed = change.get("seed", options.get("seed", self.seed))
        generation: dict[str, Any] = {
            "max_new_tokens": options.get("max_tokens") or self.max_tokens or guard.max_new_tokens
        }
        if temperature:
            top_p = options.get("top_p", self.top_p)
            generation.update(do_sample=True, temperature=float(temperature), top_k=0, top_p=top_p or 1.0)
            if seed is not None:
                generation["seed"] = int(seed)
        stops = stop if stop is not None else self.stop
        if stops:
            generation["stop_strings"] = list(stops)
        return chat, generation

    def _result(
        self, verdict: Verdict, generation: Mapping[str, Any], run_manager: CallbackManagerForLLMRun | None
    ) -> ChatResult:
        info = self._info(verdict, generation)
        message = AIMessage(
            content=verdict.text,
            response_metadata=info,
            usage_metadata=_usage(verdict),
        )
        self._maybe_raise(verdict, run_manager)
        return ChatResult(generations=[ChatGeneration(message=message, generation_info=info)])

    def _info(self, verdict: Verdict, generation: Mapping[str, Any]) -> dict[str, Any]:
        length = len(verdict.best.scores)
        finish = "length" if length >= int(generation["max_new_tokens"]) else "stop"
        return {
            "model_name": self.model_name,
            "model_provider": "spillguard",
            "finish_reason": finish,
            **verdict_metadata(verdict),
        }

    def _maybe_raise(self, verdict: Verdict, run_manager: CallbackManagerForLLMRun | None) -> None:
        if self.raise_on_hallucination and verdict.hallucinated:
            run_id = run_manager.run_id if run_manager else None
            raise HallucinationFlagged(verdict.to_dict(), run_id=run_id, verdict=verdict)

    def _locked_chunks(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None,
        run_manager: CallbackManagerForLLMRun | None,
        options: Mapping[str, Any],
    ) -> Iterator[ChatGenerationChunk]:
        """Chunks of one streamed answer (the core serializes generations on one model)."""
        guard = self.get_guard()
        chat, generation = self._request(guard, messages, stop, run_manager, options)
        events = guard.stream(chat, **generation)
        try:
            for event in events:
                if isinstance(event, Verdict):
                    self._maybe_raise(event, run_manager)
                    yield self._last_chunk(event, generation)
                elif isinstance(event, TokenStep):
                    yield _step_chunk(event)
                else:
                    yield ChatGenerationChunk(message=AIMessageChunk(content=event))
        finally:
            events.close()

    def _last_chunk(self, verdict: Verdict, generation: Mapping[str, Any]) -> ChatGenerationChunk:
        info = self._info(verdict, generation)
        message = AIMessageChunk(
            content="",
            response_metadata=info,
            usage_metadata=_usage(verdict),
            chunk_position="last",
        )
        return ChatGenerationChunk(message=message, generation_info=info)


def _decoding_change(run_manager: CallbackManagerForLLMRun | None) -> dict[str, Any]:
    """The decoding change a :class:`HallucinationGuard` asked for through the run's metadata."""
    if run_manager is None:
        return {}
    change = run_manager.metadata.get(DECODING_KEY)
    return dict(change) if isinstance(change, Mapping) else {}


def _step_chunk(step: TokenStep) -> ChatGenerationChunk:
    entry = {
        "position": step.index,
        "token_id": step.token_id,
        "spilled_energy": step.spilled_energy,
        "logprob": step.logprob,
        "entropy": step.entropy,
    }
    return ChatGenerationChunk(message=AIMessageChunk(content="", response_metadata={STEPS_KEY: [entry]}))


def _usage(verdict: Verdict) -> UsageMetadata:
    """Tokens read and written over all attempts."""
    read = sum(a.prompt_tokens for a in verdict.attempts)
    written = sum(len(a.scores) for a in verdict.attempts)
    return UsageMetadata(input_tokens=read, output_tokens=written, total_tokens=read + written)
