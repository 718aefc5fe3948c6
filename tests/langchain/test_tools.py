"""Tool calling and structured output on ChatSpillguard.

Plumbing runs on a scripted tiny model whose chat template renders tools (tests/langchain/
scripted.py); the bundled SmolLM2 template renders none, so tools there are refused with the
reason.
"""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("langchain_core")

from langchain_core.exceptions import OutputParserException
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from pydantic import BaseModel

from guardrail import InvalidInputError
from langchain_spillguard import ChatSpillguard, SpillguardRunnable, evidence_of
from tests.scripted import WEATHER_CALL, scripted_guard

QUESTION = "what is the weather in paris ?"


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


class Person(BaseModel):
    """A person."""

    name: str
    age: int


@pytest.fixture(scope="module")
def caller() -> ChatSpillguard:
    """Calls get_weather first; after a tool result answers 'paris .'."""
    return ChatSpillguard(guard=scripted_guard({"assistant:": WEATHER_CALL, "answer:": "paris ."}))


def test_bind_tools_renders_the_tools_and_parses_the_call(caller: ChatSpillguard) -> None:
    message = caller.bind_tools([get_weather]).invoke(QUESTION)
    assert message.content == "" and message.response_metadata["finish_reason"] == "tool_calls"
    (call,) = message.tool_calls
    assert call["name"] == "get_weather" and call["args"] == {"city": "Paris"} and call["id"]
    data = message.response_metadata["spillguard"]
    assert data["answer"] == WEATHER_CALL  # the verdict scores the text the model wrote
    assert data["tool_calls"] == [{"name": "get_weather", "arguments": {"city": "Paris"}, "id": call["id"]}]
    evidence = evidence_of(message)
    assert evidence is not None and evidence.check(message.text) is evidence  # sealed, about this text
    guard = caller.get_guard()
    tools = [{"type": "function", "function": {"name": "get_weather"}}]
    assert guard.render(QUESTION, tools=tools).startswith("tools : get_weather <eos>")
    assert message.usage_metadata is not None
    assert message.usage_metadata["input_tokens"] == caller.get_num_tokens_from_messages(
        [HumanMessage(QUESTION)], tools=[get_weather]
    )


def test_without_tools_the_markup_stays_text(caller: ChatSpillguard) -> None:
    message = caller.invoke(QUESTION)
    assert message.content == WEATHER_CALL and message.tool_calls == []


def test_streaming_with_tools_gives_the_calls_in_the_last_chunk(caller: ChatSpillguard) -> None:
    chunks = list(caller.bind_tools([get_weather]).stream(QUESTION))
    assert len(chunks) == 1 and chunks[0].chunk_position == "last"
    merged = chunks[0]
    assert merged.tool_calls[0]["name"] == "get_weather" and merged.tool_calls[0]["args"] == {"city": "Paris"}


@pytest.mark.asyncio
async def test_async_tool_calls(caller: ChatSpillguard) -> None:
    message = await caller.bind_tools([get_weather]).ainvoke(QUESTION)
    assert message.tool_calls[0]["name"] == "get_weather"
    merged = None
    async for chunk in caller.bind_tools([get_weather]).astream(QUESTION):
        merged = chunk if merged is None else merged + chunk
    assert merged is not None and merged.tool_calls[0]["args"] == {"city": "Paris"}


def test_tool_call_history_goes_to_the_template(caller: ChatSpillguard) -> None:
    history = [
        HumanMessage(QUESTION),
        AIMessage("", tool_calls=[{"name": "get_weather", "args": {"city": "Paris"}, "id": "call_1"}]),
        ToolMessage("sunny", tool_call_id="call_1", name="get_weather"),
    ]
    message = caller.bind_tools([get_weather]).invoke(history)
    assert message.content == "paris ." and message.tool_calls == []
    rendered = caller.get_guard().render(
        [
            {"role": "user", "content": QUESTION},
            {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "get_weather"}}]},
            {"role": "tool", "content": "sunny", "tool_call_id": "call_1", "name": "get_weather"},
        ]
    )
    assert "assistant: call get_weather" in rendered and rendered.endswith("answer: ")


