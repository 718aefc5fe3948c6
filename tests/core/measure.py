"""Measurements behind the numbers in docs/models.md; run ``python -m tests.core.measure NAME``.

- ``dtypes``: generate vs teacher-forced gap of spilled energy and log-prob per dtype (fp32,
  bf16, fp16 on the CPU), on tiny models of :mod:`tests.core.zoo` and on the bundled model.
- ``memory``: peak resident memory of ``guard.check`` on the bundled model after a ~2,000-token
  prompt, with the LM head kept to the scored rows (``logits_to_keep``) and without.
- ``fingerprint``: time of the model fingerprint on the bundled model.

The functions are also what tests/core/test_dtypes.py checks against the documented tolerances.
Timings depend on the machine (and on what else runs on it).
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import time
from typing import Any

import numpy as np
import torch

from guardrail import Calibration, Guard
from guardrail.capture import score_teacher_forced

QUESTIONS = ["What is the capital of Australia?", "Who wrote Moby-Dick?", "What is 17 times 23?"]
TINY_QUESTIONS = ["what is the capital of france ?", "paris ?", "is rome a city and a country ?"]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def dtype_gap(model: Any, tokenizer: Any, questions: list[str], new_tokens: int) -> dict[str, float]:
    """Largest |generate − teacher-forced| over the answers' tokens, for ΔE and log-prob.

    Greedy answers forced to ``new_tokens`` tokens (so the extra last step runs), each compared
    with one teacher-forced pass over the same ids in the same dtype.
    """
    guard = Guard(model, tokenizer, calibration=Calibration.uncalibrated(), name="measure", max_new_tokens=new_tokens)
    gaps = {"spilled_energy": 0.0, "logprob": 0.0}
    for question in questions:
        verdict = guard.ask(question, min_new_tokens=new_tokens)
        prompt = torch.tensor(guard.prompt_ids(question), dtype=torch.long)
        forced = score_teacher_forced(model, prompt, torch.tensor(verdict.scores.token_ids))
        for name in gaps:
            gap = float(np.abs(forced.metric(name) - verdict.scores.metric(name)).max())
            gaps[name] = max(gaps[name], gap)
    return gaps


def tiny_dtype_gaps(families: tuple[str, ...] = ("llama", "gemma2", "qwen2", "gpt2", "mamba")) -> dict[str, Any]:
    from tests.core import zoo

    table: dict[str, Any] = {}
    for name in families:
        tokenizer = zoo.word_tokenizer(pad=zoo.FAMILIES[name].pad_token)
        for dtype_name, dtype in DTYPES.items():
            table[f"{name} {dtype_name}"] = dtype_gap(zoo.build(name, dtype=dtype), tokenizer, TINY_QUESTIONS, 8)
    return table


def bundled_dtype_gaps(new_tokens: int = 16) -> dict[str, Any]:
    from guardrail.loading import load_default

    model, tokenizer = load_default()
    table: dict[str, Any] = {}
    for dtype_name, dtype in DTYPES.items():
        converted = model if dtype == torch.float32 else copy.deepcopy(model).to(dtype)
        table[f"SmolLM2-135M {dtype_name}"] = dtype_gap(converted, tokenizer, QUESTIONS, new_tokens)
    return table


def check_peak_rss(keep: bool, prompt_tokens: int = 2000) -> dict[str, float]:
    """Peak RSS (MiB) of a fresh process: load the bundled model, then one ``check`` after a
    ``prompt_tokens``-token prompt; ``keep=False`` computes logits for every position."""
    code = f"""
import json, resource
import guardrail.capture as capture
from guardrail import Guard
if not {keep!r}:
    capture._last_logits_only = lambda model, count: {{}}
guard = Guard.default()
words = ("The harbour town keeps its old lighthouse, its ferry and a market by the sea. " * 400).split()
context, n = [], 0
while n < {prompt_tokens}:
    context.append(words[len(context) % len(words)])
    n = len(guard.prompt_ids(" ".join(context), raw=True))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
verdict = guard.check(" ".join(context), " The ferry leaves at noon.", raw=True)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
result = {{"prompt_tokens": verdict.best.prompt_tokens, "before_mib": before / 1024, "after_mib": after / 1024}}
print(json.dumps(result))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    result["check_mib"] = result["after_mib"] - result["before_mib"]
    return result


def fingerprint_seconds(repeats: int = 5) -> dict[str, float]:
    from guardrail.calibration import fingerprint, weights_sha256
    from guardrail.loading import load_default

    model, tokenizer = load_default()
    vocab = model.get_output_embeddings().weight.shape[0]
    weights, full = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        weights_sha256(model)
        weights.append(time.perf_counter() - start)
        start = time.perf_counter()
        fingerprint("m", tokenizer, vocab, model)
        full.append(time.perf_counter() - start)
    return {"weights_sha256_s (median)": float(np.median(weights)), "fingerprint_s (median)": float(np.median(full))}


def main(argv: list[str]) -> None:
    what = argv[0] if argv else "dtypes"
    if what == "dtypes":
        result: dict[str, Any] = {**tiny_dtype_gaps(), **bundled_dtype_gaps()}
    elif what == "memory":
        result = {"logits_to_keep": check_peak_rss(True), "all positions": check_peak_rss(False)}
    elif what == "fingerprint":
        result = fingerprint_seconds()
    else:
        raise SystemExit(f"unknown measurement {what!r}: dtypes, memory or fingerprint")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
