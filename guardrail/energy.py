"""The math of spilled energy: pure, vectorized, no model, no I/O.

Sign convention and units (β = 1, nats), following the paper's released code. With ``z_t`` the
*raw* logit vector of generation step ``t`` (before any logits processor) and ``y_t`` the token
it emitted:

===================  ==========================================  =========================
logit energy         ``E_l(t) = -z_t[y_t]``                       needs step t
marginal energy      ``E_m(t) = -logsumexp(z_{t+1})``             needs step t+1
spilled energy       ``ΔE(t) = logsumexp(z_{t+1}) - z_t[y_t]``    needs steps t and t+1
token log-prob       ``log p_t(y_t) = z_t[y_t] - logsumexp(z_t)`` needs step t
===================  ==========================================  =========================

Identity (tested): ``ΔE(t) = -log p_t(y_t) + logsumexp(z_{t+1}) - logsumexp(z_t)``. No absolute
value is taken. Scaled spilled energy is ``|E_m(t)| · ΔE(t)`` (paper §4.2).

Everything a score needs reduces, per step and sequence, to four numbers: the chosen token's
raw logit, the step's log-partition ``logsumexp(z_t)``, the next step's log-partition and the
step's entropy. :func:`step_statistics` computes the per-step reductions from a logits row on
the model's device; :func:`teacher_forced_statistics` does the same for a whole teacher-forced
sequence; the remaining functions work on the resulting per-token NumPy arrays.
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np
import torch

from guardrail.errors import InvalidInputError

__all__ = [
    "METRICS",
    "POOLINGS",
    "Metric",
    "Pooling",
    "derived_metric",
    "pool",
    "step_statistics",
    "teacher_forced_statistics",
]

_LOG_P_FLOOR = -80.0

Metric = Literal[
    "spilled_energy",
    "scaled_spilled_energy",
    "marginal_energy",
    "logit_energy",
    "logprob",
    "entropy",
]
Pooling = Literal["min", "max", "mean", "last", "sum"]
METRICS: tuple[str, ...] = get_args(Metric)
POOLINGS: tuple[str, ...] = get_args(Pooling)


def step_statistics(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-partition and entropy of raw logits, reduced over the vocabulary in float32.

    Args:
        logits: raw (unprocessed) logits of shape ``(..., vocab)``; any float dtype.
            Entries of ``-inf`` (masked vocabulary slots) are allowed.

    Returns:
        ``(log_partition, entropy)``, each of shape ``(...)`` and dtype float32.
    """
    z = logits.float()
    lse = torch.logsumexp(z, dim=-1)  # (...)
    # Clamping log-probs at -80 keeps exp() out of denormal floats (slow on CPUs) and -inf
    # entries out of 0 * -inf; the dropped mass changes the entropy by < vocab * 80 * e^-80.
    log_p = (z - lse.unsqueeze(-1)).clamp_(min=_LOG_P_FLOOR)  # (..., vocab), a fresh tensor
    return lse, -log_p.exp().mul_(log_p).sum(dim=-1)


def teacher_forced_statistics(logits: torch.Tensor, token_ids: torch.Tensor, start: int) -> dict[str, torch.Tensor]:
    """Per-token statistics of ``token_ids[start:]`` from one teacher-forced forward pass.

    In a forward pass ``logits[i]`` predicts ``token_ids[i + 1]``: token ``i`` was emitted by the
    step whose logits are ``logits[i - 1]``, and its "next step" is ``logits[i]``.

    Args:
        logits: raw logits of shape ``(k, vocab)``: the last ``k`` positions of the sequence,
            ``seq - start + 1 <= k <= seq`` (a forward pass with ``logits_to_keep=k`` computes
            only those; the whole sequence works too).
        token_ids: shape ``(seq,)``, the sequence the logits were computed on.
        start: index of the first scored token; ``1 <= start < seq``.

    Returns:
        float32 tensors of shape ``(seq - start,)``: ``chosen_logit``, ``log_partition``,
        ``next_log_partition`` and ``entropy``.
    """
    seq = token_ids.shape[0]
    if not 1 <= start < seq:
        raise InvalidInputError(f"`start` must be in [1, {seq}), got {start}")
    offset = seq - logits.shape[0]  # positions before the first row of `logits`
    if not 0 <= offset <= start - 1:
        raise InvalidInputError(
            f"`logits` must cover the last {seq - start + 1} positions of {seq}, got {logits.shape[0]}"
        )
    emitting = logits[start - 1 - offset : -1]  # (n, vocab): step that produced each scored token
    chosen = emitting.gather(-1, token_ids[start:].unsqueeze(-1)).squeeze(-1).float()
    lse, entropy = step_statistics(emitting)
    next_lse, _ = step_statistics(logits[-1:])
    return {
        "chosen_logit": chosen,
        "log_partition": lse,
        "next_log_partition": torch.cat([lse[1:], next_lse]),
        "entropy": entropy,
    }


def derived_metric(
    metric: str,
    *,
    chosen_logit: np.ndarray,
    log_partition: np.ndarray,
    next_log_partition: np.ndarray,
    entropy: np.ndarray,
) -> np.ndarray:
    """One per-token metric from the four per-token statistics (all shape ``(n,)``)."""
    values: np.ndarray
    if metric == "spilled_energy":
        values = next_log_partition - chosen_logit
    elif metric == "scaled_spilled_energy":
        values = np.abs(next_log_partition) * (next_log_partition - chosen_logit)
    elif metric == "marginal_energy":
        values = -next_log_partition
    elif metric == "logit_energy":
        values = -chosen_logit
    elif metric == "logprob":
        values = chosen_logit - log_partition
    elif metric == "entropy":
        values = entropy.copy()
    else:
        raise InvalidInputError(f"`metric` must be one of {METRICS}, got {metric!r}")
    return values


def pool(values: np.ndarray, pooling: str) -> float:
    """Reduce the per-token ``values`` of a span (shape ``(n,)``, ``n >= 1``) to one number."""
    if values.ndim != 1 or values.shape[0] == 0:
        raise InvalidInputError(f"`values` must be a non-empty 1-d array, got shape {values.shape}")
    if pooling == "min":
        return float(values.min())
    if pooling == "max":
        return float(values.max())
    if pooling == "mean":
        return float(values.mean())
    if pooling == "last":
        return float(values[-1])
    if pooling == "sum":
        return float(values.sum())
    raise InvalidInputError(f"`pooling` must be one of {POOLINGS}, got {pooling!r}")
