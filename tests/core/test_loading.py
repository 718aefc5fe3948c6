"""Local model paths that hold no loadable causal LM fail with a typed error, never a raw one."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import transformers as hf

from guardrail import Calibration, CalibrationError, Guard, InvalidInputError, ModelError
from guardrail.calibration import BUNDLED_CALIBRATIONS
from guardrail.loading import load_local
from tests.conftest import build_tiny_model
from tests.core import zoo


def test_a_missing_path_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="does not exist"):
        load_local(tmp_path / "nowhere")


def test_a_path_the_file_system_cannot_look_up_is_an_input_error() -> None:
    """Bug: a raw OSError (name too long) from ``Path.exists``."""
    with pytest.raises(InvalidInputError, match="cannot be looked up"):
        load_local("a" * 300)


def test_a_device_torch_cannot_use_is_an_input_error(tmp_path: Path) -> None:
    """Bug: ``model.to(device)`` ran outside the loader's checks (a raw RuntimeError)."""
    build_tiny_model().save_pretrained(tmp_path)
    zoo.word_tokenizer().save_pretrained(tmp_path)
    with pytest.raises(InvalidInputError, match="cannot move the model to `device`='bogus'"):
        load_local(tmp_path, device="bogus")


@pytest.mark.integration
def test_a_bundled_model_cache_that_cannot_be_written_is_a_model_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Bug: the one-time de-quantization into an unwritable cache escaped as NotADirectoryError."""
    from guardrail import loading

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("SPILLGUARD_CACHE", str(blocker / "cache"))
    with pytest.raises(ModelError, match="cannot prepare the bundled model in the cache"):
        loading.load_default.__wrapped__()


def test_a_folder_without_a_config_is_refused_with_a_reason(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no config.json"):
        load_local(tmp_path)


def test_a_folder_with_a_config_but_no_weights_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}", encoding="utf-8")
    with pytest.raises(ModelError, match="holds no weights"):
        load_local(tmp_path)


def test_corrupt_weights_are_a_model_error(tmp_path: Path) -> None:
    model = build_tiny_model(seed=1)
    model.save_pretrained(tmp_path)
    zoo.word_tokenizer().save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelError, match="cannot load a causal LM"):
        load_local(tmp_path)


def test_a_checkpoint_that_is_not_a_causal_lm_is_a_model_error(tmp_path: Path) -> None:
    config = hf.DistilBertConfig(vocab_size=32, dim=16, n_layers=1, n_heads=2, hidden_dim=32)
    hf.DistilBertModel(config).save_pretrained(tmp_path)
    zoo.word_tokenizer().save_pretrained(tmp_path)
    config_data = json.loads((tmp_path / "config.json").read_text(encoding="utf-8"))
    assert config_data["model_type"] == "distilbert"
    with pytest.raises(ModelError, match="cannot load a causal LM"):
        Guard.from_pretrained(tmp_path)


def test_a_file_that_is_not_gguf_is_refused(tmp_path: Path) -> None:
    weights = tmp_path / "model.bin"
    weights.write_bytes(b"\0" * 16)
    with pytest.raises(InvalidInputError, match="not a .gguf file"):
        load_local(weights)
    garbage = tmp_path / "model.gguf"
    garbage.write_bytes(b"\x0b\x15" * 500)
    with pytest.raises(ModelError, match="GGUF magic"):
        load_local(garbage)


def test_a_truncated_gguf_is_a_model_error(tmp_path: Path) -> None:
    truncated = tmp_path / "model.gguf"
    truncated.write_bytes(b"GGUF" + struct.pack("<I", 3) + b"\x01")  # magic and version, then nothing
    with pytest.raises(ModelError, match="cannot load a causal LM"):
        load_local(truncated)


@pytest.mark.parametrize("name", BUNDLED_CALIBRATIONS)
def test_every_bundled_calibration_loads_and_names_the_bundled_model(name: str) -> None:
    calibration = Calibration.bundled(name)
    assert calibration.model is not None
    assert calibration.model == Calibration.bundled().model


def test_an_unknown_bundled_calibration_names_the_choices() -> None:
    with pytest.raises(CalibrationError, match=r"`name` must be one of .*'rag'.* got 'ragg'"):
        Calibration.bundled("ragg")


@pytest.mark.parametrize("is_decoder", [False, True])
def test_an_encoder_loaded_as_a_causal_lm_is_scored_only_as_a_decoder(tmp_path: Path, is_decoder: bool) -> None:
    """transformers builds BertLMHeadModel for a BERT checkpoint; without ``is_decoder=True`` its
    attention is bidirectional, and the guard used to score it as if it were causal."""
    tokenizer = zoo.word_tokenizer()
    config = hf.BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=32, is_decoder=is_decoder)  # fmt: skip
    hf.BertLMHeadModel(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    if is_decoder:
        assert Guard.from_pretrained(tmp_path).model.config.is_decoder
    else:
        with pytest.raises(ModelError, match="bidirectional encoder"):
            Guard.from_pretrained(tmp_path)


def _non_causal(name: str, **extra: object) -> object:
    v = zoo.VOCAB
    if name == "cpmant":
        return hf.CpmAntForCausalLM(hf.CpmAntConfig(vocab_size=v, hidden_size=16, dim_ff=32, num_hidden_layers=1,
                                                    num_attention_heads=2, dim_head=8, prompt_length=4))  # fmt: skip
    if name == "xlnet":
        return hf.XLNetLMHeadModel(hf.XLNetConfig(vocab_size=v, d_model=16, n_layer=1, n_head=2, d_inner=32))
    return hf.XLMWithLMHeadModel(hf.XLMConfig(vocab_size=v, emb_dim=16, n_layers=1, n_heads=2, **extra))


@pytest.mark.parametrize("name", ["cpmant", "xlnet", "xlm"])
def test_a_family_whose_forward_sees_later_tokens_is_refused(name: str) -> None:
    """Bug: these were accepted and ``check`` scored each answer token with the tokens after it
    in view (CPM-Ant's logits moved by up to 11.6 when later tokens were added)."""
    model = _non_causal(name).eval()  # type: ignore[attr-defined]
    with pytest.raises(ModelError, match="is not causal"):
        Guard(model, zoo.word_tokenizer())


def test_xlm_built_causal_is_accepted() -> None:
    model = _non_causal("xlm", causal=True).eval()  # type: ignore[attr-defined]
    assert Guard(model, zoo.word_tokenizer()).model is model
