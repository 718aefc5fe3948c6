"""The OpenAI chat-completions shapes the server reads and writes, plus the verdict.

A request is the subset of OpenAI's ``POST /v1/chat/completions`` body that a guarded local
model can honour: messages (text content), ``max_tokens``/``max_completion_tokens``,
``temperature``, ``top_p``, ``seed`` and ``stop``. Greedy decoding unless ``temperature`` > 0
(energies always come from the raw logits, whatever the sampler). What it cannot honour
(streaming, ``n`` > 1, tools, log-probs, response formats, frequency/presence penalties) is
refused with a reason rather than silently ignored; unknown fields are ignored, as OpenAI's
own clients send a few.

A response is OpenAI's ``chat.completion`` object with one more field, ``spillguard``: the
verdict (action, score, threshold, span, every attempt) as :meth:`Verdict.to_dict` gives it
without per-token arrays and without the seal, which only means something inside the process
that made it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["ChatCompletion", "ChatCompletionRequest", "Choice", "RequestMessage", "TextPart", "Usage"]


class TextPart(BaseModel):
    """One part of a message's content list; only text parts are accepted."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["text"]
    text: str


class RequestMessage(BaseModel):
    """A chat message of a request; ``developer`` is OpenAI's newer name for ``system``."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None

    def to_guard(self) -> dict[str, str]:
        """The message as :meth:`Guard.ask` takes it (``{"role", "content"}``, text only)."""
        text = self.content if isinstance(self.content, str) else "".join(p.text for p in self.content or [])
        return {"role": "system" if self.role == "developer" else self.role, "content": text}


_REFUSED = {
    "stream": "streaming is not supported: send `stream: false`",
    "tools": "tool calling is not supported by this server",
    "functions": "function calling is not supported by this server",
    "logprobs": "log-probs are not returned; the verdict is in the `spillguard` field",
    "response_format": "response formats are not supported",
    "frequency_penalty": "frequency penalties are not supported",
    "presence_penalty": "presence penalties are not supported",
}


class ChatCompletionRequest(BaseModel):
    """The body of ``POST /v1/chat/completions``."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    messages: list[RequestMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = Field(None, ge=0)
    stop: str | list[str] | None = None
    n: int = 1
    stream: bool | None = None
    tools: list[Any] | None = None
    functions: list[Any] | None = None
    logprobs: bool | None = None
    response_format: dict[str, Any] | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None

    @model_validator(mode="after")
    def _refuse_unsupported(self) -> ChatCompletionRequest:
        if self.n != 1:
            raise ValueError(f"`n`={self.n!r}: one choice per request (send n=1 or leave it out)")
        for name, reason in _REFUSED.items():
            value = getattr(self, name)
            if value and not (name == "response_format" and value == {"type": "text"}):
                raise ValueError(f"`{name}`={value!r}: {reason}")
        return self

    def to_guard(self) -> list[dict[str, str]]:
        """The messages as :meth:`Guard.ask` takes them."""
        return [m.to_guard() for m in self.messages]

    def generation(self) -> dict[str, Any]:
        """Decoding options for :meth:`Guard.ask` (see :data:`guardrail.GENERATION_OPTIONS`)."""
        options: dict[str, Any] = {}
        limit = self.max_completion_tokens or self.max_tokens
        if limit is not None:
            options["max_new_tokens"] = limit
        if self.temperature:
            options.update(do_sample=True, temperature=self.temperature)
            if self.top_p is not None:
                options["top_p"] = self.top_p
        if self.seed is not None:
            options["seed"] = self.seed
        if self.stop:
            options["stop_strings"] = [self.stop] if isinstance(self.stop, str) else list(self.stop)
        return options


class ResponseMessage(BaseModel):
    """The assistant message of a choice."""

    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    """The one choice of a completion.

    ``finish_reason`` is ``"stop"``, ``"length"`` (the answer hit the token limit) or
    ``"content_filter"`` when the guard abstained: the content is the abstention text, and the
    withheld answer is in the verdict.
    """

    index: int = 0
    message: ResponseMessage
    finish_reason: Literal["stop", "length", "content_filter"]
    logprobs: None = None


class Usage(BaseModel):
    """Tokens over every attempt the guard made (a retry policy may make several)."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(BaseModel):
    """OpenAI's ``chat.completion`` object plus ``spillguard``, the verdict."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    spillguard: dict[str, Any]
