"""Capture raw-logit statistics from a Hugging Face causal LM.

Two entry points, one result type (:class:`~guardrail.scores.TokenScores`):

- :func:`generate_with_scores` runs ``model.generate`` with a forward hook on the model that
  sees every step's *raw* logits (before temperature, top-k/top-p, repetition penalty or any
  other processor) and reduces them at once to O(1) numbers per step and sequence. No
  vocabulary-sized row is kept beyond the current step.
- :func:`score_teacher_forced` scores a given answer after a given prompt in one forward pass.

Both agree to float precision on the same text (tested): in ``generate`` the logits of step
``t`` predict ``y_t``; in a forward pass ``logits[i]`` predicts ``ids[i + 1]``.
"""

from __future__ import annotations

import copy
import inspect
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import DynamicCache, GenerationConfig, StoppingCriteriaList

from guardrail.energy import step_statistics, teacher_forced_statistics
from guardrail.errors import CaptureError, InvalidInputError, ModelError, NonFiniteLogitsError
from guardrail.locks import model_lock
from guardrail.scores import TokenScores, TokenStep
from guardrail.streaming import Cancelled

__all__ = ["answer_lengths", "generate_with_scores", "model_device", "score_teacher_forced"]

# Decoding modes in which no single raw-logit row belongs to each emitted token, or that load code.
_UNSUPPORTED = {
    "num_beams": "beam search keeps several hypotheses per step",
    "num_beam_groups": "group beam search keeps several hypotheses per step",
    "num_return_sequences": "several sequences per prompt are not one answer per row",
    "penalty_alpha": "contrastive search re-ranks candidates with hidden states",
    "dola_layers": "DoLa decoding contrasts logits of several layers",
    "assistant_model": "assisted decoding verifies several tokens per forward pass",
    "assistant_early_exit": "self-speculative decoding verifies several tokens per forward pass",
    "prompt_lookup_num_tokens": "prompt-lookup decoding verifies several tokens per pass",
    "custom_generate": "a custom generation loop (hub or local code) is not captured",
    "trust_remote_code": "remote code is never run",
}
_NEUTRAL = {"num_beams": 1, "num_beam_groups": 1, "num_return_sequences": 1}


