"""Callback handlers that read spillguard scores from every chat-model run and flag them.

Attach one to a whole chain with ``chain.invoke(x, config={"callbacks": [handler]})``. The
handler observes; it changes nothing unless ``raise_error=True``, in which case a flagged (or
unscored) answer raises :class:`guardrail.HallucinationDetected` out of ``invoke`` (LangChain
propagates handler errors only for handlers with ``raise_error``). A model that raised
:class:`~guardrail.HallucinationDetected` itself (``raise_on_hallucination=True``) is recorded
as flagged from the exception's evidence. For retry or abstention use
:class:`~langchain_spillguard.SpillguardRunnable`.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from uuid import UUID

from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGeneration, LLMResult

from guardrail import Evidence, HallucinationDetected, UnscoredResponseError
from guardrail.validation import check_finite
from langchain_spillguard.evidence import evidence_of

__all__ = ["AsyncSpillguardCallbackHandler", "RunRecord", "SpillguardCallbackHandler"]

Status = Literal["allowed", "flagged", "unscored"]

_LOGGER = logging.getLogger("langchain_spillguard")


@dataclass(frozen=True)
class RunRecord:
    """What the handler saw of one model run.

    Attributes:
        run_id: the model run's id (full UUID).
        parent_run_id: the enclosing run (e.g. the chain), if any.
        prompt: the last human message the model was given, if seen.
        text: the answer text.
        status: ``"allowed"``, ``"flagged"`` (above the threshold) or ``"unscored"`` (no
            spillguard scores: never treated as allowed).
        score: the answer's score (``inf`` if unscorable), ``None`` when unscored.
        threshold: the threshold applied, ``None`` when unscored.
        evidence: the ``response_metadata["spillguard"]`` dict, ``None`` when unscored.
    """

    run_id: UUID
    parent_run_id: UUID | None
    prompt: str | None
    text: str
    status: Status
    score: float | None
    threshold: float | None
    evidence: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def allowed(self) -> bool:
        """Whether the answer was scored and at or below the threshold."""
        return self.status == "allowed"


class _Recorder:
    """Shared logic of the sync and async handlers: per-run state keyed by the full run id."""

    def __init__(
        self,
        *,
        threshold: float | None = None,
        raise_error: bool = False,
        logger: logging.Logger | None = None,
        log_level: int = logging.WARNING,
    ) -> None:
        self.threshold = None if threshold is None else check_finite("threshold", threshold)
        self.raise_error = raise_error
        self.logger = logger or _LOGGER
        self.log_level = log_level
        self.records: dict[UUID, RunRecord] = {}
        self._prompts: dict[UUID, str] = {}
        self._lock = threading.Lock()

    @property
    def flagged(self) -> dict[UUID, RunRecord]:
        """Runs whose answer scored above the threshold."""
        return self._with_status("flagged")

    @property
    def unscored(self) -> dict[UUID, RunRecord]:
        """Runs whose answer carried no spillguard scores."""
        return self._with_status("unscored")

    def _with_status(self, status: Status) -> dict[UUID, RunRecord]:
        with self._lock:
            return {k: r for k, r in self.records.items() if r.status == status}

    def _start(self, messages: Sequence[Sequence[BaseMessage]], run_id: UUID) -> None:
        humans = [m for m in (messages[0] if messages else []) if m.type == "human"]
        if humans:
            with self._lock:
                self._prompts[run_id] = humans[-1].text

    def _end(self, response: LLMResult, run_id: UUID, parent_run_id: UUID | None) -> None:
        generation = response.generations[0][0] if response.generations and response.generations[0] else None
        text = generation.text if generation is not None else ""
        try:
            evidence = evidence_of(generation) if isinstance(generation, ChatGeneration) else None
            if evidence is not None:
                evidence.check(text)
        except UnscoredResponseError:
            evidence = None
        self._store(self._record(evidence, run_id, parent_run_id, self._pop_prompt(run_id), text))

    def _error(self, error: BaseException, run_id: UUID, parent_run_id: UUID | None) -> None:
        """A model that raised a flagged verdict is recorded as flagged; other failures are dropped."""
        prompt = self._pop_prompt(run_id)
        if isinstance(error, HallucinationDetected) and error.evidence is not None:
            evidence = error.evidence
            record = self._record(evidence, run_id, parent_run_id, prompt, evidence.text)
            with self._lock:
                self.records[run_id] = record  # already raised by the model: record and log only
            self._log(record)

    def _pop_prompt(self, run_id: UUID) -> str | None:
        with self._lock:
            return self._prompts.pop(run_id, None)

    def _store(self, record: RunRecord) -> None:
        with self._lock:
            self.records[record.run_id] = record
        self._report(record)

    def _record(
        self, evidence: Evidence | None, run_id: UUID, parent_run_id: UUID | None, prompt: str | None, text: str
    ) -> RunRecord:
        if evidence is None:
            return RunRecord(run_id, parent_run_id, prompt, text, "unscored", None, None)
        threshold = evidence.threshold if self.threshold is None else float(self.threshold)
        status: Status = "flagged" if evidence.flagged_by(threshold) else "allowed"
        return RunRecord(run_id, parent_run_id, prompt, text, status, evidence.score, threshold, dict(evidence.data))

    def _log(self, record: RunRecord) -> None:
        if record.status == "unscored":
            self.logger.log(self.log_level, "spillguard: run %s has no spillguard scores: not allowed", record.run_id)
        elif record.status == "flagged":
            self.logger.log(
                self.log_level, "spillguard: run %s flagged: score %.3f > threshold %.3f, answer %r",
                record.run_id, record.score, record.threshold, record.text,
            )  # fmt: skip

    def _report(self, record: RunRecord) -> None:
        self._log(record)
        if not self.raise_error or record.status == "allowed":
            return
        if record.status == "unscored":
            raise UnscoredResponseError(
                "the model response",
                "it carries no spillguard scores (or none valid for its text)",
                run_id=record.run_id,
            )
        assert record.evidence is not None and record.threshold is not None
        evidence = dataclasses.replace(Evidence.from_dict(record.evidence), threshold=record.threshold)
        raise HallucinationDetected(evidence, run_id=record.run_id)


class SpillguardCallbackHandler(_Recorder, BaseCallbackHandler):
    """Records every model run's spillguard verdict; flags high-spill answers.

    Args:
        threshold: flag above this score instead of the model's calibrated threshold.
        raise_error: raise :class:`guardrail.HallucinationDetected` (or
            :class:`guardrail.UnscoredResponseError`) out of ``invoke`` for a flagged (or
            unscored) answer; default: record and log only.
        logger: where flags are logged (default ``logging.getLogger("langchain_spillguard")``).
        log_level: level of the flag messages.

    Attributes:
        records: every run seen, by run id; ``flagged`` and ``unscored`` filter it.
    """

    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        """Remember the prompt of the run."""
        self._start(messages, run_id)

    def on_llm_end(
        self, response: LLMResult, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        """Read the verdict of the run's answer; record, log and maybe raise."""
        self._end(response, run_id, parent_run_id)

    def on_llm_error(
        self, error: BaseException, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        """Record a run whose model raised its flagged verdict; drop the state of any other failure."""
        self._error(error, run_id, parent_run_id)


class AsyncSpillguardCallbackHandler(_Recorder, AsyncCallbackHandler):
    """The async twin of :class:`SpillguardCallbackHandler` (same arguments and attributes)."""

    async def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        """Remember the prompt of the run."""
        self._start(messages, run_id)

    async def on_llm_end(
        self, response: LLMResult, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        """Read the verdict of the run's answer; record, log and maybe raise."""
        self._end(response, run_id, parent_run_id)

    async def on_llm_error(
        self, error: BaseException, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        """Record a run whose model raised its flagged verdict; drop the state of any other failure."""
        self._error(error, run_id, parent_run_id)
