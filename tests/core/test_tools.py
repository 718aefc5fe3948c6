"""Tool calling in the core: specs rendered by a tool-aware template, calls parsed back."""

from __future__ import annotations

from typing import Any

import pytest

from guardrail import Guard, InvalidInputError
from guardrail.tools import ToolCall, check_tools, parse_tool_calls, template_supports_tools, with_tool_calls
from tests.conftest import build_tiny_tokenizer

TOOL_TEMPLATE = (
    "{% if tools %}tools : {% for t in tools %}{{ t['function']['name'] }} {% endfor %}<eos> {% endif %}"
    "{% for m in messages %}{{ m['role'] }}: "
    "{% if m.get('tool_calls') %}{% for c in m['tool_calls'] %}call {{ c['function']['name'] }} {% endfor %}"
    "{% else %}{{ m['content'] }}{% endif %} <eos> {% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)
WEATHER = {"type": "function", "function": {"name": "paris", "description": "d", "parameters": {"type": "object"}}}


@pytest.fixture(scope="module")
def tool_guard(tiny_model: Any) -> Guard:
    tokenizer = build_tiny_tokenizer()
    tokenizer.chat_template = TOOL_TEMPLATE
    return Guard(tiny_model, tokenizer, max_new_tokens=4)


def test_tools_are_rendered_by_a_tool_aware_template(tool_guard: Guard) -> None:
    assert template_supports_tools(tool_guard.tokenizer)
    text = tool_guard.render("what is the capital of france ?", tools=[WEATHER])
    assert text.startswith("tools : paris <eos>") and text.endswith("assistant: ")
    verdict = tool_guard.ask("what is the capital of france ?", tools=[WEATHER])
    assert verdict.best.prompt_tokens == len(tool_guard.prompt_ids("what is the capital of france ?", tools=[WEATHER]))


def test_a_conversation_with_a_tool_call_and_its_result(tool_guard: Guard) -> None:
    call = ToolCall("paris", {"city": "rome"}, id="call_1")
    messages = [
        {"role": "user", "content": "what is the capital of france ?"},
        {"role": "assistant", "content": "", "tool_calls": [call.to_template()]},
        {"role": "tool", "content": "paris", "tool_call_id": "call_1"},
    ]
    text = tool_guard.render(messages, tools=[WEATHER])
    assert "assistant: call paris" in text and "tool: paris" in text


def test_without_template_support_tools_are_refused_with_the_reason(tiny_guard: Guard) -> None:
    with pytest.raises(InvalidInputError, match="renders no tools"):
        tiny_guard.ask("what is the capital of france ?", tools=[WEATHER])
    with pytest.raises(InvalidInputError, match="tool result, but this tokenizer's chat template renders no tools"):
        tiny_guard.ask([{"role": "user", "content": "paris ?"}, {"role": "tool", "content": "x"}])
    with pytest.raises(InvalidInputError, match="tool 0 must be a function spec"):
        check_tools([{"description": "no name"}])
    with pytest.raises(InvalidInputError, match="`tools` must be a list"):
        check_tools("paris")


@pytest.mark.parametrize(
    ("text", "kept", "calls"),
    [
        ('<tool_call>{"name": "get", "arguments": {"x": 1}}</tool_call>', "", [("get", {"x": 1})]),
        ('Let me check.\n<tool_call>\n{"name": "a", "arguments": {}}\n</tool_call>', "Let me check.", [("a", {})]),
        ('<|python_tag|>{"name": "search", "parameters": {"q": "Mali"}}', "", [("search", {"q": "Mali"})]),
        (
            '[{"name": "a", "arguments": "{\\"k\\": 2}"}, {"name": "b", "parameters": {}}]',
            "",
            [("a", {"k": 2}), ("b", {})],
        ),
        ("The capital of Mali is Bamako.", "The capital of Mali is Bamako.", []),
        ('<tool_call>{"name": broken}</tool_call>', '<tool_call>{"name": broken}</tool_call>', []),
        ('{"answer": 42}', '{"answer": 42}', []),
    ],
)
def test_parse_tool_calls(text: str, kept: str, calls: list[tuple[str, dict[str, Any]]]) -> None:
    rest, found = parse_tool_calls(text)
    assert rest == kept
    assert [(c.name, dict(c.arguments)) for c in found] == calls
    assert all(c.id.startswith("call_") for c in found)


def test_a_template_call_reads_back_as_the_same_call() -> None:
    call = ToolCall("get_weather", {"city": "Paris"}, id="call_1")
    assert ToolCall.from_template(call.to_template()) == call
    as_text = {"id": "c", "function": {"name": "f", "arguments": '{"x": 1}'}}  # JSON-text arguments
    assert ToolCall.from_template(as_text) == ToolCall("f", {"x": 1}, id="c")
    for bad in ({"function": {"arguments": {}}}, "f", {"function": {"name": "f", "arguments": "{x"}}):
        with pytest.raises(InvalidInputError):
            ToolCall.from_template(bad)
    with pytest.raises(InvalidInputError, match="JSON object"):
        ToolCall.from_template({"function": {"name": "f", "arguments": "[1]"}})


def test_with_tool_calls_reseals_the_evidence_for_the_text_shown(tiny_guard: Guard) -> None:
    from guardrail import Evidence, UnscoredResponseError

    data = tiny_guard.ask("what is the capital of france ?").to_dict(per_token=False)
    call = ToolCall("f", {"x": 1}, id="c")
    out = with_tool_calls(data, "", [call])
    evidence = Evidence.from_dict(out)
    assert evidence.check("") is evidence  # sealed, about the text shown
    assert out["tool_calls"] == [{"name": "f", "arguments": {"x": 1}, "id": "c"}]
    assert (out["answer"], out["score"]) == (data["answer"], data["score"])  # still the model's whole answer
    with pytest.raises(UnscoredResponseError):
        with_tool_calls({**data, "score": 0.0}, "", [call])  # forged evidence is not resealed
