"""The LlamaIndex adapter's entry in ``spillguard bench --integrations`` (entry-point group ``spillguard.bench``)."""

from __future__ import annotations

from collections.abc import Callable

from guardrail import Guard

__all__ = ["bench_call"]


def bench_call(guard: Guard) -> tuple[str, Callable[[str], object]]:
    """``SpillguardLLM.complete`` over ``guard``, labelled for the benchmark table."""
    from llama_index_spillguard import SpillguardLLM

    return "SpillguardLLM.complete", SpillguardLLM(guard).complete
