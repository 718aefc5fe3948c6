"""LlamaIndex integration of spillguard: gate RAG answers on spilled energy.

- :class:`SpillguardLLM`: a LlamaIndex LLM over a local model; responses carry the verdict.
- :class:`SpillguardQueryEngine`: flag, retry or abstain on the answers of any query engine
  built on it (streaming engines stay streaming).
- :class:`SpillguardChatEngine`: the same for chat engines (``index.as_chat_engine(...)``),
  keeping the conversation to the replies actually returned.
- :class:`SpillguardEvaluator`: a ``BaseEvaluator`` reading (or computing) the verdict.
- :class:`SpillguardEventHandler`: instrumentation that records every call's verdict.

Names follow LlamaIndex's integrations (``<Provider>LLM``, ``<Provider>QueryEngine``, ``<Provider>ChatEngine``); the
exceptions are the core's (:mod:`guardrail.errors`), re-exported here. Install with
``pip install "spillguard[llamaindex]"``.
"""

try:
    import llama_index.core  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "llama_index_spillguard needs llama-index-core, which is not installed; "
        'install it with: pip install "spillguard[llamaindex]"'
    ) from exc

from guardrail import METADATA_KEY as METADATA_KEY
from guardrail import NoContextError as NoContextError
from guardrail import NotGuardedError as NotGuardedError
from guardrail import UnscoredResponseError as UnscoredResponseError
from guardrail.deprecation import deprecated_aliases
from llama_index_spillguard.chat_engine import SpillguardChatEngine as SpillguardChatEngine
from llama_index_spillguard.chat_engine import SpillguardStreamingChatResponse as SpillguardStreamingChatResponse
from llama_index_spillguard.evaluator import SpillguardEvaluator as SpillguardEvaluator
from llama_index_spillguard.evidence import verdict_evidence as verdict_evidence
from llama_index_spillguard.evidence import verdict_logprobs as verdict_logprobs
from llama_index_spillguard.instrumentation import LLMCallRecord as LLMCallRecord
from llama_index_spillguard.instrumentation import QueryRecord as QueryRecord
from llama_index_spillguard.instrumentation import SpillguardEventHandler as SpillguardEventHandler
from llama_index_spillguard.instrumentation import SpillguardQueryEvent as SpillguardQueryEvent
from llama_index_spillguard.llm import SpillguardLLM as SpillguardLLM
from llama_index_spillguard.query_engine import RAG_ABSTAIN_TEXT as RAG_ABSTAIN_TEXT
from llama_index_spillguard.query_engine import SpillguardQueryEngine as SpillguardQueryEngine
from llama_index_spillguard.scope import CallRecord as CallRecord
from llama_index_spillguard.scope import QueryScope as QueryScope
from llama_index_spillguard.scope import current_scope as current_scope
from llama_index_spillguard.scope import query_scope as query_scope

__all__ = [
    "METADATA_KEY",
    "RAG_ABSTAIN_TEXT",
    "CallRecord",
    "LLMCallRecord",
    "NoContextError",
    "NotGuardedError",
    "QueryRecord",
    "QueryScope",
    "SpillguardChatEngine",
    "SpillguardEvaluator",
    "SpillguardEventHandler",
    "SpillguardLLM",
    "SpillguardQueryEngine",
    "SpillguardQueryEvent",
    "SpillguardStreamingChatResponse",
    "UnscoredResponseError",
    "current_scope",
    "query_scope",
    "verdict_evidence",
    "verdict_logprobs",
]

__getattr__ = deprecated_aliases(
    __name__,
    {
        "SpilledEnergyLLM": ("llama_index_spillguard.SpillguardLLM", SpillguardLLM),
        "GuardedQueryEngine": ("llama_index_spillguard.SpillguardQueryEngine", SpillguardQueryEngine),
        "SpilledEnergyEvaluator": ("llama_index_spillguard.SpillguardEvaluator", SpillguardEvaluator),
        "SpilledEnergyEventHandler": ("llama_index_spillguard.SpillguardEventHandler", SpillguardEventHandler),
        "GuardedQueryEvent": ("llama_index_spillguard.SpillguardQueryEvent", SpillguardQueryEvent),
        "EVIDENCE_KEY": ("llama_index_spillguard.METADATA_KEY", METADATA_KEY),
    },
)
