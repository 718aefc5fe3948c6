"""SpillguardMiddleware in real ``langchain.agents.create_agent`` graphs.

On the bundled model, "What is the capital of Honduras?" is answered wrongly ("Bahia") and flagged
by the shipped calibration: the agent returns the policy's result. A scripted tiny model with a
tool-aware template shows what happens to tool-call turns.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import pytest

pytest.importorskip("langchain.agents")

from langchain.agents import create_agent
from langchain.agents.structured_output import ToolStrategy
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import tool
from pydantic import BaseModel

from guardrail import NotGuardedError, Policy
from langchain_spillguard import ChatSpillguard, SpillguardMiddleware, evidence_of
from tests.scripted import WEATHER_CALL, scripted_guard

WRONG = {"messages": [{"role": "user", "content": "What is the capital of Honduras?"}]}


@pytest.fixture(scope="module")
def chat(real_guard: Any) -> ChatSpillguard:
    return ChatSpillguard(guard=real_guard, max_tokens=16)


def _run(agent: Any, state: dict[str, Any], mode: str) -> dict[str, Any]:
    if mode == "async":
        result: dict[str, Any] = asyncio.run(agent.ainvoke(state))
        return result
    return dict(agent.invoke(state))


@pytest.mark.integration
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_flag_puts_the_verdict_in_the_message_and_the_state(chat: ChatSpillguard, mode: str) -> None:
    agent = create_agent(chat, tools=[], middleware=[SpillguardMiddleware()])
    result = _run(agent, WRONG, mode)
    answer = result["messages"][-1]
    assert isinstance(answer, AIMessage) and "Bahia" in answer.content
    data = answer.response_metadata["spillguard"]
    assert data["action"] == "flag" and data["hallucinated"] is True and data["guard"]["policy"] == "flag"
    assert result["spillguard"] == data


@pytest.mark.integration
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_retry_resamples_the_model_call(chat: ChatSpillguard, mode: str) -> None:
    agent = create_agent(chat, tools=[], middleware=[SpillguardMiddleware(Policy("retry", max_attempts=3))])
    result = _run(agent, WRONG, mode)
    answer = result["messages"][-1]
    attempts = answer.response_metadata["spillguard"]["guard"]["attempts"]
    assert "Bahia" in attempts[0]["answer"] and attempts[0]["decoding"] == "greedy"
    assert len(attempts) >= 2 and all(a["decoding"].startswith("sample(") for a in attempts[1:])
    assert len({a["answer"] for a in attempts}) == len(attempts), "each retry must resample"
    kept = answer.response_metadata["spillguard"]["guard"]["chosen"]
    assert answer.content == attempts[kept]["answer"]
    assert [m.type for m in result["messages"]] == ["human", "ai"]  # one answer in the history, not three


@pytest.mark.integration
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_abstain_replaces_the_answer_and_ends_the_run(chat: ChatSpillguard, mode: str) -> None:
    policy = Policy("abstain", abstain_text="I am not sure.")
    agent = create_agent(chat, tools=[], middleware=[SpillguardMiddleware(policy)])
    result = _run(agent, WRONG, mode)
    assert [m.type for m in result["messages"]] == ["human", "ai"]
    answer = result["messages"][-1]
    assert answer.content == "I am not sure." and answer.tool_calls == []
    assert "Bahia" in result["spillguard"]["answer"] and result["spillguard"]["action"] == "abstain"


def test_string_policies_are_accepted_and_bad_ones_refused() -> None:
    assert SpillguardMiddleware("abstain").policy == Policy("abstain")
    with pytest.raises(ValueError, match="policy"):
        SpillguardMiddleware("ignore")


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_tool_call_turns_pass_unjudged_and_the_answer_after_them_is_judged(mode: str) -> None:
    # Every answer scores above this threshold: only a judged turn can be abstained.
    guard = scripted_guard({"assistant:": WEATHER_CALL, "answer:": "paris ."}, threshold=-1e9)
    agent = create_agent(ChatSpillguard(guard=guard), tools=[get_weather], middleware=[SpillguardMiddleware("abstain")])
    result = _run(agent, {"messages": [{"role": "user", "content": "what is the weather in paris ?"}]}, mode)
    call, observed, answer = result["messages"][1:]
    assert call.tool_calls[0]["name"] == "get_weather" and "guard" not in call.response_metadata["spillguard"]
    assert isinstance(observed, ToolMessage) and observed.content == "sunny in Paris"
    assert answer.content == "I don't know." and answer.response_metadata["spillguard"]["answer"] == "paris ."
    assert result["spillguard"]["action"] == "abstain"


class Capital(BaseModel):
    """The capital city."""

    city: str


CAPITAL_CALL = '<tool_call> {"name": "Capital", "arguments": {"city": "Berlin"}} </tool_call>'


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize(
    ("policy", "threshold", "action"),
    [("flag", 1e9, "allow"), ("flag", -1e9, "flag"), ("retry", -1e9, "flag"), ("abstain", -1e9, "abstain")],
)
def test_a_structured_answer_is_judged(policy: str, threshold: float, action: str, mode: str) -> None:
    """Bug: the structured-output tool call of a ``response_format`` answer passed unjudged, so
    under "abstain" a flagged answer reached the caller as ``structured_response``."""
    guard = scripted_guard({"assistant:": CAPITAL_CALL}, threshold=threshold)
    agent = create_agent(
        ChatSpillguard(guard=guard),
        tools=[],
        response_format=ToolStrategy(Capital),
        middleware=[SpillguardMiddleware(policy)],
    )
    result = _run(agent, {"messages": [{"role": "user", "content": "what is the capital of germany ?"}]}, mode)
    assert result["spillguard"]["action"] == action
    answer = next(m for m in result["messages"] if isinstance(m, AIMessage))
    assert evidence_of(answer).check(answer.text).action.value == action  # sealed, about the text shown
    if action == "abstain":  # no structured answer, no dangling tool message; the run ended
        assert result.get("structured_response") is None and answer.content == guard.policy.abstain_text
        assert not answer.tool_calls and not any(isinstance(m, ToolMessage) for m in result["messages"])
    else:
        assert result["structured_response"] == Capital(city="Berlin") and answer.tool_calls


def test_retry_makes_each_attempt_with_its_step() -> None:
    guard = scripted_guard({"assistant:": "paris ."}, threshold=-1e9)
    middleware = SpillguardMiddleware(Policy("retry", max_attempts=3, seed=5))
    result = create_agent(ChatSpillguard(guard=guard), tools=[], middleware=[middleware]).invoke(
        {"messages": [{"role": "user", "content": "what is the capital of france ?"}]}
    )
    attempts = result["spillguard"]["guard"]["attempts"]
    assert [a["decoding"] for a in attempts] == [
        "greedy",
        "sample(temperature=0.8, seed=7)",
        "sample(temperature=0.8, seed=8)",
    ]
    assert result["spillguard"]["action"] == "flag"  # after_retries="flag"


def test_a_model_other_than_chat_spillguard_is_refused() -> None:
    agent = create_agent(FakeListChatModel(responses=["Tegucigalpa."]), tools=[], middleware=[SpillguardMiddleware()])
    with pytest.raises(NotGuardedError, match="FakeListChatModel"):
        agent.invoke(WRONG)


def test_missing_agents_extra_gives_an_actionable_import_error() -> None:
    code = (
        "import sys; sys.modules['langchain.agents'] = None; import langchain_spillguard; "
        "langchain_spillguard.SpillguardMiddleware"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and 'pip install "spillguard[agents]"' in done.stderr
