"""A chain that regenerates an answer when its spilled energy is high.

Each retry samples with a new seed (greedy decoding would repeat the answer); the guard keeps
the first attempt that passes, else the lowest-scoring one. Run: python examples/langchain_retry.py
"""

from langchain_core.prompts import ChatPromptTemplate

from guardrail import Policy
from langchain_spillguard import ChatSpillguard, SpillguardRunnable


def main() -> dict:
    prompt = ChatPromptTemplate.from_messages([("human", "{question}")])
    guard = SpillguardRunnable(
        prompt | ChatSpillguard(max_tokens=24),
        policy=Policy(on_hallucination="retry", max_attempts=3, after_retries="flag"),
    )
    message = guard.invoke({"question": "What is the capital of Honduras?"})
    verdict = message.response_metadata["spillguard"]
    for i, attempt in enumerate(verdict["guard"]["attempts"], start=1):
        print(f"attempt {i} [{attempt['decoding']}]: {attempt['answer']!r} score {attempt['score']:.2f}")
    print(f"kept attempt {verdict['guard']['chosen'] + 1}: {message.content!r} ({verdict['action']})")
    return verdict


if __name__ == "__main__":
    main()
