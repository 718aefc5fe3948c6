"""Question answering with an LCEL chain; a callback flags high-spill answers.

Run: python examples/langchain_qa_callback.py
"""

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

from langchain_spillguard import ChatSpillguard, SpillguardCallbackHandler

QUESTIONS = ["What is the capital of France?", "What is the capital of Honduras?"]


def main() -> SpillguardCallbackHandler:
    prompt = ChatPromptTemplate.from_messages([("human", "{question}")])
    chain = prompt | ChatSpillguard(max_tokens=24) | StrOutputParser()
    handler = SpillguardCallbackHandler()  # records and logs; raise_error=True would raise
    for question in QUESTIONS:
        answer = chain.invoke({"question": question}, config={"callbacks": [handler]})
        print(f"Q: {question}\nA: {answer}")
    for run_id, record in handler.records.items():
        print(f"run {run_id}: {record.status}, score {record.score:.2f} (threshold {record.threshold:.2f})")
    print(f"flagged: {[r.prompt for r in handler.flagged.values()]}")
    return handler


if __name__ == "__main__":
    main()
