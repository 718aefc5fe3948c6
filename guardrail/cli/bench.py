"""Benchmark: guarded vs plain ``generate`` in one run (``spillguard bench``).

Each configuration (batch size × new tokens) runs ``repeats`` rounds; every round times plain
``model.generate`` and guarded generation (:func:`~guardrail.capture.generate_with_scores`:
raw-logit capture, the extra step for the last token, per-token scores) back to back, in
alternating order, with the same inputs and exactly ``new_tokens`` tokens (EOS ignored).
Reported: medians, their ratio, and the memory each capture keeps: ours keeps a few floats per
step and sequence, while ``output_logits=True`` keeps a vocabulary-sized row per step. Optionally
the reference pipeline (processed scores for every step, then per-token Python scoring) runs too.
On CUDA the extra peak GPU memory of the guarded run is measured.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import platform
import statistics
import time
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

import torch

from guardrail.capture import generate_with_scores

__all__ = ["configure", "run"]

_LLAMA_8B: dict[str, Any] = dict(
    vocab_size=128256,
    hidden_size=4096,
    intermediate_size=14336,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=8,
    max_position_embeddings=8192,
    rope_theta=500000.0,
    tie_word_embeddings=False,
    bos_token_id=128000,
    eos_token_id=128001,
)


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the benchmark's options to ``parser``."""
    parser.add_argument("--model", help="local model directory or .gguf (default: bundled SmolLM2-135M-Instruct)")
    parser.add_argument(
        "--random-llama-8b",
        action="store_true",
        help="a Llama-3-8B-shaped model with random weights built from a config (no download)",
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--dtype",
        choices=("float32", "bfloat16", "float16"),
        default=None,
        help="default: float32 on CPU, bfloat16 on CUDA",
    )
    parser.add_argument(
        "--config", action="append", metavar="BATCHxTOKENS", help="e.g. 1x64 (repeatable; default 1x64 and 8x64)"
    )
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--reference",
        action="store_true",
        help="also time the reference pipeline (processed scores + per-token Python)",
    )
    parser.add_argument(
        "--integrations",
        action="store_true",
        help="instead: one question through Guard.ask vs the LangChain and LlamaIndex adapters",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")


def run(args: argparse.Namespace) -> int:
    """Run the benchmark described by ``args`` and print the results."""
    if args.integrations:
        return _run_integrations(args)
    dtype = (
        getattr(torch, args.dtype)
        if args.dtype
        else (torch.bfloat16 if args.device.startswith("cuda") else torch.float32)
    )
    model, name = _model(args, dtype)
    configs = [tuple(int(x) for x in c.lower().split("x")) for c in (args.config or ["1x64", "8x64"])]
    results = {
        "model": name,
        "device": args.device,
        "dtype": str(dtype).removeprefix("torch."),
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "configs": [_bench_config(model, b, n, args) for b, n in configs],
    }
    print(json.dumps(results, indent=2) if args.json else _table(results))
    return 0


def _model(args: argparse.Namespace, dtype: torch.dtype) -> tuple[Any, str]:
    if args.random_llama_8b:
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.manual_seed(0)
        with torch.device(args.device):
            model: Any = LlamaForCausalLM(LlamaConfig(**_LLAMA_8B))
        return model.to(dtype).eval(), "random Llama-3-8B-shaped"
    from guardrail.loading import DEFAULT_MODEL_NAME, load_default, load_local

    model, _ = load_local(args.model, dtype=dtype) if args.model else load_default()
    return model.to(args.device, dtype).eval(), args.model or DEFAULT_MODEL_NAME


def _bench_config(model: Any, batch: int, tokens: int, args: argparse.Namespace) -> dict[str, Any]:
    vocab = model.get_output_embeddings().weight.shape[0]
    g = torch.Generator().manual_seed(batch * 1000 + tokens)
    ids = torch.randint(100, min(vocab, 30000), (batch, args.prompt_tokens), generator=g).to(args.device)
    mask = torch.ones_like(ids)
    mask[1:, : args.prompt_tokens // 4] = 0  # left padding on all rows but the first
    kwargs = dict(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=tokens,
        min_new_tokens=tokens,
        do_sample=False,
        pad_token_id=0,
    )
    eos = [model.generation_config.eos_token_id or 0]

    def plain() -> None:
        with torch.inference_mode():
            model.generate(**kwargs)

    def guarded() -> None:
        generate_with_scores(
            model,
            ids,
            mask,
            eos_token_ids=eos,
            pad_token_id=0,
            max_new_tokens=tokens,
            min_new_tokens=tokens,
            do_sample=False,
        )

    runs: dict[str, Callable[[], None]] = {"plain": plain, "guarded": guarded}
    if args.reference:
        runs["reference"] = lambda: _reference(model, kwargs)
    for fn in runs.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {k: [] for k in runs}
    peaks: dict[str, list[int]] = {k: [] for k in runs}
    for r in range(args.repeats):
        order = list(runs) if r % 2 == 0 else list(reversed(runs))
        for key in order:
            seconds, peak = _timed(runs[key], args.device)
            times[key].append(seconds)
            peaks[key].append(peak)
    med = {k: statistics.median(v) for k, v in times.items()}
    out: dict[str, Any] = {
        "batch": batch,
        "new_tokens": tokens,
        "median_s": med,
        "ratio_guarded_vs_plain": med["guarded"] / med["plain"],
        "per_round_ratios": [g / p for g, p in zip(times["guarded"], times["plain"], strict=True)],
        "median_per_round_ratio": statistics.median(
            g / p for g, p in zip(times["guarded"], times["plain"], strict=True)
        ),
        "capture_bytes_kept": _capture_bytes(batch, tokens, vocab),
        "output_logits_bytes": batch * tokens * vocab * 4,
    }
    if args.reference:
        out["ratio_reference_vs_plain"] = med["reference"] / med["plain"]
    if args.device.startswith("cuda"):
        base = max(peaks["plain"])
        out["peak_gpu_bytes"] = {k: max(v) for k, v in peaks.items()}
        out["extra_peak_gpu_fraction"] = (max(peaks["guarded"]) - base) / base
    return out


def _run_integrations(args: argparse.Namespace) -> int:
    """Adapter overhead: the same question through the core guard and each installed host adapter.

    Adapters offer themselves through the ``spillguard.bench`` entry-point group (a callable
    ``guard -> (label, ask)``), so the core names none of them.
    """
    from guardrail.guard import Guard

    guard = Guard.default(max_new_tokens=32)
    question = "What is the capital of Australia?"
    runs: dict[str, Callable[[], object]] = {"Guard.ask": lambda: guard.ask(question)}
    for entry in entry_points(group="spillguard.bench"):
        try:
            label, call = entry.load()(guard)
        except ImportError:  # that adapter's host is not installed
            continue
        runs[label] = functools.partial(call, question)
    for fn in runs.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in runs}
    for r in range(args.repeats):
        for key in list(runs) if r % 2 == 0 else list(reversed(runs)):
            times[key].append(_timed(runs[key], "cpu")[0])
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "question": question,
        "repeats": args.repeats,
        "median_s": med,
        "ratio_vs_guard": {k: v / med["Guard.ask"] for k, v in med.items()},
    }
    print(
        json.dumps(result, indent=2)
        if args.json
        else "\n".join(f"{k:<28} {v:.3f} s  x{result['ratio_vs_guard'][k]:.3f}" for k, v in med.items())
    )
    return 0


