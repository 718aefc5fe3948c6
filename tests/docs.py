"""Run the Python snippets of a Markdown page in order and check the values their comments show.

A snippet line ``expr  # 1.09`` or ``expr  # 'Paris'`` states the expression's value; the
runner evaluates it and compares (numbers to the digits shown). Every other statement is
executed, in one namespace shared by all the page's blocks. A block right after the line
``<!-- snippet not run: REASON -->`` is skipped (it needs something only the reader has, such as
their own model folder).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

__all__ = ["python_blocks", "run_snippets"]

_BLOCK = re.compile(r"(<!-- snippet not run: [^>]+ -->\n)?```python\n(.*?)```", flags=re.DOTALL)
_LITERAL = re.compile(r"""#\s*('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?|True|False)(?:\s|$|:)""")


def python_blocks(doc: Path) -> list[str]:
    """The page's fenced ```python blocks to run, in order."""
    found = _BLOCK.findall(doc.read_text(encoding="utf-8"))
    return [block for skipped, block in found if not skipped]


def run_snippets(doc: Path, namespace: dict[str, Any]) -> int:
    """Execute every block of ``doc`` in ``namespace``; returns how many shown values were checked."""
    checked = 0
    for block in python_blocks(doc):
        lines = block.splitlines()
        for statement in ast.parse(block).body:
            source = ast.get_source_segment(block, statement) or ""
            shown = _shown(lines[statement.end_lineno - 1]) if isinstance(statement, ast.Expr) else None
            if shown is None:
                exec(compile(ast.Module([statement], []), str(doc), "exec"), namespace)
                continue
            value = eval(compile(ast.Expression(statement.value), str(doc), "eval"), namespace)
            _check(value, shown, source)
            checked += 1
    return checked


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
