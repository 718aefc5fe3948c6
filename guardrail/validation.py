"""Argument checks shared by the guard, its values and the adapters.

Each check returns the value it accepts and raises :class:`~guardrail.errors.InvalidInputError`
naming the argument and showing the bad value; nothing non-finite or of the wrong type passes.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

from guardrail.errors import InvalidInputError

__all__ = ["at_or_below", "check_bool", "check_finite", "check_int", "check_str", "check_text", "finite_or_none"]


def check_bool(name: str, value: object) -> bool:
    """A ``bool`` (not an int standing for one)."""
    if not isinstance(value, bool):
        raise InvalidInputError(f"`{name}` must be a bool, got {type(value).__name__}: {value!r}")
    return value


def check_str(name: str, value: object) -> str:
    """A ``str`` (any, empty included)."""
    if not isinstance(value, str):
        raise InvalidInputError(f"`{name}` must be a str, got {type(value).__name__}: {value!r}")
    return value


def check_text(name: str, value: object) -> str:
    """A ``str`` with a non-space character that encodes as UTF-8 (no lone surrogates)."""
    value = check_str(name, value)
    if not value.strip():
        raise InvalidInputError(f"`{name}` must contain a non-space character, got {value!r}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInputError(
            f"`{name}` is not valid text: {exc.reason} at character {exc.start} ({value[exc.start : exc.end]!r})"
        ) from None
    return value


def check_int(name: str, value: object, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """An ``int`` (not a ``bool``) within ``[minimum, maximum]``."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise InvalidInputError(f"`{name}` must be an int, got {type(value).__name__}: {value!r}")
    number = int(value)
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        bounds = (
            f">= {minimum}"
            if maximum is None
            else f"in [{minimum}, {maximum}]"
            if minimum is not None
            else f"<= {maximum}"
        )
        raise InvalidInputError(f"`{name}` must be an int {bounds}, got {value!r}")
    return number


def check_finite(name: str, value: object, *, positive: bool = False) -> float:
    """A finite real number (``> 0`` when ``positive``); NaN and ±inf never pass."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise InvalidInputError(f"`{name}` must be a number, got {type(value).__name__}: {value!r}")
    number = float(value)
    if not math.isfinite(number) or (positive and not number > 0):
        raise InvalidInputError(f"`{name}` must be a finite{' positive' if positive else ''} number, got {value!r}")
    return number


def at_or_below(score: float, threshold: float) -> bool:
    """Whether ``score`` passes ``threshold``: both finite and ``score <= threshold``.

    The one comparison every allow goes through: NaN, ``+inf`` and ``-inf`` never pass, on either
    side (a ``-inf`` score is as unusable as a NaN one).
    """
    return math.isfinite(score) and math.isfinite(threshold) and score <= threshold


def finite_or_none(value: float) -> float | None:
    """``value`` for JSON, or ``None`` when it is NaN or infinite."""
    return float(value) if math.isfinite(value) else None
