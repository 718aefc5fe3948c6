"""The chat-completions handler on a tiny in-memory model: routes, request checks, the verdict in
the response, OpenAI's error shape. No Ray, no HTTP: the deployment only moves bytes to it."""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

import pytest

from guardrail.calibration import Calibration
from guardrail.guard import Guard
from guardrail.policy import Policy
from guardrail.serve import ChatHandler, Reply
from guardrail.serve.handler import HEADER
from guardrail.serve.schema import ChatCompletionRequest

QUESTION = "what is the capital of france ?"


def _post(handler: ChatHandler, body: object, path: str = "/v1/chat/completions") -> Reply:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return asyncio.run(handler.handle("POST", path, raw))


def _ask(**fields: Any) -> dict[str, Any]:
    return {"model": "whatever", "messages": [{"role": "user", "content": QUESTION}], **fields}


def test_the_response_is_a_chat_completion_carrying_the_verdict_of_guard_ask(tiny_guard: Guard) -> None:
    reply = _post(ChatHandler(tiny_guard), _ask(max_tokens=3))
    expected = tiny_guard.ask([{"role": "user", "content": QUESTION}], max_new_tokens=3)
    assert reply.status == 200
    body = reply.body
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert body["model"] == tiny_guard.fingerprint.name
    (choice,) = body["choices"]
    assert choice["message"] == {"role": "assistant", "content": expected.text}
    verdict = body["spillguard"]
    assert verdict["action"] == expected.action.value and verdict["answer"] == expected.answer
    assert math.isclose(verdict["score"], expected.score, abs_tol=1e-6)
    assert verdict["threshold"] == expected.threshold and verdict["span"] == expected.span.to_dict()
    assert "seal" not in verdict  # a seal means something only inside the process that made it
    assert body["usage"]["completion_tokens"] == len(expected.best.tokens)
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + len(expected.best.tokens)
    assert choice["finish_reason"] == ("length" if len(expected.best.tokens) >= 3 else "stop")
    header = json.loads(reply.headers[HEADER])
    assert header == {
        "action": verdict["action"],
        "score": verdict["score"],
        "threshold": verdict["threshold"],
        "hallucinated": verdict["hallucinated"],
        "span": expected.span.text,
    }
    assert reply.headers[HEADER].isascii()
    json.dumps(body, allow_nan=False)  # what Starlette's JSONResponse requires


def test_the_policy_applies_on_the_server(tiny_model: Any, tiny_tokenizer: Any) -> None:
    careful = Guard(
        tiny_model,
        tiny_tokenizer,
        calibration=Calibration.uncalibrated(threshold=-1e9),
        policy=Policy(on_hallucination="abstain", abstain_text="no idea"),
        max_new_tokens=4,
    )
    body = _post(ChatHandler(careful, model_name="tiny"), _ask()).body
    (choice,) = body["choices"]
    assert choice["message"]["content"] == "no idea" and choice["finish_reason"] == "content_filter"
    assert body["spillguard"]["action"] == "abstain" and body["spillguard"]["answer"] != "no idea"
    assert body["model"] == "tiny"


def test_messages_roles_and_content_parts_reach_the_model_as_guard_ask_takes_them(tiny_guard: Guard) -> None:
    messages = [
        {"role": "developer", "content": "answer ."},
        {"role": "user", "content": [{"type": "text", "text": "what is the capital "}, {"type": "text", "text": "?"}]},
    ]
    body = _post(ChatHandler(tiny_guard), {"messages": messages, "temperature": 0}).body
    expected = tiny_guard.ask(
        [{"role": "system", "content": "answer ."}, {"role": "user", "content": "what is the capital ?"}]
    )
    assert body["spillguard"]["answer"] == expected.answer
    assert body["spillguard"]["question"] == "what is the capital ?"


def test_sampling_options_map_to_the_guards_decoding(tiny_guard: Guard) -> None:
    sampled = _ask(temperature=0.7, top_p=0.9, seed=3, max_completion_tokens=2)
    body = _post(ChatHandler(tiny_guard), sampled).body
    (attempt,) = body["spillguard"]["attempts"]
    assert attempt["decoding"].startswith("sample(temperature=0.7") and attempt["answer_tokens"] <= 2
    again = tiny_guard.ask(QUESTION, do_sample=True, temperature=0.7, top_p=0.9, seed=3, max_new_tokens=2)
    assert attempt["answer"] == again.answer  # the seed reached the sampler
    request = ChatCompletionRequest.model_validate(_ask(stop=".", max_tokens=5, max_completion_tokens=7, top_p=0.5))
    assert request.generation() == {"max_new_tokens": 7, "stop_strings": ["."]}  # greedy: top_p has no say


@pytest.mark.parametrize(
    ("body", "param", "says"),
    [
        (b"{not json", None, "Invalid JSON"),
        ({"messages": []}, "messages", "at least 1 item"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "messages.0.role", "'system'"),
        (_ask(stream=True), None, "`stream`=True: streaming is not supported"),
        (_ask(n=2), None, "`n`=2: one choice per request"),
        (_ask(tools=[{"type": "function", "function": {"name": "f"}}]), None, "tool calling is not supported"),
        (_ask(logprobs=True), None, "log-probs are not returned"),
        (_ask(max_tokens=0), "max_tokens", "greater than or equal to 1"),
        (_ask(temperature=float("nan")), "temperature", ""),
    ],
)
def test_unusable_requests_get_openais_400_naming_the_field(
    tiny_guard: Guard, body: object, param: str | None, says: str
) -> None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()  # NaN goes out as JSON's NaN literal
    reply = _post(ChatHandler(tiny_guard), raw)
    assert reply.status == 400, reply.body
    error = reply.body["error"]
    assert error["type"] == "invalid_request_error" and says in error["message"]
    assert error["param"] == param or param is None


def test_a_prompt_that_does_not_fit_is_openais_context_length_error(tiny_guard: Guard) -> None:
    reply = _post(ChatHandler(tiny_guard), _ask(max_tokens=1000))  # the tiny model has 128 positions
    assert reply.status == 400 and reply.body["error"]["code"] == "context_length_exceeded"
    assert "exceeds the model's context of 128 tokens" in reply.body["error"]["message"]


def test_routes(tiny_guard: Guard) -> None:
    handler = ChatHandler(tiny_guard)
    models = asyncio.run(handler.handle("GET", "/v1/models/", b""))
    assert models.status == 200 and models.body["data"][0]["id"] == tiny_guard.fingerprint.name
    assert asyncio.run(handler.handle("GET", "/v1/chat/completions", b"")).status == 405
    assert asyncio.run(handler.handle("POST", "/v1/models", b"")).status == 405
    missing = asyncio.run(handler.handle("POST", "/v1/completions", b"{}"))
    assert missing.status == 404 and "POST /v1/chat/completions" in missing.body["error"]["message"]
