"""LlamaIndex chat messages and tools to what the core's chat template takes, and tool calls back.

- Messages become ``{"role", "content"}`` dicts; an assistant message whose
  ``additional_kwargs["tool_calls"]`` holds calls (as :func:`tool_call_kwargs` writes them)
  keeps them as OpenAI-style ``tool_calls``, and a ``tool`` message keeps its ``tool_call_id``
  (and ``name``), as LlamaIndex's ``FunctionAgent`` writes them. The core refuses tool
  messages, with the reason, when the model's chat template renders no tools.
- Tools (:class:`~llama_index.core.tools.BaseTool`, or OpenAI-style dicts) become the specs the
  template renders (``tool.metadata.to_openai_tool()``).
- Tool calls parsed from the model's text (:func:`guardrail.tools.parse_tool_calls`) go into
  ``additional_kwargs["tool_calls"]`` and come back as LlamaIndex ``ToolSelection``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.llms.llm import ToolSelection
from llama_index.core.tools import BaseTool

from guardrail import InvalidInputError
from guardrail.tools import ToolCall, check_tools

__all__ = ["TOOL_CALLS_KEY", "to_chat_dicts", "tool_call_kwargs", "tool_selections", "tool_specs"]

TOOL_CALLS_KEY = "tool_calls"
"""The ``additional_kwargs`` key of an assistant message's tool calls."""

_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant", "tool": "tool"}


def to_chat_dicts(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    """Chat-template dicts of ``messages`` (text content only).

    Raises:
        InvalidInputError: no messages, something that is not a ``ChatMessage``, or a role a
            chat template does not take (``function``, ``chatbot``, ...).
    """
    given: object = messages
    if not isinstance(given, Sequence) or isinstance(given, str) or not given:
        raise InvalidInputError(f"`messages` must be a non-empty list of ChatMessage, got {messages!r}")
    return [_dict(i, m) for i, m in enumerate(messages)]


def tool_specs(tools: Sequence[BaseTool | Mapping[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI-style tool specs (``{"type": "function", "function": {...}}``) of LlamaIndex tools."""
    given: object = tools
    if not isinstance(given, Sequence) or isinstance(given, str):
        raise InvalidInputError(f"`tools` must be a list of tools, got {type(tools).__name__}: {tools!r}")
    return check_tools([t.metadata.to_openai_tool() if isinstance(t, BaseTool) else t for t in tools])


def tool_call_kwargs(calls: Sequence[ToolCall]) -> dict[str, Any]:
    """The ``additional_kwargs`` entry of an assistant message holding ``calls`` (``{}`` for none)."""
    return {TOOL_CALLS_KEY: [c.to_template() for c in calls]} if calls else {}


def tool_selections(message: ChatMessage) -> list[ToolSelection]:
    """The tool calls of an assistant message, as LlamaIndex ``ToolSelection``."""
    return [ToolSelection(tool_id=c.id, tool_name=c.name, tool_kwargs=dict(c.arguments)) for c in _calls_of(message)]


def _dict(index: int, message: ChatMessage) -> dict[str, Any]:
    if not isinstance(message, ChatMessage):
        raise InvalidInputError(f"message {index} must be a ChatMessage, got {type(message).__name__}: {message!r}")
    value = getattr(message.role, "value", message.role)
    role = _ROLES.get(str(value))
    if role is None:
        raise InvalidInputError(
            f"message {index} has the role {value!r}; SpillguardLLM takes system, user, assistant and tool messages"
        )
    out: dict[str, Any] = {"role": role, "content": message.content or ""}
    calls = _calls_of(message) if role == "assistant" else []
    if calls:
        out["tool_calls"] = [c.to_template() for c in calls]
    if role == "tool":
        extra = message.additional_kwargs
        if isinstance(extra.get("tool_call_id"), str):
            out["tool_call_id"] = extra["tool_call_id"]
        if isinstance(extra.get("name"), str):
            out["name"] = extra["name"]
    return out


def _calls_of(message: ChatMessage) -> list[ToolCall]:
    """The calls stored under ``additional_kwargs["tool_calls"]`` (template form)."""
    stored = message.additional_kwargs.get(TOOL_CALLS_KEY) or []
    return [ToolCall.from_template(item) for item in (stored if isinstance(stored, list) else [])]
