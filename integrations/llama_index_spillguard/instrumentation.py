"""Instrumentation: see the verdict of every guarded LLM call of a query.

>>> from llama_index.core.instrumentation import get_dispatcher
>>> handler = SpillguardEventHandler()
>>> get_dispatcher().add_event_handler(handler)
>>> engine.query("...")
>>> [(c.answer, c.action) for c in handler.calls], handler.flagged_calls()
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.llm import (
    LLMChatEndEvent,
    LLMCompletionEndEvent,
)

from guardrail import METADATA_KEY

__all__ = ["LLMCallRecord", "QueryRecord", "SpillguardEventHandler", "SpillguardQueryEvent"]


class SpillguardQueryEvent(BaseEvent):
    """Dispatched by :class:`SpillguardQueryEngine` once it has decided about a query.

    Attributes:
        query: the user's query.
        action: ``"allow"``, ``"flag"`` or ``"abstain"``.
        score: the chosen answer's score (``None`` if not finite); higher = more hallucinated.
        threshold: the threshold it was compared with.
        attempts: how many times the query was answered.
        query_ids: the scope id of each attempt (matching the LLM calls' ``query_id``).
    """

    query: str
    action: str
    score: float | None
    threshold: float
    attempts: int
    query_ids: list[str]

    @classmethod
    def class_name(cls) -> str:
        return "SpillguardQueryEvent"


@dataclass(frozen=True)
class LLMCallRecord:
    """One guarded LLM call seen by the handler.

    Attributes:
        span_id: the LlamaIndex span of the call.
        query_id: the guarded-query attempt it belonged to, or ``None`` outside an engine.
        answer: the model's answer.
        action: the guard's action on it (inside an engine: ``"allow"`` or ``"flag"``).
        score: its score (``None`` if not finite).
        threshold: the threshold.
    """

    span_id: str | None
    query_id: str | None
    answer: str
    action: str
    score: float | None
    threshold: float

    @property
    def hallucinated(self) -> bool:
        """Whether the call's answer scored above the threshold."""
        return self.action != "allow"


@dataclass(frozen=True)
class QueryRecord:
    """One decision of a guarded query engine (from a :class:`SpillguardQueryEvent`)."""

    span_id: str | None
    query: str
    action: str
    score: float | None
    threshold: float
    query_ids: tuple[str, ...]


class SpillguardEventHandler(BaseEventHandler):
    """Records the verdict of every :class:`SpillguardLLM` call and guarded-query decision.

    Attach it with ``get_dispatcher().add_event_handler(handler)``. It reads the LLMs' own
    end events (``LLMCompletionEndEvent``, ``LLMChatEndEvent``; streams: the final chunk) and
    :class:`SpillguardQueryEvent`. Thread-safe.
    """

    _calls: list[LLMCallRecord] = PrivateAttr(default_factory=list)
    _queries: list[QueryRecord] = PrivateAttr(default_factory=list)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @classmethod
    def class_name(cls) -> str:
        return "SpillguardEventHandler"

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        """Record the event if it carries a verdict."""
        if isinstance(event, SpillguardQueryEvent):
            record: Any = QueryRecord(
                event.span_id, event.query, event.action, event.score, event.threshold, tuple(event.query_ids)
            )
            with self._lock:
                self._queries.append(record)
        elif isinstance(event, (LLMCompletionEndEvent, LLMChatEndEvent)) and event.response is not None:
            evidence = event.response.additional_kwargs.get(METADATA_KEY)
            if isinstance(evidence, dict):
                with self._lock:
                    self._calls.append(_call_record(event.span_id, evidence))

    @property
    def calls(self) -> tuple[LLMCallRecord, ...]:
        """Every guarded LLM call seen, in order."""
        with self._lock:
            return tuple(self._calls)

    @property
    def queries(self) -> tuple[QueryRecord, ...]:
        """Every guarded-query decision seen, in order."""
        with self._lock:
            return tuple(self._queries)

    def calls_of(self, query: QueryRecord) -> tuple[LLMCallRecord, ...]:
        """The LLM calls made while answering ``query`` (all its attempts)."""
        ids = set(query.query_ids)
        return tuple(c for c in self.calls if c.query_id in ids)

    def flagged_calls(self) -> tuple[LLMCallRecord, ...]:
        """The calls whose answer scored above the threshold."""
        return tuple(c for c in self.calls if c.hallucinated)

    def clear(self) -> None:
        """Forget everything recorded."""
        with self._lock:
            self._calls.clear()
            self._queries.clear()


def _call_record(span_id: str | None, evidence: dict[str, Any]) -> LLMCallRecord:
    return LLMCallRecord(
        span_id=span_id,
        query_id=evidence.get("query_id"),
        answer=str(evidence.get("answer", "")),
        action=str(evidence.get("action", "")),
        score=evidence.get("score"),
        threshold=float(evidence.get("threshold", float("nan"))),
    )
