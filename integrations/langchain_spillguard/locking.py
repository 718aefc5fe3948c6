"""Async callers of one model wait in their event loop, not in executor threads.

The core already serializes every generation on a model across threads
(:func:`guardrail.capture.model_lock`). Async callers first take an asyncio lock of their
event loop, so that waiting tasks wait in the loop and never hold executor threads (which would
starve the thread running the model).
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from typing import Any

__all__ = ["Gate", "gate_of"]


class Gate:
    """The per-event-loop asyncio locks of one model."""

    def __init__(self) -> None:
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()
        self._loops_lock = threading.Lock()

    def async_lock(self) -> asyncio.Lock:
        """The asyncio lock of the running event loop."""
        loop = asyncio.get_running_loop()
        with self._loops_lock:
            lock = self._loops.get(loop)
            if lock is None:
                lock = self._loops[loop] = asyncio.Lock()
            return lock


_GATES: weakref.WeakKeyDictionary[Any, Gate] = weakref.WeakKeyDictionary()
_GATES_LOCK = threading.Lock()


def gate_of(model: Any) -> Gate:
    """The gate of ``model`` (created on first use, dropped with the model)."""
    with _GATES_LOCK:
        gate = _GATES.get(model)
        if gate is None:
            gate = _GATES[model] = Gate()
        return gate
