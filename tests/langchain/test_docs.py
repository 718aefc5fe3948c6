"""Every Python snippet of docs/langchain.md runs, in order, on the bundled model, and every
value a snippet line shows in its comment (``expr  # 1.09``, ``expr  # 'Paris'``) is what the
expression gives now (numbers to the digits shown)."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("langchain.agents")

pytestmark = pytest.mark.integration

DOC = Path(__file__).resolve().parents[2] / "docs" / "langchain.md"
_LITERAL = re.compile(r"""#\s*('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?|True|False)(?:\s|$|:)""")


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL)


def _shown(line: str) -> str | None:
    """The literal a line's comment shows as the expression's value, if any."""
    found = _LITERAL.search(line)
    return found.group(1) if found else None


def _check(value: Any, shown: str, source: str) -> None:
    expected = ast.literal_eval(shown)
    if isinstance(expected, float):
        digits = len(shown.split(".")[1])
        assert round(float(value), digits) == expected, f"{source} gives {value}, the doc shows {shown}"
    else:
        assert value == expected, f"{source} gives {value!r}, the doc shows {shown}"


def test_every_snippet_runs_and_shows_what_it_gives(real_guard: Any) -> None:
    namespace: dict[str, Any] = {"__name__": "docs_langchain"}
    checked = 0
    for block in _blocks():
        lines = block.splitlines()
        for statement in ast.parse(block).body:
            source = ast.get_source_segment(block, statement) or ""
            shown = _shown(lines[statement.end_lineno - 1]) if isinstance(statement, ast.Expr) else None
            if shown is None:
                exec(compile(ast.Module([statement], []), str(DOC), "exec"), namespace)
                continue
            value = eval(compile(ast.Expression(statement.value), str(DOC), "eval"), namespace)
            _check(value, shown, source)
            checked += 1
    assert len(_blocks()) >= 8 and checked >= 12


def test_the_documented_numbers_are_the_shipped_calibration(real_guard: Any) -> None:
    """Prose numbers next to the snippets (the threshold) are the shipped calibration's."""
    text = DOC.read_text()
    assert f"threshold={real_guard.calibration.threshold:.2f}" in text
    assert f"threshold ({real_guard.calibration.threshold:.2f})" in text
    assert "9.73" not in text and "threshold 1.0" not in text