def _timed(fn: Callable[[], object], device: str) -> tuple[float, int]:
    gc.collect()
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    fn()
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start, torch.cuda.max_memory_allocated() if cuda else 0


def _capture_bytes(batch: int, tokens: int, vocab: int) -> int:
    """Bytes the capture holds at the end of a generation: three float32 per step and row
    (log-partition, entropy, chosen logit) plus the one raw-logit row of the last step.
    A unit test pins this structure on a real capture."""
    return (3 * tokens * batch + batch * vocab) * 4


def _reference(model: Any, kwargs: dict[str, Any]) -> None:
    """The reference pipeline: keep processed scores of every step, score tokens in Python."""
    with torch.inference_mode():
        out = model.generate(**kwargs, return_dict_in_generate=True, output_scores=True)
    prompt = kwargs["input_ids"].shape[1]
    for b in range(out.sequences.shape[0]):
        for t in range(len(out.scores) - 1):
            token = out.sequences[b, prompt + t]
            _ = float(torch.logsumexp(out.scores[t + 1][b].float(), -1) - out.scores[t][b, token].float())


def _table(results: dict[str, Any]) -> str:
    lines = [
        f"model {results['model']} on {results['device']} ({results['dtype']}, torch {results['torch']}, "
        f"{results['threads']} threads), median of {results['repeats']} interleaved rounds",
        f"{'batch':>5} {'tokens':>6} {'plain s':>9} {'guarded s':>10} {'ratio':>6} "
        f"{'kept by capture':>16} {'output_logits':>14}",
    ]
    for c in results["configs"]:
        med = c["median_s"]
        line = (
            f"{c['batch']:>5} {c['new_tokens']:>6} {med['plain']:>9.3f} {med['guarded']:>10.3f} "
            f"{c['ratio_guarded_vs_plain']:>6.3f} ({c['median_per_round_ratio']:.3f} paired) "
            f"{_size(c['capture_bytes_kept']):>16} {_size(c['output_logits_bytes']):>14}"
        )
        if "ratio_reference_vs_plain" in c:
            line += f"  reference {c['ratio_reference_vs_plain']:.2f}x"
        if "extra_peak_gpu_fraction" in c:
            line += f"  extra peak GPU {100 * c['extra_peak_gpu_fraction']:.2f}%"
        lines.append(line)
    return "\n".join(lines)


def _size(n: int) -> str:
    return f"{n / 2**20:.2f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"
