"""LangChain test configuration: the standard suites' async tests run under pytest-asyncio.

``langchain_tests`` writes its async tests without markers (partner packages run them with
``asyncio_mode = "auto"``); this marks the coroutine tests collected in this folder instead of
changing the mode for the whole suite.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: Any) -> None:
    if inspect.iscoroutinefunction(obj) and not any(m.name == "asyncio" for m in getattr(obj, "pytestmark", [])):
        pytest.mark.asyncio(obj)
