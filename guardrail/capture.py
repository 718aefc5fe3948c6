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
from transformers import DynamicCache, GenerationConfig, StoppingCriteria, StoppingCriteriaList, StopStringCriteria
from transformers.generation.configuration_utils import GenerationMode

from guardrail.energy import step_statistics, teacher_forced_statistics
from guardrail.errors import CaptureError, InvalidInputError, ModelError, NonFiniteLogitsError, SpillguardError
from guardrail.locks import model_lock
from guardrail.prompts import GENERATION_OPTIONS
from guardrail.scores import TokenScores, TokenStep
from guardrail.streaming import Cancelled

__all__ = [
    "NO_LEFT_PADDING",
    "answer_lengths",
    "check_generate",
    "generate_with_scores",
    "honours_left_padding",
    "model_device",
    "score_teacher_forced",
    "stop_string_criteria",
]

# Decoding modes in which no single raw-logit row belongs to each emitted token, or that load code.
_UNSUPPORTED = {
    "num_beams": "beam search keeps several hypotheses per step",
    "num_beam_groups": "group beam search keeps several hypotheses per step",
    "num_return_sequences": "several sequences per prompt are not one answer per row",
    "penalty_alpha": "contrastive search re-ranks candidates with hidden states",
    "dola_layers": "DoLa decoding contrasts logits of several layers",
    "constraints": "constrained beam search keeps several hypotheses per step",
    "force_words_ids": "constrained beam search keeps several hypotheses per step",
    "assistant_model": "assisted decoding verifies several tokens per forward pass",
    "assistant_early_exit": "self-speculative decoding verifies several tokens per forward pass",
    "prompt_lookup_num_tokens": "prompt-lookup decoding verifies several tokens per forward pass",
    "use_mtp": "multi-token prediction proposes several tokens per forward pass",
    "guidance_scale": "classifier-free guidance runs a second forward pass per step",
    "prefill_chunk_size": "chunked prefill runs several forward passes before the first token",
    "custom_generate": "a custom generation loop (hub or local code) is not captured",
    "trust_remote_code": "remote code is never run",
}
_NEUTRAL: dict[str, object] = {
    "num_beams": 1,
    "num_beam_groups": 1,
    "num_return_sequences": 1,
    "penalty_alpha": 0,
    "guidance_scale": 1,
}
_OWNED = frozenset({"inputs", "input_ids", "attention_mask", "generation_config", "return_dict_in_generate"})
NO_LEFT_PADDING = frozenset({"rwkv"})
"""Model types whose forward pass ignores the attention mask, so a left-padded batch row would not
score like the same prompt alone: the capture refuses padded batches for them and the guard
batches only prompts of one length (tests/core/test_model_matrix.py checks this list)."""


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
    config, extra = _generation_config(model, generate_kwargs, pad_token_id)
    config.eos_token_id = list(eos_token_ids)  # stop where the scored answer ends, at any of them
    if on_step is not None and input_ids.shape[0] != 1:
        raise InvalidInputError(f"`on_step` needs a batch of 1, got {input_ids.shape[0]} rows")
    if input_ids.shape[0] > 1 and not honours_left_padding(model) and not bool(attention_mask.all()):
        raise ModelError(
            f"{type(model).__name__} does not honour left padding (its attention mask), so a padded batch row would "
            "not score like the same prompt alone; generate rows of different lengths one at a time"
        )
    if stop is not None:
        extra["stopping_criteria"] = StoppingCriteriaList([*extra.pop("stopping_criteria", []), Cancelled(stop)])
    recorder = _RawLogitRecorder(listener=on_step)
    with model_lock(model):
        handle = model.register_forward_hook(recorder, with_kwargs=True)
        try:
            with torch.inference_mode():
                out = model.generate(
                    input_ids=input_ids, attention_mask=attention_mask, generation_config=config, **extra
                )
        except SpillguardError:
            raise
        except Exception as exc:  # sampling from NaN/inf logits fails inside torch; settings generate refuses
            recorder.raise_if_non_finite()
            raise CaptureError(f"generation failed: {type(exc).__name__}: {exc}") from exc
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


