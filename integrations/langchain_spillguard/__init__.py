"""LangChain integration of spillguard: a guarded local chat model, a callback, a Runnable guard.

>>> from langchain_spillguard import ChatSpillguard, HallucinationGuard, SpillguardCallbackHandler
>>> chat = ChatSpillguard()                              # bundled SmolLM2-135M-Instruct
>>> message = chat.invoke("What is the capital of Mali?")
>>> message.response_metadata["spillguard"]["score"]

Install with ``pip install "spillguard[langchain]"``.
"""

try:
    import langchain_core  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised by a subprocess test
    raise ImportError(
        "langchain_spillguard needs langchain-core, which is not installed; "
        'install it with: pip install "spillguard[langchain]"'
    ) from exc

from langchain_spillguard.callbacks import (
    AsyncSpillguardCallbackHandler as AsyncSpillguardCallbackHandler,
)
from langchain_spillguard.callbacks import RunRecord as RunRecord
from langchain_spillguard.callbacks import (
    SpillguardCallbackHandler as SpillguardCallbackHandler,
)
from langchain_spillguard.chat_model import ChatSpillguard as ChatSpillguard
from langchain_spillguard.errors import HallucinationFlagged as HallucinationFlagged
from langchain_spillguard.errors import NotGuardedError as NotGuardedError
from langchain_spillguard.errors import UnscoredResponseError as UnscoredResponseError
from langchain_spillguard.evidence import DECODING_KEY as DECODING_KEY
from langchain_spillguard.evidence import METADATA_KEY as METADATA_KEY
from langchain_spillguard.evidence import Evidence as Evidence
from langchain_spillguard.evidence import evidence_of as evidence_of
from langchain_spillguard.runnable import HallucinationGuard as HallucinationGuard

__all__ = [
    "DECODING_KEY",
    "METADATA_KEY",
    "AsyncSpillguardCallbackHandler",
    "ChatSpillguard",
    "Evidence",
    "HallucinationFlagged",
    "HallucinationGuard",
    "NotGuardedError",
    "RunRecord",
    "SpillguardCallbackHandler",
    "UnscoredResponseError",
    "evidence_of",
]