@dataclass
class _RawLogitRecorder:
    """Forward hook: per step, the log-partition and entropy of the raw last-position logits,
    and the raw logit of the token chosen at the previous step (read off this step's input)."""

    log_partition: list[torch.Tensor] = field(default_factory=list)  # each (batch,)
    entropy: list[torch.Tensor] = field(default_factory=list)  # each (batch,)
    chosen_logit: list[torch.Tensor] = field(default_factory=list)  # each (batch,)
    previous: torch.Tensor | None = None  # (batch, vocab), raw logits of the last step
    listener: Callable[[TokenStep], None] | None = None  # batch 1 only: each token, one late

    def __call__(self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        logits = getattr(output, "logits", None)
        if not isinstance(logits, torch.Tensor):
            raise ModelError(
                f"{type(module).__name__} returned no `logits` from its forward pass; "
                "spillguard needs a causal LM with an LM head (e.g. AutoModelForCausalLM)"
            )
        row = logits[:, -1, :]  # (batch, vocab), raw
        lse, ent = step_statistics(row)
        if self.previous is not None:
            fed = kwargs.get("input_ids", args[0] if args else None)
            if not isinstance(fed, torch.Tensor):
                raise CaptureError("decoding step received no `input_ids`; cannot align tokens")
            self.chosen_logit.append(_gather(self.previous, fed[:, -1]))
            if self.listener is not None:
                self._notify(int(fed[0, -1]), float(lse[0]))
        self.log_partition.append(lse)
        self.entropy.append(ent)
        self.previous = row.detach().clone()

    def _notify(self, token_id: int, next_lse: float) -> None:
        assert self.listener is not None
        self.listener(
            TokenStep(
                index=len(self.chosen_logit) - 1,
                token_id=token_id,
                chosen_logit=float(self.chosen_logit[-1][0]),
                log_partition=float(self.log_partition[-1][0]),
                next_log_partition=next_lse,
                entropy=float(self.entropy[-1][0]),
            )
        )

    def raise_if_non_finite(self) -> None:
        """Raise :class:`NonFiniteLogitsError` if a step's raw logits held NaN or inf."""
        if self.log_partition and not bool(torch.isfinite(torch.stack(self.log_partition)).all()):
            raise NonFiniteLogitsError(
                "raw logits are NaN or inf during generation; no score can be computed "
                "(check the model's dtype and weights)"
            )

    def stacked(self, last_tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-step statistics as ``(batch, steps)`` float32 tensors."""
        if self.previous is None:
            raise CaptureError("the model's forward hook never ran during generate()")
        chosen = [*self.chosen_logit, _gather(self.previous, last_tokens)]
        return {
            "chosen_logit": torch.stack(chosen, dim=1),
            "log_partition": torch.stack(self.log_partition, dim=1),
            "entropy": torch.stack(self.entropy, dim=1),
        }


def _gather(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """``logits[b, tokens[b]]`` as float32, shape ``(batch,)``."""
    return logits.gather(-1, tokens.to(logits.device).unsqueeze(-1)).squeeze(-1).float()


def answer_lengths(generated: torch.Tensor, eos_token_ids: Sequence[int], pad_token_id: int | None) -> torch.Tensor:
    """Number of answer tokens per row of ``generated`` (shape ``(batch, steps)``).

    A row's answer stops before its first EOS token and before the run of padding that
    ``generate`` appends once a row has finished (a stop string, say). Returns ``(batch,)`` int64.
    """
    steps = generated.shape[1]
    full = torch.full((generated.shape[0],), steps, dtype=torch.long, device=generated.device)
    eos = torch.isin(generated, torch.tensor(list(eos_token_ids), device=generated.device))
    first_eos = torch.where(eos.any(1), eos.long().argmax(1), full)
    if pad_token_id is None:
        return first_eos
    content = (generated != pad_token_id).long()
    trailing_pad = content.flip(1).argmax(1)  # pads after the last non-pad token
    end = torch.where(content.any(1), steps - trailing_pad, torch.zeros_like(full))
    return torch.minimum(first_eos, end)


def generate_with_scores(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    eos_token_ids: Sequence[int],
    pad_token_id: int | None,
    on_step: Callable[[TokenStep], None] | None = None,
    stop: threading.Event | None = None,
    **generate_kwargs: Any,
) -> tuple[list[TokenScores], torch.Tensor]:
    """Generate and score every answer token from raw logits.

    Args:
        model: a loaded Hugging Face causal LM (anything with ``generate`` whose forward returns
            ``logits``).
        input_ids: ``(batch, prompt_len)`` left-padded prompt ids.
        attention_mask: ``(batch, prompt_len)``, 0 on padding.
        eos_token_ids: ids that end an answer (excluded from the answer's tokens).
        pad_token_id: id ``generate`` pads finished rows with.
        on_step: called with each answer token's :class:`TokenStep` as soon as the following
            step has run (batch size 1 only); the last token arrives only in the result.
        stop: once set (from any thread), generation stops at the next token.
        **generate_kwargs: passed to ``model.generate`` (sampling, ``max_new_tokens``,
            ``stop_strings`` with ``tokenizer``, processors...). Every decoding mode that does
            not emit one token per raw-logit row (beam, contrastive, DoLa, assisted, custom
            loops), set here or in the model's generation config, is refused.

    Returns:
        ``(scores, generated)``: one :class:`TokenScores` per row (padding and EOS never enter
        it) and the ``(batch, steps)`` generated ids.
    """
    config = _generation_config(model, generate_kwargs)
    if on_step is not None and input_ids.shape[0] != 1:
        raise InvalidInputError(f"`on_step` needs a batch of 1, got {input_ids.shape[0]} rows")
    if stop is not None:
        criteria = StoppingCriteriaList([*generate_kwargs.pop("stopping_criteria", []), Cancelled(stop)])
        generate_kwargs["stopping_criteria"] = criteria
    recorder = _RawLogitRecorder(listener=on_step)
    with model_lock(model):
        handle = model.register_forward_hook(recorder, with_kwargs=True)
        try:
            with torch.inference_mode():
                out = model.generate(
                    input_ids=input_ids,
                    attention_mask=attention_mask,
                    generation_config=config,
                    return_dict_in_generate=True,
                    pad_token_id=pad_token_id,
                    **generate_kwargs,
                )
        except RuntimeError as exc:  # sampling from NaN/inf logits fails inside torch
            recorder.raise_if_non_finite()
            raise CaptureError(f"generation failed: {exc}") from exc
        finally:
            handle.remove()
        generated = out.sequences[:, input_ids.shape[1] :]  # (batch, steps)
        stats = recorder.stacked(generated[:, -1])
        if stats["log_partition"].shape[1] != generated.shape[1]:
            raise CaptureError(
                f"saw {stats['log_partition'].shape[1]} forward steps for {generated.shape[1]} "
                "generated tokens; the decoding strategy does not run one step per token"
            )
        lengths = answer_lengths(generated, eos_token_ids, pad_token_id)
        needs_last = bool((lengths == generated.shape[1]).any())
        stats["next_log_partition"] = _next_log_partition(
            model, out, attention_mask, stats["log_partition"], needs_last=needs_last
        )
    return _split_rows(generated, stats, lengths), generated


def _generation_config(model: Any, kwargs: dict[str, Any]) -> Any:
    """A copy of the model's generation config with every unsupported mode checked off.

    A mode asked for in ``kwargs`` or set in the model's own config is refused; the copy sets
    the neutral values explicitly. The model's config object is never modified.
    """
    config = copy.deepcopy(getattr(model, "generation_config", None) or GenerationConfig())  # type: ignore[no-untyped-call]
    for name, why in _UNSUPPORTED.items():
        sources = (("", kwargs.get(name)), (" (set in the model's generation config)", getattr(config, name, None)))
        for where, value in sources:
            if not _is_off(name, value):
                raise InvalidInputError(
                    f"`{name}`={value!r} is not supported: {why}, so no single raw-logit row belongs to each "
                    f"emitted token{where}"
                )
        if name in _NEUTRAL and hasattr(config, name):
            setattr(config, name, _NEUTRAL[name])
    return config


def _is_off(name: str, value: object) -> bool:
    return value is None or value is False or value == _NEUTRAL.get(name) or (name == "penalty_alpha" and value == 0)


def _next_log_partition(
    model: Any,
    out: Any,
    attention_mask: torch.Tensor,
    log_partition: torch.Tensor,
    *,
    needs_last: bool,
) -> torch.Tensor:
    """``logsumexp(z_{t+1})`` for every step, shape ``(batch, steps)``.

    Steps ``0..T-2`` take it from the following step. The last step has no following step
    inside ``generate``; when some answer ends on it (``needs_last``), one more forward step
    over the KV cache supplies it. Otherwise that column is NaN and lies outside every answer.
    """
    batch = log_partition.shape[0]
    if not needs_last:
        last = torch.full((batch, 1), float("nan"), device=log_partition.device)
        return torch.cat([log_partition[:, 1:], last], dim=1)
    steps = out.sequences.shape[1] - attention_mask.shape[1]
    mask = torch.cat([attention_mask, attention_mask.new_ones(batch, steps)], dim=1)
    positions = mask.long().cumsum(-1) - 1  # left padding shifts positions, as in generate
    cache, cache_arg = _generation_cache(model, out)
    with torch.inference_mode():
        if cache is None:
            logits = model(input_ids=out.sequences, attention_mask=mask, **_last_logits_only(model, 1)).logits
        else:
            length = mask.shape[1]
            logits = model(
                input_ids=out.sequences[:, -1:],
                attention_mask=mask,
                position_ids=positions[:, -1:],
                cache_position=torch.arange(length - 1, length, device=mask.device),
                **{cache_arg: cache},
            ).logits
    last, _ = step_statistics(logits[:, -1, :])
    return torch.cat([log_partition[:, 1:], last.unsqueeze(1)], dim=1)


def _generation_cache(model: Any, out: Any) -> tuple[Any, str]:
    """The KV cache ``generate`` returned and the forward argument that takes it.

    transformers 5.24 renamed ``past_key_values`` to ``cache`` (the old name warns). Only a
    dynamic cache is extended by one step: a static or sliding-window cache has no room past
    ``max_new_tokens``, so the last step is recomputed without it (``None``).
    """
    parameters = inspect.signature(model.forward).parameters
    name = "cache" if "cache" in parameters else "past_key_values"
    fields = out.keys() if hasattr(out, "keys") else ()
    value = next((out[k] for k in ("cache", "past_key_values") if k in fields), None)
    return (value if type(value) is DynamicCache else None), name


def _last_logits_only(model: Any, count: int) -> dict[str, int]:
    """``logits_to_keep=count`` where the model's forward takes it (no vocabulary-sized rows for
    positions no score needs)."""
    return {"logits_to_keep": count} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}


def _split_rows(generated: torch.Tensor, stats: dict[str, torch.Tensor], lengths: torch.Tensor) -> list[TokenScores]:
    """One :class:`TokenScores` per row, cut to that row's answer length (one host copy)."""
    names = list(stats)
    host = torch.stack([stats[n] for n in names]).cpu().numpy()  # (4, batch, steps)
    ids = generated.cpu().numpy()
    rows = []
    for b, n in enumerate(lengths.tolist()):
        rows.append(TokenScores(ids[b, :n], **{k: host[i, b, :n] for i, k in enumerate(names)}))
    return rows


def score_teacher_forced(model: Any, prompt_ids: torch.Tensor, answer_ids: torch.Tensor) -> TokenScores:
    """Score a given answer after a given prompt with one forward pass.

    Args:
        model: a loaded Hugging Face causal LM.
        prompt_ids: ``(prompt_len,)`` ids, ``prompt_len >= 1``.
        answer_ids: ``(n,)`` ids of the answer, ``n >= 1``.

    Returns:
        :class:`TokenScores` of the ``n`` answer tokens, from raw logits.
    """
    if prompt_ids.ndim != 1 or prompt_ids.shape[0] == 0:
        raise InvalidInputError(f"`prompt_ids` must be a non-empty 1-d tensor, got {tuple(prompt_ids.shape)}")
    if answer_ids.ndim != 1 or answer_ids.shape[0] == 0:
        raise InvalidInputError(f"`answer_ids` must be a non-empty 1-d tensor, got {tuple(answer_ids.shape)}")
    ids = torch.cat([prompt_ids, answer_ids]).to(model_device(model))
    with model_lock(model), torch.inference_mode():
        output = model(input_ids=ids.unsqueeze(0), **_last_logits_only(model, answer_ids.shape[0] + 1))
    logits = getattr(output, "logits", None)
    if not isinstance(logits, torch.Tensor):
        raise ModelError(f"{type(model).__name__} returned no `logits`; need a causal LM")
    stats = teacher_forced_statistics(logits[0], ids, prompt_ids.shape[0])
    return TokenScores(answer_ids.cpu().numpy(), **{k: v.cpu().numpy() for k, v in stats.items()})


def model_device(model: Any) -> torch.device:
    """The device of ``model``'s parameters (CPU when the model does not say)."""
    device = getattr(model, "device", None)
    return device if isinstance(device, torch.device) else torch.device("cpu")
