"""LlamaIndex integration of spillguard: gate RAG answers on spilled energy.

- :class:`SpilledEnergyLLM`: a LlamaIndex LLM over a local model; responses carry the verdict.
- :class:`GuardedQueryEngine`: flag, retry or abstain on the answers of any query engine
  built on it.
- :class:`SpilledEnergyEvaluator`: a ``BaseEvaluator`` reading (or computing) the verdict.
- :class:`SpilledEnergyEventHandler`: instrumentation that records every call's verdict.

Install with ``pip install "spillguard[llamaindex]"``.
"""

try:
    import llama_index.core  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "llama_index_spillguard needs llama-index-core, which is not installed; "
        'install it with: pip install "spillguard[llamaindex]"'
    ) from exc

from llama_index_spillguard.errors import NoContextError, NotGuardedError
from llama_index_spillguard.evaluator import SpilledEnergyEvaluator
from llama_index_spillguard.evidence import (
    EVIDENCE_KEY,
    verdict_evidence,
    verdict_logprobs,
)
from llama_index_spillguard.instrumentation import (
    GuardedQueryEvent,
    LLMCallRecord,
    QueryRecord,
    SpilledEnergyEventHandler,
)
from llama_index_spillguard.llm import SpilledEnergyLLM
from llama_index_spillguard.query_engine import RAG_ABSTAIN_TEXT, GuardedQueryEngine
from llama_index_spillguard.scope import (
    CallRecord,
    QueryScope,
    current_scope,
    query_scope,
)

__all__ = [
    "EVIDENCE_KEY",
    "RAG_ABSTAIN_TEXT",
    "CallRecord",
    "GuardedQueryEngine",
    "GuardedQueryEvent",
    "LLMCallRecord",
    "NoContextError",
    "NotGuardedError",
    "QueryRecord",
    "QueryScope",
    "SpilledEnergyEvaluator",
    "SpilledEnergyEventHandler",
    "SpilledEnergyLLM",
    "current_scope",
    "query_scope",
    "verdict_evidence",
    "verdict_logprobs",
]
