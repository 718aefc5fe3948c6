"""A LangChain agent (``create_agent``) whose answers are gated by spilled energy.

SpillguardMiddleware judges every answer of the agent's model: here it abstains on the wrong
answer the bundled model gives for Honduras, and keeps the right one for France. Needs the
``agents`` extra (pip install "spillguard[agents]"). Run: python examples/langchain_agent.py
"""

from langchain.agents import create_agent

from langchain_spillguard import ChatSpillguard, SpillguardMiddleware

QUESTIONS = ["What is the capital of France?", "What is the capital of Honduras?"]


def main() -> list[dict]:
    agent = create_agent(ChatSpillguard(max_tokens=24), tools=[], middleware=[SpillguardMiddleware("abstain")])
    results = []
    for question in QUESTIONS:
        state = agent.invoke({"messages": [{"role": "user", "content": question}]})
        verdict = state["spillguard"]  # the decision about the agent's last answer
        print(f"Q: {question}\nA: {state['messages'][-1].content}")
        print(f"   model said {verdict['answer']!r}: score {verdict['score']:.2f} vs {verdict['threshold']:.2f}")
        results.append(state)
    return results


if __name__ == "__main__":
    main()
