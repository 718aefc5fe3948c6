"""The model fingerprint is bound to the weights, not to a folder name (issue 11, item 10)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from guardrail import Calibration, CalibrationError, Guard
from guardrail.calibration import SCHEMA_VERSION, weights_sha256
from tests.conftest import build_tiny_model
from tests.core import zoo


def save(model: Any, tokenizer: Any, folder: Path) -> Path:
    folder.mkdir(parents=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_two_models_saved_in_folders_of_the_same_name_have_different_fingerprints(tmp_path: Path) -> None:
    tokenizer = zoo.word_tokenizer()
    first = Guard.from_pretrained(save(build_tiny_model(seed=1), tokenizer, tmp_path / "a" / "final"))
    second = Guard.from_pretrained(save(build_tiny_model(seed=2), tokenizer, tmp_path / "b" / "final"))
    assert first.fingerprint.name == second.fingerprint.name == "final"
    assert first.fingerprint.tokenizer_sha256 == second.fingerprint.tokenizer_sha256
    assert first.fingerprint != second.fingerprint
    fitted = Calibration.uncalibrated().model_copy(update={"model": first.fingerprint})
    assert fitted.schema_version == SCHEMA_VERSION == 2
    Guard(first.model, first.tokenizer, calibration=fitted)  # its own model
    with pytest.raises(CalibrationError, match=r"fitted for model 'final' .*weights [0-9a-f]{12}\), not for 'final'"):
        Guard(second.model, second.tokenizer, calibration=fitted)


def test_the_weights_hash_is_stable_and_sensitive(tmp_path: Path) -> None:
    model = build_tiny_model(seed=3)
    digest = weights_sha256(model)
    assert weights_sha256(model) == digest
    reloaded = Guard.from_pretrained(save(model, zoo.word_tokenizer(), tmp_path / "m")).model
    assert weights_sha256(reloaded) == digest  # saving and loading (config paths, versions) changes nothing
    tuned = build_tiny_model(seed=3)
    with torch.no_grad():  # a fine-tune that only touches one matrix of one layer
        tuned.model.layers[1].mlp.down_proj.weight.add_(1e-4)
    assert weights_sha256(tuned) != digest
    assert weights_sha256(build_tiny_model(seed=3).to(torch.bfloat16)) != digest  # the dtype is bound too
    config = build_tiny_model(seed=3)
    config.config.rope_parameters = {**config.config.rope_parameters, "rope_theta": 1234.0}
    assert weights_sha256(config) != digest  # so is the config (same weights, other positions)
    other = build_tiny_model(seed=3)
    other.config.use_cache = False  # a runtime switch is not part of the model
    assert weights_sha256(other) == digest


def test_offloaded_parameters_contribute_their_shape(tmp_path: Path) -> None:
    with torch.device("meta"):
        meta = zoo.FAMILIES["llama"].model(zoo.FAMILIES["llama"].config())
    assert len(weights_sha256(meta)) == 64


@pytest.mark.integration
def test_the_shipped_calibration_is_bound_to_the_bundled_weights(real_guard: Guard) -> None:
    shipped = real_guard.calibration.model
    assert shipped is not None and shipped.weights_sha256 == weights_sha256(real_guard.model)
    assert shipped == real_guard.fingerprint
