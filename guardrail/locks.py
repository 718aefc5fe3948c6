"""One generation at a time per model, for threads and for asyncio tasks.

A capture registers a forward hook on the model for the duration of one ``generate``; any other
forward pass on the same model meanwhile (another thread's generation, a teacher-forced pass)
would reach that hook. :func:`model_lock` serializes every spillguard call into a model; the
capture functions take it, and so must any other code that runs the model while guards may be
capturing. It is not re-entrant: never hold it around a :class:`~guardrail.Guard` call.

Async callers that run a guard in a worker thread take :func:`async_model_lock` first, so that
waiting tasks wait in their event loop instead of holding executor threads.
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
    """The thread lock of ``model`` (one per loaded model, dropped with it)."""
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
