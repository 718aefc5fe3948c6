"""Tool calling: tool specs for the chat template, and tool calls parsed from what the model wrote.

Models with a tool-aware chat template (Qwen2.5, Llama-3.1, Hermes-style fine-tunes, ...) are
given the tools through ``apply_chat_template(tools=...)`` and answer a call as text; this module
reads the calls back:

- ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` blocks (Hermes, Qwen);
- ``<|python_tag|>`` followed by a JSON call (Llama-3.1);
- an answer that is, as a whole, one JSON call or a JSON list of calls (``"arguments"`` or
  ``"parameters"``).

The answer text is still what the model wrote and what the verdict scores; a host turns the
calls into its own tool-call objects. Nothing is executed here.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from guardrail.errors import InvalidInputError
from guardrail.verdict import Evidence

__all__ = [
    "ToolCall",
    "check_tools",
    "choose_tools",
    "parse_tool_calls",
    "template_supports_tools",
    "with_tool_calls",
]

_TAGGED = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)
_PYTHON_TAG = "<|python_tag|>"
_REQUIRED = ("any", "required")


@dataclass(frozen=True)
class ToolCall:
    """One call the model asked for.

    Attributes:
        name: the tool's name.
        arguments: its arguments (a JSON object).
        id: a call id (generated when the model gives none).
    """

    name: str
    arguments: Mapping[str, Any]
    id: str = field(default_factory=lambda: f"call_{uuid.uuid4().hex[:24]}")

    def to_template(self) -> dict[str, Any]:
        """The call as chat templates expect it in an assistant message's ``tool_calls``."""
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": dict(self.arguments)}}

    @classmethod
    def from_template(cls, item: object) -> ToolCall:
        """The inverse of :meth:`to_template` (arguments may also be JSON text, as some hosts store them).

        Raises:
            InvalidInputError: ``item`` is not a function call with a name and JSON-object arguments.
        """
        function = item.get("function") if isinstance(item, Mapping) else None
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
            raise InvalidInputError(
                f"a tool call must be {{'function': {{'name': ..., 'arguments': ...}}}}, got {item!r}"
            )
        arguments = function.get("arguments", {})
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except (json.JSONDecodeError, RecursionError) as exc:
                raise InvalidInputError(f"the arguments of tool call {item!r} are not JSON: {exc}") from None
        if not isinstance(arguments, Mapping):
            raise InvalidInputError(f"the arguments of tool call {item!r} must be a JSON object")
        call_id = item.get("id") if isinstance(item, Mapping) else None
        extra = {"id": call_id} if isinstance(call_id, str) and call_id else {}
        return cls(function["name"], dict(arguments), **extra)

    def to_dict(self) -> dict[str, Any]:
        """``{"name", "arguments", "id"}``, as listed under a verdict's ``tool_calls``."""
        return {"name": self.name, "arguments": dict(self.arguments), "id": self.id}


def template_supports_tools(tokenizer: Any) -> bool:
    """Whether the tokenizer's chat template renders a ``tools`` list."""
    template = getattr(tokenizer, "chat_template", None)
    return isinstance(template, str) and "tools" in template


def check_tools(tools: object) -> list[dict[str, Any]]:
    """Tool specs as chat templates take them: OpenAI-style ``{"type": "function", "function":
    {"name", "description", "parameters"}}`` dicts (a bare ``{"name", ...}`` is wrapped)."""
    if not isinstance(tools, Sequence) or isinstance(tools, (str, bytes)):
        raise InvalidInputError(f"`tools` must be a list of tool specs, got {type(tools).__name__}: {tools!r}")
    specs: list[dict[str, Any]] = []
    for i, tool in enumerate(tools):
        spec: dict[str, Any] = dict(tool) if isinstance(tool, Mapping) else {}
        if "function" not in spec and isinstance(spec.get("name"), str):
            spec = {"type": "function", "function": spec}
        function = spec.get("function")
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str) or not function["name"]:
            raise InvalidInputError(f"tool {i} must be a function spec with a `name`, got {tool!r}")
        specs.append(spec)
    return specs


def choose_tools(tools: Sequence[Mapping[str, Any]], tool_choice: object) -> list[dict[str, Any]]:
    """The tools to render under ``tool_choice`` (``None``/``"auto"``/``"any"``/``"required"``/
    ``True``: all; ``"none"``: none; a name or ``{"function": {"name"}}``: that tool)."""
    specs = check_tools(tools)
    names = [spec["function"]["name"] for spec in specs]
    if tool_choice is None or tool_choice is True or tool_choice in ("auto", *_REQUIRED):
        return specs
    if tool_choice == "none":
        return []
    name = tool_choice
    if isinstance(tool_choice, Mapping):
        function = tool_choice.get("function")
        name = function.get("name") if isinstance(function, Mapping) else tool_choice.get("name")
    if isinstance(name, str) and name in names:
        return [spec for spec in specs if spec["function"]["name"] == name]
    raise InvalidInputError(
        f"`tool_choice` must be 'auto', 'none', 'any', 'required' or one of the bound tools {names}, "
        f"got {tool_choice!r}"
    )


def with_tool_calls(evidence: Mapping[str, Any], text: str, calls: Sequence[ToolCall]) -> dict[str, Any]:
    """Sealed verdict metadata (:meth:`guardrail.Verdict.to_dict`) for a message that shows
    ``text`` and carries ``calls``: resealed with that text and the calls listed under
    ``tool_calls``; the scores still judge the whole answer the model wrote."""
    return Evidence.from_dict(evidence).updated(text=text, tool_calls=[c.to_dict() for c in calls])


def parse_tool_calls(text: str) -> tuple[str, list[ToolCall]]:
    """Split an answer into its free text and the tool calls it contains (``[]`` for none).

    Malformed call markup is left in the text: it is never silently turned into a call.
    """
    calls: list[ToolCall] = []
    kept = text
    tagged = _TAGGED.findall(text)
    if tagged:
        parsed = [_calls(chunk) for chunk in tagged]
        if all(p is not None for p in parsed):
            calls = [c for p in parsed if p is not None for c in p]
            kept = _TAGGED.sub("", text)
    elif _PYTHON_TAG in text:
        head, _, tail = text.partition(_PYTHON_TAG)
        found = _calls(tail.strip())
        if found is not None:
            calls, kept = found, head
    else:
        found = _calls(text.strip())
        if found is not None:
            calls, kept = found, ""
    return kept.strip(), calls


def _calls(chunk: str) -> list[ToolCall] | None:
    """The call(s) of one JSON chunk, or ``None`` when it is not exactly call-shaped JSON."""
    if not chunk.startswith(("{", "[")):
        return None
    try:
        value = json.loads(chunk)
    except (json.JSONDecodeError, RecursionError):
        return None
    items = value if isinstance(value, list) else [value]
    calls = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            return None
        arguments = item.get("arguments", item.get("parameters", {}))
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except (json.JSONDecodeError, RecursionError):
                return None
        if not isinstance(arguments, dict):
            return None
        extra = {"id": item["id"]} if isinstance(item.get("id"), str) else {}
        calls.append(ToolCall(item["name"], arguments, **extra))
    return calls or None