def test_tool_choice(caller: ChatSpillguard) -> None:
    @tool
    def other(x: int) -> int:
        """Another tool."""
        return x

    chosen = caller.bind_tools([get_weather, other], tool_choice="get_weather").invoke(QUESTION)
    assert chosen.usage_metadata is not None
    assert chosen.usage_metadata["input_tokens"] == caller.get_num_tokens_from_messages(
        [HumanMessage(QUESTION)], tools=[get_weather]
    )
    none = caller.bind_tools([get_weather], tool_choice="none").invoke(QUESTION)
    assert none.tool_calls == [] and none.content == WEATHER_CALL  # no tools rendered: plain text
    with pytest.raises(InvalidInputError, match="tool_choice"):
        caller.bind_tools([get_weather], tool_choice="nope")
    with pytest.raises(InvalidInputError, match="not a tool"):
        caller.bind_tools([42])  # type: ignore[list-item]


def test_guard_runnable_judges_a_tool_call_message(caller: ChatSpillguard) -> None:
    result = SpillguardRunnable(caller.bind_tools([get_weather])).invoke(QUESTION)
    assert result.response_metadata["spillguard"]["guard"]["chosen"] == 0


def test_a_template_without_tools_refuses_them_with_the_reason(tiny_model: Any, tiny_tokenizer: Any) -> None:
    from guardrail import Guard

    chat = ChatSpillguard(guard=Guard(tiny_model, tiny_tokenizer, max_new_tokens=4))
    with pytest.raises(InvalidInputError, match="chat template renders no tools"):
        chat.bind_tools([get_weather]).invoke("what is the capital of france ?")
    with pytest.raises(InvalidInputError, match="renders no tools"):
        chat.get_num_tokens_from_messages([HumanMessage("what")], tools=[get_weather])


@pytest.mark.integration
def test_the_bundled_model_refuses_tools_with_the_reason(real_guard: Any) -> None:
    chat = ChatSpillguard(guard=real_guard, max_tokens=8)
    with pytest.raises(InvalidInputError, match="this tokenizer's chat template renders no tools"):
        chat.bind_tools([get_weather]).invoke("What is the weather in Paris?")


# -- structured output ----------------------------------------------------------------------

PERSON = '{"name": "Ada", "age": 36}'


@pytest.fixture(scope="module")
def jsoner() -> ChatSpillguard:
    return ChatSpillguard(guard=scripted_guard({"assistant:": PERSON}))


def test_json_schema_structured_output(jsoner: ChatSpillguard) -> None:
    person = jsoner.with_structured_output(Person).invoke("who is ada ?")
    assert person == Person(name="Ada", age=36)
    as_dict = jsoner.with_structured_output(Person.model_json_schema(), method="json_mode").invoke("who ?")
    assert as_dict == {"name": "Ada", "age": 36}
    raw = jsoner.with_structured_output(Person, include_raw=True).invoke("who is ada ?")
    assert raw["parsed"] == Person(name="Ada", age=36) and raw["parsing_error"] is None
    assert raw["raw"].response_metadata["spillguard"]["answer"] == PERSON  # the verdict rides on the raw message


def test_the_schema_is_in_a_system_instruction(jsoner: ChatSpillguard) -> None:
    bound = jsoner.bind(response_format={"type": "json_schema", "json_schema": {"schema": Person.model_json_schema()}})
    plain = jsoner.invoke("who ?")
    structured = bound.invoke("who ?")
    assert structured.usage_metadata and plain.usage_metadata
    assert structured.usage_metadata["input_tokens"] > plain.usage_metadata["input_tokens"]
    with pytest.raises(InvalidInputError, match="response_format"):
        jsoner.bind(response_format={"type": "xml"}).invoke("who ?")


class City(BaseModel):
    """A city."""

    city: str


def test_function_calling_structured_output() -> None:
    call = '<tool_call> {"name": "City", "arguments": {"city": "Paris"}} </tool_call>'
    chat = ChatSpillguard(guard=scripted_guard({"assistant:": call}))
    assert chat.with_structured_output(City, method="function_calling").invoke("where ?") == City(city="Paris")


def test_unparseable_output_is_an_error_not_a_silent_value(caller: ChatSpillguard) -> None:
    with pytest.raises(OutputParserException):
        caller.with_structured_output(Person).invoke("who ?")  # the reply is not JSON
    raw = caller.with_structured_output(Person, include_raw=True).invoke("who ?")
    assert raw["parsed"] is None and isinstance(raw["parsing_error"], OutputParserException)


def test_unsupported_structured_output_arguments_are_refused(caller: ChatSpillguard) -> None:
    with pytest.raises(InvalidInputError, match="method"):
        caller.with_structured_output(Person, method="xml")
    with pytest.raises(InvalidInputError, match="strict"):
        caller.with_structured_output(Person, strict="yes")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="tools"):
        caller.with_structured_output(Person, tools=[])
