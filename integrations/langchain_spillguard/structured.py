"""Tool binding and structured output for ``ChatSpillguard``, the LangChain way.

- ``bind_tools``: tools become OpenAI-style specs that the model's chat template renders
  (``Guard.ask(tools=...)``); the answer's tool-call markup is parsed back into
  ``AIMessage.tool_calls`` (:func:`guardrail.tools.parse_tool_calls`). A local model is not
  constrained: ``tool_choice`` chooses which tools are rendered (``"none"``: none; a name: that
  one), and the model may still answer in text.
- ``with_structured_output``: ``method="json_schema"`` (the default) and ``"json_mode"`` ask
  for JSON in a system instruction and parse the answer (pydantic-validated for a pydantic
  schema); ``"function_calling"`` binds the schema as the one tool, which needs a tool-aware
  template. The JSON is parsed, not enforced while decoding: a reply that does not parse raises
  LangChain's ``OutputParserException`` (``include_raw=True`` returns it as ``parsing_error``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from operator import itemgetter
from typing import Any, cast

from langchain_core.language_models import LanguageModelInput
from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from langchain_core.output_parsers.openai_tools import JsonOutputKeyToolsParser, PydanticToolsParser
from langchain_core.runnables import Runnable, RunnableMap, RunnablePassthrough
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_json_schema, convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass

from guardrail.errors import InvalidInputError
from guardrail.tools import check_tools

__all__ = ["METHODS", "format_tools", "json_instruction", "structured_output"]

METHODS = ("json_schema", "json_mode", "function_calling")
ToolLike = Mapping[str, Any] | type | Callable[..., Any] | BaseTool


def format_tools(tools: Sequence[ToolLike]) -> list[dict[str, Any]]:
    """LangChain tools (``BaseTool``, functions, pydantic models, dicts) as OpenAI tool specs."""
    given: object = tools
    if isinstance(given, (str, bytes)) or not isinstance(given, Sequence):
        raise InvalidInputError(f"`tools` must be a list of tools, got {type(tools).__name__}: {tools!r}")
    try:
        specs = [convert_to_openai_tool(t) for t in tools]
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"`tools` holds something that is not a tool: {exc}") from exc
    return check_tools(specs)


def json_instruction(response_format: object) -> str:
    """The system instruction of a ``response_format`` (``{"type": "json_object"}`` or
    ``{"type": "json_schema", "json_schema": {"schema": ...}}``)."""
    kind = response_format.get("type") if isinstance(response_format, Mapping) else None
    if kind == "json_object":
        return "Reply with a single JSON object and nothing else."
    if kind == "json_schema" and isinstance(response_format, Mapping):
        schema = response_format.get("json_schema", {}).get("schema")
        if isinstance(schema, Mapping):
            text = json.dumps(schema, ensure_ascii=False)
            return f"Reply with a single JSON object that conforms to this JSON schema, and nothing else:\n{text}"
    raise InvalidInputError(
        "`response_format` must be {'type': 'json_object'} or "
        f"{{'type': 'json_schema', 'json_schema': {{'schema': {{...}}}}}}, got {response_format!r}"
    )


def structured_output(
    chat: Any, schema: Mapping[str, Any] | type, *, method: str, include_raw: bool, strict: bool | None
) -> Runnable[LanguageModelInput, Any]:
    """``chat.with_structured_output(...)``: the bound model, then a parser of its answer."""
    if method not in METHODS:
        raise InvalidInputError(f"`method` must be one of {METHODS}, got {method!r}")
    if strict is not None and not isinstance(strict, bool):
        raise InvalidInputError(f"`strict` must be a bool or None, got {strict!r}")
    pydantic = isinstance(schema, type) and is_basemodel_subclass(schema)
    traced = {"kwargs": {"method": method, "strict": strict}, "schema": schema}
    parser: Runnable[Any, Any]
    if method == "function_calling":
        name = convert_to_openai_tool(schema)["function"]["name"]
        model = chat.bind_tools([schema], tool_choice=name, ls_structured_output_format=traced)
        parser = (
            PydanticToolsParser(tools=[schema], first_tool_only=True)
            if pydantic
            else JsonOutputKeyToolsParser(key_name=name, first_tool_only=True)
        )
    else:
        response_format: dict[str, Any] = {"type": "json_object"}
        if method == "json_schema":
            response_format = {"type": "json_schema", "json_schema": {"schema": convert_to_json_schema(_plain(schema))}}
        model = chat.bind(response_format=response_format, ls_structured_output_format=traced)
        parser = PydanticOutputParser(pydantic_object=schema) if pydantic else JsonOutputParser()
    if not include_raw:
        return cast("Runnable[LanguageModelInput, Any]", model | parser)
    parsed = RunnablePassthrough.assign(parsed=itemgetter("raw") | parser, parsing_error=lambda _: None)
    failed = RunnablePassthrough.assign(parsed=lambda _: None)
    return RunnableMap(raw=model) | parsed.with_fallbacks([failed], exception_key="parsing_error")


def _plain(schema: Mapping[str, Any] | type) -> dict[str, Any] | type:
    return dict(schema) if isinstance(schema, Mapping) else schema
