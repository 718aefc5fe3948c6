"""A chain that abstains instead of returning a high-spill answer.

The evidence (the model's answer, its score, the threshold) stays in the message metadata.
Run: python examples/langchain_abstain.py
"""

from langchain_core.prompts import ChatPromptTemplate

from guardrail import Policy
from langchain_spillguard import ChatSpillguard, SpillguardRunnable

QUESTIONS = ["What is the capital of France?", "What is the capital of Honduras?"]


def main() -> list[str]:
    prompt = ChatPromptTemplate.from_messages([("human", "{question}")])
    guard = SpillguardRunnable(
        prompt | ChatSpillguard(max_tokens=24),
        policy=Policy(on_hallucination="abstain", abstain_text="I don't know."),
    )
    shown = []
    for question in QUESTIONS:
        message = guard.invoke({"question": question})
        evidence = message.response_metadata["spillguard"]
        print(f"Q: {question}\nA: {message.content}")
        print(
            f"   model said {evidence['answer']!r}, score {evidence['score']:.2f} "
            f"vs threshold {evidence['threshold']:.2f} -> {evidence['action']}"
        )
        shown.append(message.text)
    print("streamed:", "".join(chunk.text for chunk in guard.stream({"question": QUESTIONS[1]})))
    return shown


if __name__ == "__main__":
    main()
