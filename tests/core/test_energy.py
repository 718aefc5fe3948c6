"""The math of docs/concepts.md: identities, alignment and pooling, on synthetic tensors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from guardrail.energy import METRICS, POOLINGS, derived_metric, pool, step_statistics, teacher_forced_statistics
from guardrail.errors import InvalidInputError

finite = st.floats(min_value=-30, max_value=30, allow_nan=False, allow_infinity=False, width=32)


@st.composite
def sequences(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Random raw logits (seq, vocab), the token ids they score, and a start index."""
    seq = draw(st.integers(2, 8))
    vocab = draw(st.integers(2, 12))
    logits = torch.from_numpy(draw(arrays(np.float32, (seq, vocab), elements=finite)))
    ids = torch.tensor(draw(st.lists(st.integers(0, vocab - 1), min_size=seq, max_size=seq)))
    start = draw(st.integers(1, seq - 1))
    return logits, ids, start


@settings(max_examples=150, deadline=None)
@given(sequences())
def test_spilled_energy_identity(case: tuple[torch.Tensor, torch.Tensor, int]) -> None:
    """ΔE(t) = -log p_t(y_t) + LSE(z_{t+1}) - LSE(z_t)."""
    logits, ids, start = case
    stats = {k: v.double().numpy() for k, v in teacher_forced_statistics(logits, ids, start).items()}
    spilled = derived_metric("spilled_energy", **stats)
    logprob = derived_metric("logprob", **stats)
    expected = -logprob + stats["next_log_partition"] - stats["log_partition"]
    np.testing.assert_allclose(spilled, expected, atol=1e-4)


@settings(max_examples=150, deadline=None)
@given(sequences())
def test_teacher_forced_alignment(case: tuple[torch.Tensor, torch.Tensor, int]) -> None:
    """logits[i] predicts ids[i+1]: token i is scored by row i-1, its next step is row i."""
    logits, ids, start = case
    stats = teacher_forced_statistics(logits, ids, start)
    for k, i in enumerate(range(start, len(ids))):
        assert stats["chosen_logit"][k] == pytest.approx(float(logits[i - 1, ids[i]]))
        assert stats["log_partition"][k] == pytest.approx(float(torch.logsumexp(logits[i - 1], 0)), abs=1e-5)
        assert stats["next_log_partition"][k] == pytest.approx(float(torch.logsumexp(logits[i], 0)), abs=1e-5)


@settings(max_examples=100, deadline=None)
@given(arrays(np.float32, (3, 7), elements=finite), st.floats(-20, 20))
def test_logprob_is_shift_invariant_but_spilled_energy_is_not(z: np.ndarray, shift: float) -> None:
    """Softmax ignores a constant offset of one step's logits; spilled energy sees it."""
    logits = torch.from_numpy(z)
    ids = torch.tensor([0, 3, 5])
    shifted = logits.clone()
    shifted[1] += shift  # the step after token 1 and emitting token 2
    a = {k: v.double().numpy() for k, v in teacher_forced_statistics(logits, ids, 1).items()}
    b = {k: v.double().numpy() for k, v in teacher_forced_statistics(shifted, ids, 1).items()}
    np.testing.assert_allclose(derived_metric("logprob", **a), derived_metric("logprob", **b), atol=1e-3)
    delta = derived_metric("spilled_energy", **b) - derived_metric("spilled_energy", **a)
    np.testing.assert_allclose(delta, [shift, -shift], atol=1e-3)


def test_step_statistics_entropy_and_masked_vocabulary() -> None:
    uniform = torch.zeros(2, 8)
    lse, entropy = step_statistics(uniform)
    assert torch.allclose(lse, torch.full((2,), math.log(8)))
    assert torch.allclose(entropy, torch.full((2,), math.log(8)))
    masked = torch.tensor([[0.0, 0.0, float("-inf"), float("-inf")]])
    lse, entropy = step_statistics(masked)
    assert torch.isfinite(entropy).all() and entropy.item() == pytest.approx(math.log(2))


def test_step_statistics_reduces_in_float32() -> None:
    logits = torch.randn(3, 50).to(torch.bfloat16)
    lse, entropy = step_statistics(logits)
    assert lse.dtype == entropy.dtype == torch.float32
    assert torch.allclose(lse, torch.logsumexp(logits.float(), -1))


def test_confident_token_has_lower_logit_energy_than_a_flat_step() -> None:
    stats = dict(
        chosen_logit=np.array([10.0, 1.0]),
        log_partition=np.array([10.1, 3.0]),
        next_log_partition=np.array([5.0, 5.0]),
        entropy=np.array([0.1, 2.0]),
    )
    energy = derived_metric("logit_energy", **stats)
    assert energy[0] < energy[1]
    np.testing.assert_allclose(derived_metric("spilled_energy", **stats), [-5.0, 4.0])
    np.testing.assert_allclose(derived_metric("marginal_energy", **stats), [-5.0, -5.0])
    np.testing.assert_allclose(derived_metric("scaled_spilled_energy", **stats), [-25.0, 20.0])


@given(arrays(np.float64, st.integers(1, 10), elements=st.floats(-50, 50)))
def test_pooling(values: np.ndarray) -> None:
    assert pool(values, "min") == values.min()
    assert pool(values, "max") == values.max()
    assert pool(values, "mean") == pytest.approx(values.mean())
    assert pool(values, "last") == values[-1]
    assert pool(values, "sum") == pytest.approx(len(values) * pool(values, "mean"))
    assert pool(values, "min") - 1e-9 <= pool(values, "mean") <= pool(values, "max") + 1e-9


def test_unknown_names_and_empty_spans_are_errors() -> None:
    stats = {k: np.zeros(2) for k in ("chosen_logit", "log_partition", "next_log_partition", "entropy")}
    with pytest.raises(InvalidInputError, match="`metric`.*'energy'"):
        derived_metric("energy", **stats)
    with pytest.raises(InvalidInputError, match="`pooling`.*'median'"):
        pool(np.ones(3), "median")
    with pytest.raises(InvalidInputError, match="non-empty"):
        pool(np.ones(0), "min")
    with pytest.raises(InvalidInputError, match="`start`"):
        teacher_forced_statistics(torch.zeros(3, 4), torch.zeros(3, dtype=torch.long), 0)
    assert set(METRICS) >= {"spilled_energy", "logprob"} and "min" in POOLINGS
