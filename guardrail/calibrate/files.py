"""Files the toolkit reads and writes: private cache folders, safe names, bounded reads.

Cached generations and fetched data are the user's own: folders are created ``0700`` and files
``0600``. Names that come from outside (a model or dataset name) become one safe path component,
so ``"../../x"`` never leaves the cache. Whatever is read from a user's file is bounded (line
length, file size, JSON nesting), so a huge line or a deeply nested row is a clear error, not a
crash.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from guardrail.errors import DatasetError, InvalidInputError

__all__ = [
    "MAX_JSON_DEPTH",
    "MAX_LINE_BYTES",
    "private_dir",
    "private_file",
    "read_json_bounded",
    "read_lines",
    "safe_component",
    "within",
]

MAX_LINE_BYTES = 1 << 20  # one JSONL row: 1 MiB
MAX_FILE_BYTES = 1 << 30  # one dataset file: 1 GiB
MAX_JSON_DEPTH = 32
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def safe_component(name: str, *, fallback: str = "data", limit: int = 120) -> str:
    """``name`` as one path component: only ``[A-Za-z0-9._+-]``, no leading dot, not empty.

    >>> safe_component("../../x")
    '_.._x'
    """
    cleaned = _UNSAFE.sub("_", name).lstrip(".")[:limit]
    return cleaned or fallback


def within(root: Path, path: Path) -> Path:
    """``path`` if it lies inside ``root`` (after resolving), else :class:`DatasetError`."""
    resolved, base = path.resolve(), root.resolve()
    if resolved != base and base not in resolved.parents:
        raise DatasetError(f"refusing to write {str(path)!r}: it is outside the cache {str(root)!r}")
    return path


def private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) as ``0700`` folders; tighten it if it exists."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for folder in reversed(missing):
        folder.mkdir(mode=0o700, exist_ok=True)
        os.chmod(folder, 0o700)
    os.chmod(path, 0o700)
    return path


def private_file(path: Path, mode: str = "a") -> IO[Any]:
    """Open ``path`` for writing as a ``0600`` file: ``"a"``/``"w"`` text (UTF-8), ``"wb"`` bytes."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if mode.startswith("a") else os.O_TRUNC)
    fd = os.open(path, flags, 0o600)
    os.chmod(path, 0o600)
    return os.fdopen(fd, mode) if "b" in mode else os.fdopen(fd, mode, encoding="utf-8")


def read_lines(path: Path, *, max_line: int = MAX_LINE_BYTES, max_file: int = MAX_FILE_BYTES) -> Iterator[str]:
    """The lines of a UTF-8 text file, each at most ``max_line`` bytes; only regular files.

    Raises :class:`InvalidInputError` naming the line for a longer line or invalid UTF-8, and
    :class:`DatasetError` for a file larger than ``max_file`` or something that is not a regular
    file (a FIFO, a device).
    """
    try:
        if not path.is_file():
            raise DatasetError(f"cannot read dataset file {str(path)!r}: not a regular file")
        if path.stat().st_size > max_file:
            raise DatasetError(f"cannot read dataset file {str(path)!r}: larger than {max_file} bytes")
        with path.open("rb") as handle:
            number = 0
            while raw := handle.readline(max_line + 1):
                number += 1
                if len(raw.rstrip(b"\r\n")) > max_line:
                    raise InvalidInputError(f"{path.name} line {number} is longer than {max_line} bytes")
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise InvalidInputError(f"{path.name} line {number} is not UTF-8: {exc.reason}") from None
                yield text.rstrip("\r\n")
    except OSError as exc:
        raise DatasetError(f"cannot read dataset file {str(path)!r}: {exc}") from exc


def read_json_bounded(text: str, where: str, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads(text)``, refusing nesting deeper than ``max_depth`` (before it recurses)."""
    nesting = depth = 0
    in_string = escaped = False
    for char in text:  # a cheap pre-scan: json.loads recurses once per level
        if in_string:
            escaped, in_string = (False, True) if escaped else (char == "\\", char != '"')
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            nesting = max(nesting, depth)
            if nesting > max_depth:
                raise InvalidInputError(f"{where} is nested deeper than {max_depth} levels")
        elif char in "]}":
            depth -= 1
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, or an integer too long to convert
        raise InvalidInputError(f"{where} is not JSON ({exc}): {text[:80]!r}") from None
    return value
