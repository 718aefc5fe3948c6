"""Quickstart: guard the bundled model, ask questions, read the verdicts.

Run: python examples/quickstart.py
"""

from guardrail import Guard, HallucinationDetected, Policy

guard = Guard.default()  # bundled SmolLM2-135M-Instruct, shipped calibration

for question in ["What is the capital of Japan?", "What is the capital of Honduras?"]:
    verdict = guard.ask(question)
    print(f"{question}\n  {verdict.answer!r}")
    print(
        f"  scored span {verdict.span.text!r}: score {verdict.score:+.2f} "
        f"(threshold {verdict.threshold:+.2f}) -> {verdict.action.value}"
    )

# Score an answer you already have (one teacher-forced pass), naming the exact answer.
checked = guard.check("What is the capital of Honduras?", "The capital of Honduras is Tegucigalpa.", span="Tegucigalpa")
print(f"given answer: score {checked.score:+.2f} -> {checked.action.value}")

# Abstain instead of answering when the score is above the threshold; raising is opt-in.
careful = Guard(
    guard.model,
    guard.tokenizer,
    calibration=guard.calibration,
    name=guard.fingerprint.name,
    policy=Policy(on_hallucination="abstain"),
)
verdict = careful.ask("What is the capital of Honduras?")
print(f"abstaining guard returns {verdict.text!r}")
try:
    verdict.raise_for_hallucination()
except HallucinationDetected as error:
    print(f"raised on request: {error}")
