"""LangChain messages to the ``{"role", "content"}`` dicts a chat template takes."""

from __future__ import annotations

from collections.abc import Sequence

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
)

from guardrail.errors import InvalidInputError

__all__ = ["to_chat_dicts"]

_ROLES: tuple[tuple[type[BaseMessage], str], ...] = (
    (SystemMessage, "system"),
    (HumanMessage, "user"),
    (AIMessage, "assistant"),
)


def to_chat_dicts(messages: Sequence[BaseMessage]) -> list[dict[str, str]]:
    """Convert text-only LangChain messages to chat-template dicts.

    Raises:
        InvalidInputError: for tool/function messages or non-text content blocks, which a
            local text model cannot take.
    """
    if not messages:
        raise InvalidInputError(f"`messages` must be a non-empty list of messages, got {messages!r}")
    return [{"role": _role(i, m), "content": _text(i, m)} for i, m in enumerate(messages)]


def _role(index: int, message: BaseMessage) -> str:
    if isinstance(message, ChatMessage):
        return message.role
    for kind, role in _ROLES:
        if isinstance(message, kind):
            return role
    raise InvalidInputError(
        f"message {index} is a {type(message).__name__}; ChatSpillguard takes system, human, "
        "AI and chat messages only (no tool calling)"
    )


def _text(index: int, message: BaseMessage) -> str:
    content = message.content
    if isinstance(content, str):
        return content
    for block in content:
        if not (isinstance(block, str) or (isinstance(block, dict) and block.get("type") == "text")):
            raise InvalidInputError(
                f"message {index} has a non-text content block {block!r}; ChatSpillguard takes text only"
            )
    return message.text
