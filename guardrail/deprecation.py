"""Deprecated names kept importable for one release, with a warning that names the new one."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["deprecated_aliases"]


def deprecated_aliases(module: str, aliases: Mapping[str, tuple[str, Any]]) -> Callable[[str], Any]:
    """A module ``__getattr__`` serving ``old name -> (new name, object)`` with a DeprecationWarning."""

    def __getattr__(name: str) -> Any:
        if name in aliases:
            new, value = aliases[name]
            warnings.warn(
                f"{module}.{name} is deprecated and will be removed in the next release; use {new}",
                DeprecationWarning,
                stacklevel=2,
            )
            return value
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__
