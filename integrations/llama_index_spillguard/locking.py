"""One generation at a time per model, without starving asyncio's worker threads.

Sync calls take the model's thread lock. Async calls first take an asyncio lock of their event
loop, so that waiting tasks wait in the loop instead of blocking executor threads (a stream
needs a free worker for each of its steps), then the thread lock in the worker.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from typing import Any

__all__ = ["async_model_lock", "model_lock"]

_THREAD_LOCKS: weakref.WeakKeyDictionary[Any, threading.Lock] = weakref.WeakKeyDictionary()
_LOOP_LOCKS: weakref.WeakKeyDictionary[Any, weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock]] = (
    weakref.WeakKeyDictionary()
)
_REGISTRY = threading.Lock()


def model_lock(model: Any) -> threading.Lock:
    """The thread lock of ``model`` (one per loaded model, shared by every LLM wrapping it)."""
    with _REGISTRY:
        return _THREAD_LOCKS.setdefault(model, threading.Lock())


def async_model_lock(model: Any) -> asyncio.Lock:
    """The asyncio lock of ``model`` in the running event loop."""
    loop = asyncio.get_running_loop()
    with _REGISTRY:
        per_loop = _LOOP_LOCKS.setdefault(model, weakref.WeakKeyDictionary())
        lock = per_loop.get(loop)
        if lock is None:
            lock = per_loop[loop] = asyncio.Lock()
        return lock
