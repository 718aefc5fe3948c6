"""The LangChain adapter's entry in ``spillguard bench --integrations`` (entry-point group ``spillguard.bench``)."""

from __future__ import annotations

from collections.abc import Callable

from guardrail import Guard

__all__ = ["bench_call"]


def bench_call(guard: Guard) -> tuple[str, Callable[[str], object]]:
    """``ChatSpillguard.invoke`` over ``guard``, labelled for the benchmark table."""
    from langchain_spillguard import ChatSpillguard

    return "ChatSpillguard.invoke", ChatSpillguard(guard=guard).invoke
