"""LangChain's standard unit tests for ``ChatSpillguard`` (no model is loaded: it loads lazily)."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("langchain_tests")

from langchain_tests.unit_tests import ChatModelUnitTests

from langchain_spillguard import ChatSpillguard


class TestChatSpillguardStandard(ChatModelUnitTests):
    """Tool calling, structured output and multimodal inputs are not supported: the suite's
    own properties (``has_tool_calling`` etc.) detect that from the class and skip them."""

    @property
    def chat_model_class(self) -> type[ChatSpillguard]:
        return ChatSpillguard

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"model": "SmolLM2-135M-Instruct"}

    @property
    def standard_chat_model_params(self) -> dict[str, Any]:
        """The standard parameters but ``api_key``: a local model has no API and refuses unknown fields."""
        return {k: v for k, v in super().standard_chat_model_params.items() if k != "api_key"}
