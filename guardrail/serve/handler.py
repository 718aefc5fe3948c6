"""One HTTP request in, one reply out, for a guard: the server without the server.

:class:`ChatHandler` knows the routes (``POST /v1/chat/completions``, ``GET /v1/models``), parses
and checks a request (:mod:`guardrail.serve.schema`), asks the guard (:meth:`Guard.aask`, which
holds the model's asyncio lock: one generation at a time per replica, the others wait in the
event loop) and turns the verdict, or the error, into an OpenAI-shaped reply. It imports no
web framework and no Ray, so it is unit-tested on tiny in-memory models; the Ray Serve
deployment only moves bytes between HTTP and :meth:`ChatHandler.handle`.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import pydantic

from guardrail.errors import ContextLengthError, InvalidInputError, SpillguardError
from guardrail.policy import Action
from guardrail.serve.schema import ChatCompletion, ChatCompletionRequest, Choice, ResponseMessage, Usage
from guardrail.validation import finite_or_none
from guardrail.verdict import Verdict

__all__ = ["HEADER", "ChatHandler", "Reply"]

HEADER = "x-spillguard"
"""Response header with the verdict's action, score, threshold and span as ASCII JSON: clients
that drop unknown body fields (LangChain's ``ChatOpenAI``) still see it with
``include_response_headers=True``."""


@dataclass(frozen=True)
class Reply:
    """An HTTP reply: status, JSON body and extra headers."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


class ChatHandler:
    """Serves one guard (its model, calibration, localizer and policy).

    Args:
        guard: the :class:`~guardrail.guard.Guard`; its policy applies to every request.
        model_name: the ``model`` reported in responses and ``/v1/models``; default the guard's
            fingerprint name. Requests may name any model: a server serves one.
    """

    def __init__(self, guard: Any, *, model_name: str | None = None) -> None:
        self.guard = guard
        self.model_name = model_name or guard.fingerprint.name

    async def handle(self, method: str, path: str, body: bytes) -> Reply:
        """The reply to ``method path`` with ``body`` (the path below the route prefix)."""
        route = path.rstrip("/") or "/"
        if route == "/v1/chat/completions":
            if method != "POST":
                return _error(405, f"{method} {route}: use POST", "invalid_request_error")
            return await self._complete(body)
        if route == "/v1/models":
            if method != "GET":
                return _error(405, f"{method} {route}: use GET", "invalid_request_error")
            model = {"id": self.model_name, "object": "model", "created": 0, "owned_by": "spillguard"}
            return Reply(200, {"object": "list", "data": [model]})
        return _error(404, f"no route {route!r}: POST /v1/chat/completions or GET /v1/models", "invalid_request_error")

    async def _complete(self, body: bytes) -> Reply:
        try:
            request = ChatCompletionRequest.model_validate_json(body)
        except pydantic.ValidationError as exc:
            first = exc.errors()[0]
            param = ".".join(str(part) for part in first["loc"]) or None
            message = first["msg"].removeprefix("Value error, ")
            return _error(400, f"{param}: {message}" if param else message, "invalid_request_error", param=param)
        options = request.generation()
        try:
            verdict = await self.guard.aask(request.to_guard(), **options)
        except ContextLengthError as exc:
            return _error(400, str(exc), "invalid_request_error", code="context_length_exceeded")
        except InvalidInputError as exc:
            return _error(400, str(exc), "invalid_request_error")
        except SpillguardError as exc:
            return _error(500, f"{type(exc).__name__}: {exc}", "server_error")
        limit = options.get("max_new_tokens", self.guard.max_new_tokens)
        completion = self._completion(verdict, limit)
        return Reply(200, completion.model_dump(mode="json"), {HEADER: _header(verdict)})

    def _completion(self, verdict: Verdict, limit: int) -> ChatCompletion:
        if verdict.action is Action.ABSTAIN:
            reason = "content_filter"
        else:
            reason = "length" if len(verdict.best.tokens) >= limit else "stop"
        prompt = sum(a.prompt_tokens for a in verdict.attempts)
        generated = sum(len(a.tokens) for a in verdict.attempts)
        evidence = verdict.to_dict(per_token=False)
        del evidence["seal"]  # meaningful only inside the process that made it
        return ChatCompletion(
            id=f"chatcmpl-{uuid.uuid4().hex}",
            created=int(time.time()),
            model=self.model_name,
            choices=[Choice(message=ResponseMessage(content=verdict.text), finish_reason=reason)],
            usage=Usage(prompt_tokens=prompt, completion_tokens=generated, total_tokens=prompt + generated),
            spillguard=evidence,
        )


def _header(verdict: Verdict) -> str:
    summary = {
        "action": verdict.action.value,
        "score": finite_or_none(verdict.score),
        "threshold": verdict.threshold,
        "hallucinated": verdict.hallucinated,
        "span": verdict.span.text,
    }
    return json.dumps(summary, ensure_ascii=True, separators=(",", ":"))


def _error(status: int, message: str, kind: str, *, param: str | None = None, code: str | None = None) -> Reply:
    """OpenAI's error body: ``{"error": {"message", "type", "param", "code"}}``."""
    return Reply(status, {"error": {"message": message, "type": kind, "param": param, "code": code}})
