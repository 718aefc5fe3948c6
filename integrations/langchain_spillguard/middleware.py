"""``SpillguardMiddleware``: the spillguard gate inside a LangChain 1.x agent (``create_agent``).

>>> from langchain.agents import create_agent
>>> agent = create_agent(ChatSpillguard(), tools=[], middleware=[SpillguardMiddleware("retry")])
>>> agent.invoke({"messages": [{"role": "user", "content": "What is the capital of Honduras?"}]})

It wraps every model call of the agent (``wrap_model_call`` / ``awrap_model_call``) and runs
the core attempt loop (:func:`guardrail.run_attempts`) on it: each attempt calls the model with
its :class:`guardrail.RetryStep` (passed to :class:`ChatSpillguard` as the call argument
:data:`~langchain_spillguard.STEP_KEY`, through the request's ``model_settings``), and the
answer is judged on exactly its text. Per the policy the answer is returned flagged, the
call is retried with resampling, or the answer is replaced by the abstention text, which has no
tool calls and so ends the agent run.

Tool-call turns are not judged: a model message that calls tools is a request for evidence, not
a claim, so it goes on to the tools unchanged (its own verdict stays in its metadata), and the
answer written after the tool results is judged. A retry that comes back as a tool call ends the
attempt loop the same way. A structured answer (``response_format``: a call to the
structured-output tool) is judged like text; abstaining on it drops the structured response and
ends the run. The decision about the last judged answer is also in the agent state under
``"spillguard"``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

try:
    from langchain.agents.middleware import AgentMiddleware, AgentState, ModelRequest, ModelResponse
    from langchain.agents.middleware.types import ExtendedModelResponse, OmitFromInput
    from langgraph.types import Command
except ImportError as exc:  # pragma: no cover - exercised by a subprocess test
    raise ImportError(
        "SpillguardMiddleware needs langchain (agents) and langgraph, which are not installed; "
        'install them with: pip install "spillguard[agents]"'
    ) from exc
from langchain_core.messages import AIMessage, ToolMessage
from typing_extensions import NotRequired

from guardrail import (
    METADATA_KEY,
    Action,
    Decision,
    Judged,
    NotGuardedError,
    Policy,
    RetryStep,
    arun_attempts,
    run_attempts,
)
from guardrail.policy import as_policy
from langchain_spillguard.chat_model import ChatSpillguard
from langchain_spillguard.evidence import STEP_KEY, evidence_of
from langchain_spillguard.runnable import decided_message, judged

__all__ = ["SpillguardMiddleware", "SpillguardState"]


class SpillguardState(AgentState[Any]):
    """The agent state with the decision about the last judged model answer."""

    spillguard: NotRequired[Annotated[dict[str, Any], OmitFromInput]]


class _ToolTurn(Exception):
    """An attempt came back as a tool call: not judged; the loop ends with it."""

    def __init__(self, response: ModelResponse[Any]) -> None:
        super().__init__("tool-call turn")
        self.response = response


class SpillguardMiddleware(AgentMiddleware[SpillguardState, Any, Any]):
    """Judges each answer of a ``ChatSpillguard`` agent model; flags, retries or abstains.

    Args:
        policy: a :class:`guardrail.Policy` or ``"flag"`` (default: the answer is returned with
            the verdict in its metadata and in the state), ``"retry"`` (the model call is made
            again, resampled, up to ``max_attempts`` attempts; the first that passes is kept,
            else the lowest score) or ``"abstain"`` (the answer is replaced by ``abstain_text``
            and the run ends).

    The answer's ``response_metadata["spillguard"]`` holds the final ``action`` and ``text`` and,
    under ``"guard"``, every attempt's answer, score and decoding (as
    :class:`~langchain_spillguard.SpillguardRunnable` does); ``state["spillguard"]`` holds the same.

    Raises:
        NotGuardedError: at run time, when the agent's model is not a ``ChatSpillguard``.
        UnscoredResponseError: when an answer carries no valid evidence for its text.
    """

    state_schema = SpillguardState

    def __init__(self, policy: Policy | str | None = None) -> None:
        super().__init__()
        self.policy = as_policy(policy)
        self.tools = []

    def wrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], ModelResponse[Any]],
    ) -> ModelResponse[Any] | ExtendedModelResponse[Any]:
        """Run the attempt loop over the model call."""
        _check_model(request.model)

        def attempt(step: RetryStep) -> Judged[ModelResponse[Any]]:
            return _judge(handler(_with_step(request, step)), step)

        try:
            return self._finish(run_attempts(self.policy, attempt))
        except _ToolTurn as turn:
            return turn.response

    async def awrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], Awaitable[ModelResponse[Any]]],
    ) -> ModelResponse[Any] | ExtendedModelResponse[Any]:
        """The async twin of :meth:`wrap_model_call`."""
        _check_model(request.model)

        async def attempt(step: RetryStep) -> Judged[ModelResponse[Any]]:
            return _judge(await handler(_with_step(request, step)), step)

        try:
            return self._finish(await arun_attempts(self.policy, attempt))
        except _ToolTurn as turn:
            return turn.response

    def _finish(self, decision: Decision[ModelResponse[Any]]) -> ExtendedModelResponse[Any]:
        """The kept response with the decided message, and the decision in the state.

        A structured answer (``response_format``) keeps its structured-output tool call when it
        is let through or flagged; an abstention drops it, its tool message and the structured
        response, and ends the run (the agent would otherwise ask the model again for one)."""
        response = decision.best.result
        best = _answer(response)
        assert best is not None  # a response without an answer was refused when judged
        final = decided_message(best, decision, self.policy)
        update: dict[str, Any] = {METADATA_KEY: final.response_metadata[METADATA_KEY]}
        structured, kept = response.structured_response, list(response.result)
        if structured is not None:
            calls = {c["id"] for c in best.tool_calls}
            if decision.action is Action.ABSTAIN:
                structured, update["jump_to"] = None, "end"
                kept = [m for m in kept if not (isinstance(m, ToolMessage) and m.tool_call_id in calls)]
            else:  # the message shows the tool call, as the model wrote it; its evidence is about that text
                evidence = evidence_of(final)
                assert evidence is not None
                update[METADATA_KEY] = evidence.updated(text=best.text)
                metadata = {**final.response_metadata, METADATA_KEY: update[METADATA_KEY]}
                final = final.model_copy(
                    update={"content": best.content, "tool_calls": best.tool_calls, "response_metadata": metadata}
                )
        messages = [final if m is best else m for m in kept]
        return ExtendedModelResponse(
            model_response=ModelResponse(result=messages, structured_response=structured),
            command=Command(update=update),
        )


def _check_model(model: object) -> None:
    if not isinstance(model, ChatSpillguard):
        raise NotGuardedError(
            f"SpillguardMiddleware judges answers of a ChatSpillguard model, but the agent's model is "
            f"{type(model).__name__}, which produces no spillguard scores"
        )


def _with_step(request: ModelRequest[Any], step: RetryStep) -> ModelRequest[Any]:
    return request.override(model_settings={**request.model_settings, STEP_KEY: step.to_dict()})


def _answer(response: ModelResponse[Any]) -> AIMessage | None:
    return next((m for m in response.result if isinstance(m, AIMessage)), None)


def _judge(response: ModelResponse[Any], step: RetryStep) -> Judged[ModelResponse[Any]]:
    """The response judged on its answer; a tool-call turn ends the loop unjudged."""
    message = _answer(response)
    if message is not None and message.tool_calls and response.structured_response is None:
        raise _ToolTurn(response)  # a request for evidence; a structured answer is judged like text
    found = judged(message, step)
    return Judged(response, found.answer, found.score, found.threshold, step)
