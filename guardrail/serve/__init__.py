"""Guarded generation over HTTP (extra ``spillguard[ray]``): an OpenAI-compatible
``/v1/chat/completions`` whose responses carry the verdict, served by Ray Serve replicas.

Modules, one concept each: :mod:`~guardrail.serve.schema` (the request and response shapes),
:mod:`~guardrail.serve.handler` (a request in, a reply out: plain Python, no Ray, unit-tested on
tiny models) and :mod:`~guardrail.serve.deployment` (the Ray Serve deployment around the
handler; Ray is imported only when an application is built). The guard's policy (flag, retry,
abstain) applies on the server. See ``docs/scaling.md``.
"""

from guardrail.serve.handler import ChatHandler as ChatHandler
from guardrail.serve.handler import Reply as Reply

__all__ = ["ChatHandler", "Reply"]
