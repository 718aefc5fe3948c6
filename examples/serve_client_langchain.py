"""A LangChain app using a `spillguard serve` server through LangChain's own OpenAI client.

Start the server first (the bundled model, this machine only):

    spillguard serve --policy abstain            # http://127.0.0.1:8000/v1

then run `python examples/serve_client_langchain.py [BASE_URL]`. The app is an ordinary
prompt | ChatOpenAI chain: the guarding happens on the server (policy, calibration, retries), and
the verdict comes back in the `x-spillguard` response header, which ChatOpenAI keeps in
`response_metadata["headers"]` when asked to (it drops unknown body fields; the full verdict is
in the body's `spillguard` field for clients that keep them). Needs `langchain-openai`.

The verdict is plain data from the server: trust it as far as you trust that server (it is not
sealed evidence like an in-process guard's, see docs/scaling.md).
"""

from __future__ import annotations

import json
import sys
from typing import Any

from langchain_core.prompts import ChatPromptTemplate
from langchain_openai import ChatOpenAI

QUESTIONS = ("What is the capital of Japan?", "What is the capital of Honduras?")


def verdict_of(message: Any) -> dict[str, Any]:
    """The server's verdict summary carried by a ChatOpenAI reply."""
    return dict(json.loads(message.response_metadata["headers"]["x-spillguard"]))


def main(base_url: str = "http://127.0.0.1:8000/v1") -> None:
    llm = ChatOpenAI(
        base_url=base_url,
        api_key="unused",  # the server asks for none; the client insists on one
        model="spillguard",  # any name: the server serves one model
        include_response_headers=True,
        max_retries=0,
        timeout=120,
    )
    chain = ChatPromptTemplate.from_messages([("user", "{question}")]) | llm
    for question in QUESTIONS:
        reply = chain.invoke({"question": question})
        verdict = verdict_of(reply)
        print(f"Q: {question}")
        print(f"A: {reply.content}")
        print(
            f"   verdict: {verdict['action']} (score {verdict['score']:.3f} vs threshold {verdict['threshold']:.3f}, "
            f"span {verdict['span']!r}); finish_reason {reply.response_metadata['finish_reason']}"
        )


if __name__ == "__main__":
    main(*sys.argv[1:2])
