"""LangChain messages to the chat-template dicts the core takes, and tool calls back.

System, human, AI and ``ChatMessage`` messages become ``{"role", "content"}``; an ``AIMessage``
with ``tool_calls`` becomes an assistant message with OpenAI-style ``tool_calls``, and a
``ToolMessage`` a ``tool`` message with its ``tool_call_id`` (and ``name``). The core refuses
tool messages, with the reason, when the model's chat template renders no tools.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.messages.tool import ToolCall as LCToolCall
from langchain_core.messages.tool import tool_call

from guardrail.errors import InvalidInputError
from guardrail.tools import ToolCall

__all__ = ["to_chat_dicts", "to_lc_tool_calls"]

_ROLES: tuple[tuple[type[BaseMessage], str], ...] = (
    (SystemMessage, "system"),
    (HumanMessage, "user"),
    (AIMessage, "assistant"),
    (ToolMessage, "tool"),
)


def to_chat_dicts(messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
    """Convert LangChain messages to chat-template dicts.

    Raises:
        InvalidInputError: for function messages or non-text content blocks, which a local
            text model cannot take.
    """
    if not messages:
        raise InvalidInputError(f"`messages` must be a non-empty list of messages, got {messages!r}")
    return [_dict(i, m) for i, m in enumerate(messages)]


def to_lc_tool_calls(calls: Sequence[ToolCall]) -> list[LCToolCall]:
    """Core tool calls as LangChain ``tool_calls`` entries."""
    return [tool_call(name=c.name, args=dict(c.arguments), id=c.id) for c in calls]


def _dict(index: int, message: BaseMessage) -> dict[str, Any]:
    out: dict[str, Any] = {"role": _role(index, message), "content": _text(index, message)}
    if isinstance(message, AIMessage) and message.tool_calls:
        out["tool_calls"] = [_call(c).to_template() for c in message.tool_calls]
    if isinstance(message, ToolMessage):
        out["tool_call_id"] = message.tool_call_id
        if message.name:
            out["name"] = message.name
    return out


def _call(call: LCToolCall) -> ToolCall:
    call_id = call.get("id")
    return ToolCall(call["name"], call["args"], id=call_id) if call_id else ToolCall(call["name"], call["args"])


def _role(index: int, message: BaseMessage) -> str:
    if isinstance(message, ChatMessage):
        return message.role
    for kind, role in _ROLES:
        if isinstance(message, kind):
            return role
    raise InvalidInputError(
        f"message {index} is a {type(message).__name__}; ChatSpillguard takes system, human, AI, tool and chat messages"
    )


def _text(index: int, message: BaseMessage) -> str:
    content = message.content
    if isinstance(content, str):
        return content
    for block in content:
        if not (isinstance(block, str) or (isinstance(block, dict) and block.get("type") in ("text", "tool_call"))):
            raise InvalidInputError(
                f"message {index} has a non-text content block {block!r}; ChatSpillguard takes text only"
            )
    return message.text
