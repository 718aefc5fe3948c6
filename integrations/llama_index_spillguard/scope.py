"""Query scopes: which guarded LLM calls belong to which query attempt, and how they generate.

A :class:`SpillguardQueryEngine` opens a scope around each attempt at answering a query; every
:class:`SpillguardLLM` call made inside it (in the same thread, or in asyncio tasks and
``asyncio.to_thread`` workers started from it, which copy the context) records its verdict
there. The scope lives in a :class:`contextvars.ContextVar`, so concurrent queries, in threads
or in asyncio tasks, never see each other's verdicts.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TypeVar

from guardrail import RetryStep, Verdict
from guardrail.validation import finite_or_none

__all__ = ["CallRecord", "QueryScope", "aiterate_in", "current_scope", "iterate_in", "query_scope"]

T = TypeVar("T")


@dataclass(frozen=True)
class CallRecord:
    """One guarded LLM call made while answering a query.

    Attributes:
        index: 0-based order of the call within its scope.
        kind: the LLM method: ``"complete"``, ``"chat"``, ``"stream_complete"``, ...
        verdict: the guard's verdict on the call's answer.
    """

    index: int
    kind: str
    verdict: Verdict

    def summary(self) -> dict[str, Any]:
        """JSON-ready: the call's answer, score, threshold and action."""
        v = self.verdict
        return {
            "index": self.index,
            "kind": self.kind,
            "answer": v.answer,
            "action": v.action.value,
            "hallucinated": v.hallucinated,
            "score": finite_or_none(v.score),
            "threshold": v.threshold,
            "span": v.span.text,
        }


@dataclass(eq=False)
class QueryScope:
    """Collects the verdicts of the guarded LLM calls made for one query attempt.

    Attributes:
        query: the user's query: the LLM localizes the answer against it (words copied from
            the query are not the answer; words copied from the retrieved context are).
        step: the attempt the calls make (a retry's sampling and feedback turn, see
            :class:`guardrail.RetryStep`).
        grounded: the calls answer from retrieved passages, so the LLM scores them with its
            calibration plus the grounding feature (:meth:`guardrail.Calibration.with_grounding`)
            where it applies (:attr:`guardrail.Calibration.can_ground`).
        parent: the enclosing scope, which also receives every record.
        written: text the model wrote before this query (a chat engine's earlier replies):
            it grounds nothing (:meth:`sources`).
        id: a unique id, also put in each response's ``additional_kwargs``.
    """

    query: str
    step: RetryStep = field(default_factory=RetryStep)
    grounded: bool = False
    parent: QueryScope | None = None
    written: tuple[str, ...] = ()
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    _records: list[CallRecord] = field(default_factory=list, repr=False)
    _sources: list[str] = field(default_factory=list, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, kind: str, verdict: Verdict) -> CallRecord:
        """Store the verdict of one call (and forward it to the parent scope)."""
        with self._lock:
            entry = CallRecord(len(self._records), kind, verdict)
            self._records.append(entry)
        if self.parent is not None:
            self.parent.record(kind, verdict)
        return entry

    @property
    def records(self) -> tuple[CallRecord, ...]:
        """The calls recorded so far, in order."""
        with self._lock:
            return tuple(self._records)

    def sources(self, prompt: str) -> str:
        """What a grounded call's span is looked up in, for ``prompt`` (the text of the call's
        system, user and tool turns).

        Text the model wrote grounds an answer only through what grounded it: ``prompt`` loses
        the conversation's earlier replies (:attr:`written`, which a condensing chat mode renders
        into its prompt as plain text) and what earlier calls of this query wrote (a question
        condensed from the conversation, a draft being refined), and gains what those earlier
        calls were looked up in (the draft's passages) and the user's own query. So a name that
        only an earlier reply holds grounds nothing, in every chat mode, and a refined answer is
        grounded by the passages of its draft. The result is kept for the calls after this one."""
        chain = [self]
        while chain[-1].parent is not None:
            chain.append(chain[-1].parent)
        written = {t.strip() for scope in chain for t in scope.written if t.strip()}
        written |= {r.verdict.text.strip() for scope in chain for r in scope.records if r.verdict.text.strip()}
        for text in sorted(written, key=len, reverse=True):
            prompt = prompt.replace(text, "\n")
        with self._lock:
            earlier = [t for scope in chain for t in scope._sources]
            self._sources.append(prompt)
        return "\n".join([prompt, *earlier, chain[-1].query])


_CURRENT: ContextVar[QueryScope | None] = ContextVar("spillguard_query_scope", default=None)


def current_scope() -> QueryScope | None:
    """The innermost open scope of this thread / asyncio task, if any."""
    return _CURRENT.get()


@contextmanager
def query_scope(
    query: str, *, step: RetryStep | None = None, grounded: bool = False, written: Sequence[str] = ()
) -> Iterator[QueryScope]:
    """Open a scope for ``query``: guarded LLM calls inside it make attempt ``step`` (default the
    first), are scored for grounding in their prompt when ``grounded`` (or when the enclosing
    scope is; ``written``: earlier replies of the model, which ground nothing), and record their
    verdicts there."""
    parent = _CURRENT.get()
    grounded = grounded or (parent is not None and parent.grounded)  # an enclosing engine's choice holds
    with _entered(QueryScope(query, step or RetryStep(), grounded, parent=parent, written=tuple(written))) as scope:
        yield scope


@contextmanager
def _entered(scope: QueryScope) -> Iterator[QueryScope]:
    """Make ``scope`` the current one for the block."""
    token = _CURRENT.set(scope)
    try:
        yield scope
    finally:
        _CURRENT.reset(token)


def iterate_in(scope: QueryScope, items: Iterator[T]) -> Iterator[T]:
    """Iterate ``items`` with ``scope`` current at every step: a stream whose LLM call starts
    lazily, on first iteration (after its engine returned and the scope was closed), still
    records there. The scope is entered around each step only, so the consumer may move
    between threads or tasks."""
    while True:
        with _entered(scope):
            try:
                item = next(items)
            except StopIteration:
                return
        yield item


async def aiterate_in(scope: QueryScope, items: AsyncIterator[T]) -> AsyncIterator[T]:
    """:func:`iterate_in` for async streams."""
    while True:
        with _entered(scope):
            try:
                item = await anext(items)
            except StopAsyncIteration:
                return
        yield item
