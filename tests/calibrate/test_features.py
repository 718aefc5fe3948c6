"""Feature columns: runtime ones match the core's pooling; research normalisations by hand."""

from __future__ import annotations

import numpy as np
import pytest

from guardrail.calibrate.datasets import Item
from guardrail.calibrate.features import Column, grounding_column, runtime_columns
from guardrail.calibrate.runs import Record
from guardrail.calibrate.scoring import Scored
from guardrail.errors import InvalidInputError
from guardrail.localize import Span
from guardrail.scores import TokenScores

# "The capital is Brasília." as tokens: "The", " capital", " is", " Bras", "ília", "."
TEXT = "The capital is Brasília."
OFFSETS = [(0, 3), (3, 11), (11, 14), (14, 19), (19, 23), (23, 24)]
CHOSEN = np.array([5.0, 6.0, 7.0, 8.0, 2.0, 9.0])
NEXT = np.array([10.0, 10.0, 10.0, 9.0, 10.0, 10.0])


def _scored() -> Scored:
    scores = TokenScores(np.arange(6), CHOSEN, np.full(6, 10.0), NEXT, np.linspace(0.1, 0.6, 6))
    record = Record(Item("What is the capital of Brazil?", ("Brasília",)), TEXT, scores)
    return Scored([record], {"heuristic": [Span(3, 5, 14, 23, " Brasília", "heuristic")]}, [OFFSETS])


def test_runtime_columns_are_the_core_pooling() -> None:
    scored = _scored()
    columns = runtime_columns(["heuristic"])
    assert len(columns) == 30 and all(c.runtime for c in columns)
    column = Column("spilled_energy", "min", "heuristic")
    assert column.values(scored)[0] == pytest.approx(min(NEXT[3] - CHOSEN[3], NEXT[4] - CHOSEN[4]))
    # the span's log-likelihood (LM-Polygraph's maximum sequence probability) is a core pooling now
    total = Column("spilled_energy", "sum", "heuristic")
    assert total.runtime and total.values(scored)[0] == pytest.approx((9 - 8) + (10 - 2))


@pytest.mark.parametrize(
    ("pooling", "expected"),
    [
        ("length", 2),
        ("word-min", 9 - 8),  # "ília" continues a word: left out
        ("inner-min", 10 - 2),  # the span without its first token
        ("after", 10 - 9),  # "." after the span
    ],
)
def test_research_poolings(pooling: str, expected: float) -> None:
    column = Column("spilled_energy", pooling, "heuristic")
    assert not column.runtime and column.energy
    assert column.values(_scored())[0] == pytest.approx(expected)


def test_z_pooling_is_relative_to_the_answer() -> None:
    delta = NEXT - CHOSEN
    value = Column("spilled_energy", "z-min", "heuristic").values(_scored())[0]
    assert value == pytest.approx((delta[3:5].min() - delta.mean()) / delta.std())


def test_unknown_columns_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="unknown column"):
        Column("spilled_energy", "median", "heuristic").values(_scored())
    with pytest.raises(InvalidInputError, match="'whole' localizer"):
        Column("logprob", "min", "whole").values(_scored())


def test_the_grounding_column_looks_the_span_up_in_each_prompt() -> None:
    scored = _scored()
    column = grounding_column("heuristic")
    assert column.runtime and not column.energy and column.name == "ungrounded[max]@heuristic"
    assert column.values(scored).tolist() == [1.0]  # a closed-book question does not hold its answer
    item = Item("What is the capital of Brazil?", ("Brasília",), context="Brazil's capital is Brasília.")
    rag = Scored([Record(item, TEXT, scored.records[0].scores)], scored.spans, scored.offsets)
    assert column.values(rag).tolist() == [0.0]
    assert not Column("ungrounded", "min", "heuristic").runtime
    with pytest.raises(InvalidInputError, match="unknown column"):
        Column("ungrounded", "min", "heuristic").values(scored)
