"""LangChain integration of spillguard: a guarded local chat model, a callback, a Runnable guard.

>>> from langchain_spillguard import ChatSpillguard, SpillguardRunnable, SpillguardCallbackHandler
>>> chat = ChatSpillguard()                              # bundled SmolLM2-135M-Instruct
>>> message = chat.invoke("What is the capital of Honduras?")
>>> message.response_metadata["spillguard"]["score"]

``SpillguardMiddleware`` (for ``langchain.agents.create_agent``) needs the ``agents`` extra:
``pip install "spillguard[agents]"``; it is imported on first access.

Names follow LangChain's partner packages (``Chat<Provider>``, ``<Provider>CallbackHandler``);
the exceptions are the core's (:mod:`guardrail.errors`), re-exported here. Install with
``pip install "spillguard[langchain]"``.
"""

try:
    import langchain_core  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised by a subprocess test
    raise ImportError(
        "langchain_spillguard needs langchain-core, which is not installed; "
        'install it with: pip install "spillguard[langchain]"'
    ) from exc

from typing import Any

from guardrail import HallucinationDetected as HallucinationDetected
from guardrail import NotGuardedError as NotGuardedError
from guardrail import UnscoredResponseError as UnscoredResponseError
from guardrail.deprecation import deprecated_aliases
from langchain_spillguard.callbacks import AsyncSpillguardCallbackHandler as AsyncSpillguardCallbackHandler
from langchain_spillguard.callbacks import RunRecord as RunRecord
from langchain_spillguard.callbacks import SpillguardCallbackHandler as SpillguardCallbackHandler
from langchain_spillguard.chat_model import ChatSpillguard as ChatSpillguard
from langchain_spillguard.evidence import METADATA_KEY as METADATA_KEY
from langchain_spillguard.evidence import QUESTION_KEY as QUESTION_KEY
from langchain_spillguard.evidence import STEP_KEY as STEP_KEY
from langchain_spillguard.evidence import Evidence as Evidence
from langchain_spillguard.evidence import evidence_of as evidence_of
from langchain_spillguard.runnable import SpillguardRunnable as SpillguardRunnable

__all__ = [
    "METADATA_KEY",
    "QUESTION_KEY",
    "STEP_KEY",
    "AsyncSpillguardCallbackHandler",
    "ChatSpillguard",
    "Evidence",
    "HallucinationDetected",
    "NotGuardedError",
    "RunRecord",
    "SpillguardCallbackHandler",
    "SpillguardMiddleware",
    "SpillguardRunnable",
    "UnscoredResponseError",
    "evidence_of",
]

_deprecated = deprecated_aliases(
    __name__,
    {
        "HallucinationGuard": ("langchain_spillguard.SpillguardRunnable", SpillguardRunnable),
        "HallucinationFlagged": ("guardrail.HallucinationDetected", HallucinationDetected),
    },
)


def __getattr__(name: str) -> Any:
    """``SpillguardMiddleware`` on first use (it needs the ``agents`` extra); deprecated aliases."""
    if name == "SpillguardMiddleware":
        from langchain_spillguard.middleware import SpillguardMiddleware

        return SpillguardMiddleware
    return _deprecated(name)
