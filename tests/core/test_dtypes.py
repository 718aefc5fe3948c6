"""Half precision: generate and teacher forcing agree within the tolerances of docs/models.md.

In fp32 they agree to float rounding. In bf16 and fp16 the KV-cached steps of ``generate`` and
the single teacher-forced pass multiply differently shaped matrices, so their rounding differs;
the tolerances below are about twice the largest gap measured with ``python -m tests.core.measure
dtypes`` (docs/models.md).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

from tests.core import measure, zoo

TINY_TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 0.02, torch.float16: 0.005}
BUNDLED_TOLERANCE = {torch.bfloat16: 1.0, torch.float16: 0.2}  # nats of spilled energy


@pytest.mark.parametrize("dtype", list(TINY_TOLERANCE), ids=str)
@pytest.mark.parametrize("name", ["llama", "gemma2", "gpt2", "mamba"])
def test_tiny_models_agree_within_the_dtype_tolerance(name: str, dtype: torch.dtype) -> None:
    model = zoo.build(name, dtype=dtype)
    assert next(model.parameters()).dtype == dtype
    tokenizer = zoo.word_tokenizer(pad=zoo.FAMILIES[name].pad_token)
    gaps = measure.dtype_gap(model, tokenizer, measure.TINY_QUESTIONS, 8)
    assert gaps["spilled_energy"] <= TINY_TOLERANCE[dtype], gaps
    assert gaps["logprob"] <= TINY_TOLERANCE[dtype], gaps


@pytest.mark.integration
@pytest.mark.parametrize("dtype", list(BUNDLED_TOLERANCE), ids=str)
def test_the_bundled_model_agrees_within_the_dtype_tolerance(bundled: tuple[Any, Any], dtype: torch.dtype) -> None:
    model, tokenizer = bundled
    half = copy.deepcopy(model).to(dtype)
    gaps = measure.dtype_gap(half, tokenizer, measure.QUESTIONS[:1], 6)
    assert gaps["spilled_energy"] <= BUNDLED_TOLERANCE[dtype], gaps
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the shared model is untouched
