"""SpillguardLLM in LlamaIndex agents and structured output.

Tool plumbing runs on the scripted tiny model of tests/scripted.py, whose chat template renders
tools (it calls ``get_weather``, then answers ``paris .`` after the tool result); the bundled
SmolLM2 template renders none, so there ``FunctionAgent`` is refused and ``ReActAgent`` (tools
described in the prompt) carries the gate.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

pytest.importorskip("llama_index.core")

from llama_index.core.agent.workflow import FunctionAgent, ReActAgent
from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.memory import ChatMemoryBuffer
from llama_index.core.tools import FunctionTool
from pydantic import BaseModel

from guardrail import Evidence, Guard, InvalidInputError, Policy
from llama_index_spillguard import METADATA_KEY, SpillguardLLM, query_scope
from tests.scripted import WEATHER_CALL, scripted_guard

pytestmark = pytest.mark.usefixtures("closed_event_loop")

QUESTION = "what is the weather in paris ?"
CITY_CALL = '<tool_call> {"name": "City", "arguments": {"city": "Paris"}} </tool_call>'


class City(BaseModel):
    """A city."""

    city: str


def _weather_tool(seen: list[str]) -> FunctionTool:
    def get_weather(city: str) -> str:
        """The weather in a city."""
        seen.append(city)
        return f"sunny in {city}"

    return FunctionTool.from_defaults(get_weather)


@pytest.fixture(scope="module")
def caller() -> SpillguardLLM:
    """Calls get_weather first; after a tool result answers 'paris .'."""
    return SpillguardLLM(scripted_guard({"assistant:": WEATHER_CALL, "answer:": "paris ."}))


def _run(agent: Any, message: str) -> Any:
    async def go() -> Any:
        return await agent.run(user_msg=message, memory=ChatMemoryBuffer.from_defaults())

    return asyncio.run(go())


# -- function calling ---------------------------------------------------------------------


def test_a_tool_template_makes_a_function_calling_llm(caller: SpillguardLLM) -> None:
    assert caller.metadata.is_function_calling_model


def test_chat_with_tools_returns_the_call_and_scores_what_the_model_wrote(caller: SpillguardLLM) -> None:
    seen: list[str] = []
    response = caller.chat_with_tools([_weather_tool(seen)], user_msg=QUESTION)
    (selection,) = caller.get_tool_calls_from_response(response)
    assert (selection.tool_name, selection.tool_kwargs) == ("get_weather", {"city": "Paris"})
    assert response.message.content == ""  # the markup became the call
    evidence = response.message.additional_kwargs[METADATA_KEY]
    assert evidence["answer"] == WEATHER_CALL  # the verdict scores the text the model wrote
    assert evidence["tool_calls"] == [{"name": "get_weather", "arguments": {"city": "Paris"}, "id": selection.tool_id}]
    assert Evidence.from_dict(evidence).check("").sealed  # resealed with the text shown
    assert caller.guard.render(QUESTION, tools=[{"name": "get_weather"}]).startswith("tools : get_weather <eos>")
    assert seen == []  # nothing is executed by the LLM


def test_no_tool_call_is_an_error_only_when_asked(caller: SpillguardLLM) -> None:
    response = caller.chat([ChatMessage(role=MessageRole.USER, content=QUESTION)])  # no tools: markup stays text
    assert response.message.content == WEATHER_CALL
    assert caller.get_tool_calls_from_response(response, error_on_no_tool_call=False) == []
    with pytest.raises(InvalidInputError, match="expected at least one tool call"):
        caller.get_tool_calls_from_response(response)


def test_tool_choice_none_renders_no_tools(caller: SpillguardLLM) -> None:
    response = caller.chat_with_tools([_weather_tool([])], user_msg=QUESTION, tool_choice="none")
    assert caller.get_tool_calls_from_response(response, error_on_no_tool_call=False) == []
    with pytest.raises(InvalidInputError, match="tool_choice"):
        caller.chat_with_tools([_weather_tool([])], user_msg=QUESTION, tool_choice="other")


def test_streaming_with_tools_holds_the_text_back(caller: SpillguardLLM) -> None:
    chunks = list(caller.stream_chat_with_tools([_weather_tool([])], user_msg=QUESTION))
    (last,) = chunks  # the markup is never shown as text
    assert [s.tool_name for s in caller.get_tool_calls_from_response(last)] == ["get_weather"]
    assert last.message.additional_kwargs[METADATA_KEY]["answer"] == WEATHER_CALL


@pytest.mark.parametrize("streaming", [True, False])
def test_function_agent_calls_the_tool_and_the_answer_carries_the_verdict(
    caller: SpillguardLLM, streaming: bool
) -> None:
    seen: list[str] = []
    agent = FunctionAgent(tools=[_weather_tool(seen)], llm=caller, streaming=streaming)
    output = _run(agent, QUESTION)
    assert seen == ["Paris"]
    assert output.response.content == "paris ."
    evidence = output.response.additional_kwargs[METADATA_KEY]
    assert evidence["text"] == "paris ." and evidence["action"] in {"allow", "flag"}
    assert output.raw is not None


def test_the_guard_policy_abstains_inside_an_agent() -> None:
    guard = scripted_guard(
        {"assistant:": WEATHER_CALL, "answer:": "paris ."}, threshold=-1e9, policy=Policy("abstain", abstain_text="?")
    )
    output = _run(FunctionAgent(tools=[_weather_tool([])], llm=SpillguardLLM(guard)), QUESTION)
    assert output.response.content == "?"  # the call itself was abstained on: no tool ran
    assert output.response.additional_kwargs[METADATA_KEY]["action"] == "abstain"


def test_structured_predict_goes_through_a_tool_call() -> None:
    llm = SpillguardLLM(scripted_guard({"assistant:": CITY_CALL}))
    with query_scope("name the city") as scope:
        city = llm.structured_predict(City, _prompt("name the city"))
    assert city == City(city="Paris")
    (record,) = scope.records  # the verdict of the call that produced it
    assert record.verdict.text == CITY_CALL


def test_a_template_without_tools_refuses_them_with_the_reason(tiny_guard: Guard) -> None:
    llm = SpillguardLLM(tiny_guard)
    assert not llm.metadata.is_function_calling_model
    with pytest.raises(InvalidInputError, match="tools"):
        llm.chat_with_tools([_weather_tool([])], user_msg=QUESTION)


def _prompt(text: str) -> Any:
    from llama_index.core.prompts import PromptTemplate

    return PromptTemplate(text)


# -- the bundled model ----------------------------------------------------------------------


@pytest.mark.integration
def test_react_agent_on_the_bundled_model_carries_the_verdict(real_guard: Guard) -> None:
    llm = SpillguardLLM(real_guard, max_new_tokens=48)
    assert not llm.metadata.is_function_calling_model  # SmolLM2's template renders no tools
    output = _run(ReActAgent(tools=[], llm=llm), "What is the capital of Honduras?")
    evidence = output.response.additional_kwargs[METADATA_KEY]
    assert evidence["action"] == "flag" and evidence["score"] > evidence["threshold"]  # a wrong answer
    assert evidence["question"] == "What is the capital of Honduras?"  # localized against the user's message


@pytest.mark.integration
def test_react_agent_abstains_with_an_abstaining_guard(real_guard: Guard) -> None:
    guard = real_guard.with_policy(Policy("abstain", abstain_text="I don't know."))
    output = _run(ReActAgent(tools=[], llm=SpillguardLLM(guard, max_new_tokens=48)), "What is the capital of Honduras?")
    assert output.response.content == "I don't know."