def honours_left_padding(model: Any) -> bool:
    """Whether ``model``'s forward pass honours left padding (see :data:`NO_LEFT_PADDING`)."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    return model_type not in NO_LEFT_PADDING and "attention_mask" in inspect.signature(model.forward).parameters


def check_generate(model: Any) -> None:
    """Refuse a model whose own generation settings cannot be captured, before any work.

    Raises :class:`ModelError` when ``model.generate`` is not the standard Hugging Face loop
    (``from_pretrained(..., trust_remote_code=True)`` replaces it with a repository's
    ``custom_generate/generate.py``, whose steps the capture cannot follow), and
    :class:`InvalidInputError` when the model's generation config asks for a decoding mode that
    does not emit one token per raw-logit row (beam search, contrastive search, ...).
    """
    _generation_config(model, {}, None)


def stop_string_criteria(tokenizer: Any, strings: Sequence[str]) -> StoppingCriteria:
    """A stopping criterion for ``strings`` (what ``generate(stop_strings=...)`` builds), built before
    any generation so that a tokenizer it cannot handle is an :class:`InvalidInputError`."""
    try:
        return StopStringCriteria(tokenizer=tokenizer, stop_strings=list(strings))
    except Exception as exc:  # transformers raises ValueError, KeyError, ... on vocabularies it cannot read
        raise InvalidInputError(
            f"`stop_strings`={list(strings)!r} cannot be matched with this tokenizer ({type(tokenizer).__name__}): "
            f"{type(exc).__name__}: {exc}"
        ) from None


def _generation_config(model: Any, kwargs: dict[str, Any], pad_token_id: int | None) -> tuple[Any, dict[str, Any]]:
    """A validated copy of the model's generation config with ``kwargs`` applied, and the
    keyword arguments that are not generation options (streamer, stopping criteria, ...).

    Every unsupported mode, asked for in ``kwargs`` or set in the model's own config, is refused
    before any work; the model's config object is never modified.
    """
    if "generate" in vars(model):
        raise ModelError(
            f"`model.generate` of {type(model).__name__} was replaced on the instance (a `custom_generate` loaded "
            "with trust_remote_code?); spillguard captures only the standard generation loop"
        )
    owned = sorted(set(kwargs) & _OWNED)
    if owned:
        raise InvalidInputError(
            f"{owned} are set by the capture (the model's generation config with the options applied); "
            "pass decoding options as keyword arguments"
        )
    for name in set(kwargs) & set(GENERATION_OPTIONS):  # the guard's own checks of the options it knows
        GENERATION_OPTIONS[name](name, kwargs[name])
    config = copy.deepcopy(getattr(model, "generation_config", None) or GenerationConfig())  # type: ignore[no-untyped-call]
    for name, why in _UNSUPPORTED.items():
        sources = (("", kwargs.get(name)), (" (set in the model's generation config)", getattr(config, name, None)))
        for where, value in sources:
            if not _is_off(name, value):
                raise InvalidInputError(
                    f"`{name}`={value!r} is not supported: {why}, so no single raw-logit row belongs to each "
                    f"emitted token{where}"
                )
    for where, value in (("", kwargs.get("cache_implementation")), (" (model)", config.cache_implementation)):
        if value == "paged":
            raise InvalidInputError(
                f"`cache_implementation`='paged'{where} switches to continuous batching, which is not captured"
            )
    try:
        extra = config.update(**kwargs)
        config.return_dict_in_generate = True
        config.pad_token_id = pad_token_id
        config.validate()
    except ValueError as exc:
        raise InvalidInputError(f"the decoding options are inconsistent: {exc}") from None
    mode = config.get_generation_mode()
    if mode not in (GenerationMode.GREEDY_SEARCH, GenerationMode.SAMPLE):
        raise InvalidInputError(f"decoding mode {mode.value!r} does not emit one token per raw-logit row")
    return config, extra


def _is_off(name: str, value: object) -> bool:
    return value is None or value is False or value == _NEUTRAL.get(name)


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
    inside ``generate``; when some answer ends on it (``needs_last``), one more decoding step
    supplies it, with the inputs the model's own ``prepare_inputs_for_generation`` builds (as
    ``generate`` would for its next step). Otherwise that column is NaN and lies outside every
    answer.
    """
    batch = log_partition.shape[0]
    if not needs_last:
        last = torch.full((batch, 1), float("nan"), device=log_partition.device)
        return torch.cat([log_partition[:, 1:], last], dim=1)
    steps = out.sequences.shape[1] - attention_mask.shape[1]
    mask = torch.cat([attention_mask, attention_mask.new_ones(batch, steps)], dim=1)
    with torch.inference_mode():
        logits = model(**_step_inputs(model, out.sequences, mask, _generation_cache(out))).logits
    last, _ = step_statistics(logits[:, -1, :])
    return torch.cat([log_partition[:, 1:], last.unsqueeze(1)], dim=1)


def _generation_cache(out: Any) -> Any:
    """The KV cache ``generate`` returned, when it can be extended by one step, else ``None``.

    Only a :class:`~transformers.DynamicCache` (which also holds sliding-window and recurrent
    layers in transformers 5) is extended: a static cache has no room past ``max_new_tokens``,
    and a model-specific state (RWKV's) has no common interface, so the last step is then
    recomputed over the whole sequence.
    """
    fields = out.keys() if hasattr(out, "keys") else ()
    value = next((out[k] for k in ("cache", "past_key_values") if k in fields), None)
    return value if type(value) is DynamicCache else None


def _step_inputs(model: Any, sequences: torch.Tensor, mask: torch.Tensor, cache: Any) -> dict[str, Any]:
    """Forward inputs of the decoding step after ``sequences`` (``(batch, length)``, ``mask`` alike).

    Built by the model's ``prepare_inputs_for_generation`` from the same mask and position ids as
    ``generate`` uses, so model-specific rules apply (Mamba drops the mask on cached steps, ...);
    a recomputation without cache keeps only the last position's logits.
    """
    named = inspect.signature(model.forward).parameters
    extra: dict[str, Any] = {}
    if "position_ids" in named:  # left padding shifts positions, as in generate
        extra["position_ids"] = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)
    inputs: dict[str, Any] = model.prepare_inputs_for_generation(
        sequences,
        next_sequence_length=None if cache is None else 1,
        cache=cache,
        attention_mask=mask,
        use_cache=cache is not None,
        **extra,
    )
    if cache is None:
        inputs.update(_last_logits_only(model, 1))
    return inputs


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
