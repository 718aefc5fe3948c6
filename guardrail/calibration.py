"""Calibration: how a verdict turns per-token scores into one number and compares it.

A :class:`Calibration` is a small linear detector over pooled features of the localized span::

    score = bias + Σ_i weight_i · (pool_i(metric_i over span) - center_i) / scale_i

oriented so that **higher means more likely hallucinated**; an answer is hallucinated when
``score > threshold``. One feature with weight -1 is the paper's ΔE-min (a strongly negative
spilled energy on some answer token flags the answer); several features are a logistic
combination. Calibration files are JSON validated by a versioned schema and bound to a model
fingerprint; they are never pickled.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from typing_extensions import Self

from guardrail.energy import Metric, Pooling
from guardrail.errors import CalibrationError, CaptureError, InvalidInputError
from guardrail.grounding import GROUNDING_METRICS, GROUNDING_POOLING, GroundingMetric, span_grounding
from guardrail.localize import LOCALIZERS, Span
from guardrail.scores import TokenScores

__all__ = [
    "BUNDLED_CALIBRATIONS",
    "GROUNDING_ADDED",
    "GROUNDING_VETO",
    "SCHEMA_VERSION",
    "Calibration",
    "Feature",
    "ModelFingerprint",
    "Report",
    "fingerprint",
    "weights_sha256",
]

SCHEMA_VERSION = 2
"""Version 2 binds the model fingerprint to the weights (``weights_sha256``); version 1 files are
refused with the advice to re-calibrate."""

BUNDLED_CALIBRATIONS = ("default", "rag", "loto")
"""Names of the calibrations shipped for the bundled model (:meth:`Calibration.bundled`)."""

_BUNDLED_DIR = Path(__file__).parent / "data"

# Provisional threshold of the uncalibrated default (-ΔE min over the heuristic span), measured
# on the bundled model's answers to world-capital questions; a fitted calibration replaces it.
UNCALIBRATED_THRESHOLD = 1.0

GROUNDING_VETO = 10.0
"""What :meth:`Calibration.with_grounding` adds to the score of an ungrounded answer by default."""
GROUNDING_ADDED = "added (not fitted)"
"""How :meth:`Calibration.with_grounding` marks its report, which was measured without the feature."""


MAX_FEATURES = 64
MAX_FILE_BYTES = 1 << 20
_BOUND = 1e9  # |weight|, |center|, |bias|, |threshold| and scale stay within [-1e9, 1e9]

Bounded = Annotated[float, Field(ge=-_BOUND, le=_BOUND, allow_inf_nan=False)]
_SHA256 = r"^[0-9a-f]{64}$"


class _Frozen(BaseModel):
    """Frozen, strict, finite: every way of building one (code, dict, JSON) validates the same,
    and every failure is a :class:`~guardrail.CalibrationError`."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise CalibrationError(f"invalid {type(self).__name__}:\n{exc}") from None

    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any) -> Self:
        try:
            return super().model_validate(obj, **kwargs)
        except ValidationError as exc:
            raise CalibrationError(f"invalid {cls.__name__}:\n{exc}") from None

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy with ``update`` applied, validated like a new one (pydantic's own skips it)."""
        return type(self).model_validate({**self.model_dump(), **dict(update or {})})

    @classmethod
    def model_validate_json(cls, json_data: str | bytes | bytearray, **kwargs: Any) -> Self:
        try:
            return super().model_validate_json(json_data, **kwargs)
        except ValidationError as exc:
            raise CalibrationError(f"invalid {cls.__name__}:\n{exc}") from None


class Feature(_Frozen):
    """One pooled metric of the span, standardized and weighted (all numbers finite, bounded).

    ``metric`` is a per-token metric of :mod:`guardrail.energy` pooled over the span's tokens, or
    ``"ungrounded"`` (:mod:`guardrail.grounding`: 1 when the span's words are not in the prompt),
    whose pooling is ``"max"``.
    """

    metric: Metric | GroundingMetric
    pooling: Pooling
    weight: Bounded
    center: Bounded = 0.0
    scale: float = Field(default=1.0, ge=1e-9, le=_BOUND, allow_inf_nan=False)

    @model_validator(mode="after")
    def _span_level_metric(self) -> Self:
        if self.metric in GROUNDING_METRICS and self.pooling != GROUNDING_POOLING:
            raise ValueError(
                f"`pooling` of the span-level metric {self.metric!r} must be {GROUNDING_POOLING!r}, "
                f"got {self.pooling!r}"
            )
        if self.metric in GROUNDING_METRICS and not self.weight > 0:
            # Zero would switch the check off, a negative weight would let an ungrounded answer through.
            raise ValueError(
                f"`weight` of {self.metric!r} must be positive (an ungrounded span raises the score), "
                f"got {self.weight!r}"
            )
        return self

    def value(self, scores: TokenScores, span: Span, sources: str | None) -> float:
        """The raw (unstandardized) pooled value of this feature for one span (``"ungrounded"``:
        :func:`guardrail.grounding.span_grounding`, 0 on a whole-answer span)."""
        if self.metric in GROUNDING_METRICS:
            if sources is None:
                raise InvalidInputError(
                    f"the feature {self.describe()} needs the prompt's text (`sources`) to look the span up in"
                )
            return span_grounding(span, sources)[0]
        return scores.pooled(self.metric, self.pooling, span.indices)

    def describe(self) -> str:
        """E.g. ``-1·spilled_energy[min]``."""
        return f"{self.weight:+.3g}·{self.metric}[{self.pooling}]"


class ModelFingerprint(_Frozen):
    """Identifies the model a calibration was fitted for.

    Attributes:
        name: a display name (the folder name by default); it takes part in the comparison.
        vocab_size: rows of the LM head.
        tokenizer_sha256: hash of the tokenizer's vocabulary.
        weights_sha256: hash of the model's config and a sample of its weights (see
            :func:`weights_sha256`). A guard's fingerprint always has it; ``None`` only in a
            fingerprint written by hand, which then matches no guard.
    """

    name: str
    vocab_size: int = Field(gt=0)
    tokenizer_sha256: str = Field(pattern=_SHA256)
    weights_sha256: str | None = Field(default=None, pattern=_SHA256)


class Report(_Frozen):
    """What the calibration measured on its validation split."""

    n: int = Field(gt=0)
    n_hallucinated: int = Field(ge=0)
    auroc: float = Field(ge=0, le=1)
    auroc_low: float = Field(ge=0, le=1)
    auroc_high: float = Field(ge=0, le=1)
    precision: float = Field(ge=0, le=1)
    recall: float = Field(ge=0, le=1)
    flag_rate: float = Field(ge=0, le=1)
    data: str
    f1: float | None = Field(None, ge=0, le=1)
    false_flag_rate: float | None = Field(None, ge=0, le=1)
    selection: str | None = None


class Calibration(_Frozen):
    """Metric(s), pooling, direction, localizer and threshold of a verdict.

    Attributes:
        schema_version: file format version; only :data:`SCHEMA_VERSION` loads.
        model: fingerprint of the model it was fitted for; ``None`` applies to any model.
        localizer: name of the localizer the features were measured on.
        features: at least one weighted pooled metric.
        bias: added to the weighted sum.
        threshold: an answer is hallucinated when its score is above it.
        goal: how the threshold was chosen, e.g. ``"f1"`` or ``"false-flag-rate=0.1"``.
        report: validation measurements; ``None`` when uncalibrated.
    """

    schema_version: Literal[2] = 2
    model: ModelFingerprint | None = None
    localizer: str = "heuristic"
    features: tuple[Feature, ...] = Field(min_length=1, max_length=MAX_FEATURES)
    bias: Bounded = 0.0
    threshold: Bounded
    goal: str = "uncalibrated"
    report: Report | None = None

    @field_validator("localizer")
    @classmethod
    def _known_localizer(cls, value: str) -> str:
        if value not in LOCALIZERS:
            raise ValueError(f"`localizer` must be one of {LOCALIZERS}, got {value!r}")
        return value

    @model_validator(mode="after")
    def _grounding_beside_a_detector(self) -> Self:
        if not self.grounded:
            return self
        if self.localizer == "whole":  # the check skips whole-answer spans: it would never fire
            raise ValueError(
                "a grounding feature needs a localized span, got `localizer` 'whole' "
                "(a whole answer is not looked up in the prompt)"
            )
        if all(f.metric in GROUNDING_METRICS for f in self.features):
            # A span the check cannot look up (the heuristic's whole-answer fallback) would score 0 unread.
            raise ValueError(
                "`features` must hold a raw-logit metric beside the grounding one, got only "
                f"{[f.describe() for f in self.features]}"
            )
        return self

    @classmethod
    def uncalibrated(cls, threshold: float = UNCALIBRATED_THRESHOLD) -> Calibration:
        """The paper's default: ΔE pooled with min over the heuristic span, negated."""
        feature = Feature(metric="spilled_energy", pooling="min", weight=-1.0)
        return cls(features=(feature,), threshold=threshold)

    @classmethod
    def bundled(cls, name: str = "default") -> Calibration:
        """A calibration shipped for the bundled SmolLM2-135M-Instruct.

        ``name`` is one of :data:`BUNDLED_CALIBRATIONS`: ``"default"`` (answers from the model's
        own knowledge; what :meth:`guardrail.Guard.default` uses), ``"rag"`` (answers grounded in
        retrieved passages: context and question in the prompt) or ``"loto"`` (the detector
        chosen by leave-one-task-out). ``docs/calibration.md`` says how each was fitted.
        """
        if name not in BUNDLED_CALIBRATIONS:
            raise CalibrationError(f"`name` must be one of {BUNDLED_CALIBRATIONS}, got {name!r}")
        return cls.load(_BUNDLED_DIR / f"{name}_calibration.json")

    @property
    def grounded(self) -> bool:
        """Whether a feature looks the span up in the prompt (``"ungrounded"``): meant for prompts
        that carry the answer's sources (RAG), not for closed-book questions."""
        return any(f.metric in GROUNDING_METRICS for f in self.features)

    @property
    def can_ground(self) -> bool:
        """Whether :meth:`with_grounding` applies: no grounding feature yet, and a localized span
        (not the whole answer) to look up."""
        return not self.grounded and self.localizer != "whole"

    def with_grounding(self, weight: float = GROUNDING_VETO) -> Calibration:
        """This detector with the grounding feature added: an answer whose span is not in the
        prompt (:func:`guardrail.grounding.ungrounded`) scores ``weight`` more.

        With the default ``weight`` (:data:`GROUNDING_VETO`) and a detector whose score is at
        least ``threshold - weight`` for every answer (the bundled default's score, a negated
        log-likelihood, is never below 0), an ungrounded answer is always flagged: a veto on top
        of the detector, with no fitted parameter. The report is kept and says so.
        """
        if not (isinstance(weight, (int, float)) and not isinstance(weight, bool) and weight > 0):
            raise CalibrationError(f"`weight` must be a positive number (what an ungrounded span adds), got {weight!r}")
        if not self.can_ground:
            why = "already has a grounding feature" if self.grounded else "scores the whole answer"
            raise CalibrationError(
                f"cannot add the grounding feature: the calibration {why} ({self.describe()}); it looks up a "
                "localized span (a name, a number), and a whole answer is rarely copied word for word"
            )
        feature = Feature(metric="ungrounded", pooling=GROUNDING_POOLING, weight=weight)
        report = self.report
        if report is not None:
            note = f"then {feature.describe()} {GROUNDING_ADDED}"
            selection = f"{report.selection}; {note}" if report.selection else note
            report = report.model_copy(update={"selection": selection})
        return self.model_copy(update={"features": (*self.features, feature), "report": report})

    def score(self, scores: TokenScores, span: Span, sources: str | None = None) -> float:
        """The span's score, higher = more likely hallucinated; never NaN or infinite.

        Args:
            scores: the answer's per-token raw-logit statistics.
            span: the localized span (token indices into ``scores`` and its text).
            sources: the prompt's text (:func:`guardrail.grounding.prompt_sources`); needed only
                when :attr:`grounded`.
        """
        total = self.bias
        for f in self.features:
            total += f.weight * (f.value(scores, span, sources) - f.center) / f.scale
        if not math.isfinite(total):
            raise CaptureError(f"the calibrated score is {total!r}: the answer's raw statistics are out of range")
        return total

    def describe(self) -> str:
        """One line: the formula, the localizer and the threshold."""
        terms = " ".join(f.describe() for f in self.features)
        bias = f" {self.bias:+.3g}" if self.bias else ""
        return f"{terms}{bias} over the {self.localizer} span > {self.threshold:.4g} ({self.goal})"

    def check_model(self, actual: ModelFingerprint) -> None:
        """Raise :class:`CalibrationError` when this calibration is for another model (other
        weights, tokenizer, vocabulary or name)."""
        if self.model is not None and self.model != actual:
            raise CalibrationError(
                f"calibration was fitted for model {_describe_model(self.model)}, not for {_describe_model(actual)}; "
                "calibrate this model with `spillguard calibrate`"
            )

    def save(self, path: str | Path) -> None:
        """Write the calibration as indented JSON."""
        Path(path).write_text(self.model_dump_json(indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        """Read and validate a calibration file; every failure is a :class:`CalibrationError`.

        Only a regular file of at most 1 MiB is read (never a FIFO or a device).
        """
        data = _read_json(Path(path))
        version = data.get("schema_version") if isinstance(data, dict) else None
        if version == 1:
            raise CalibrationError(
                f"calibration file {str(path)!r} has schema_version 1, whose model fingerprint does not cover the "
                f"model's weights; re-run `spillguard calibrate` to write a version {SCHEMA_VERSION} file"
            )
        if not isinstance(data, dict) or version != SCHEMA_VERSION:
            raise CalibrationError(
                f"calibration file {str(path)!r} has schema_version {version!r}; "
                f"this spillguard reads version {SCHEMA_VERSION}"
            )
        model = data.get("model")
        if isinstance(model, dict) and "weights_sha256" not in model:
            raise CalibrationError(f"calibration file {str(path)!r}: the model fingerprint has no `weights_sha256`")
        try:
            return cls.model_validate(data)
        except CalibrationError as exc:
            raise CalibrationError(f"invalid calibration file {str(path)!r}: {exc}") from None


def _read_json(path: Path) -> Any:
    try:
        if not path.is_file():
            raise CalibrationError(f"cannot read calibration file {str(path)!r}: not a regular file")
        with path.open("rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise CalibrationError(f"cannot read calibration file {str(path)!r}: {exc}") from exc
    if len(raw) > MAX_FILE_BYTES:
        raise CalibrationError(f"cannot read calibration file {str(path)!r}: larger than {MAX_FILE_BYTES} bytes")
    try:
        return json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # bad UTF-8, bad JSON, an integer too long to convert
        raise CalibrationError(f"cannot read calibration file {str(path)!r}: {exc!r}") from None


def fingerprint(name: str, tokenizer: Any, vocab_size: int, model: Any) -> ModelFingerprint:
    """Fingerprint of a model: its name, vocabulary size, a hash of the tokenizer's vocabulary and
    :func:`weights_sha256` of the model."""
    vocab = json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False)
    digest = hashlib.sha256(vocab.encode("utf-8")).hexdigest()
    return ModelFingerprint(
        name=name, vocab_size=vocab_size, tokenizer_sha256=digest, weights_sha256=weights_sha256(model)
    )


# Config entries that change with the environment (paths, versions, runtime switches), not the model.
_VOLATILE_CONFIG = frozenset(
    {"transformers_version", "architectures", "dtype", "torch_dtype", "use_cache", "return_dict"}
    | {"output_attentions", "output_hidden_states", "attn_implementation"}
)
_SAMPLES_PER_TENSOR = 32


def weights_sha256(model: Any) -> str:
    """SHA-256 over the model's config and a deterministic sample of its weights.

    Hashed: the config's entries that differ from its class defaults (without paths, versions
    and runtime switches, so a transformers upgrade that adds a config entry changes nothing),
    then for every parameter, in order, its shape and dtype and :data:`_SAMPLES_PER_TENSOR`
    values spread evenly over it, read as float32 on the CPU. Parameter names are left out, so
    a module rename between transformers versions keeps the hash. Any fine-tune changes the
    sampled values of the tensors it trains, so two fine-tunes saved in folders of the same name
    differ; the dtype is part of it (scores differ between dtypes). It reads a few thousand
    numbers, so start-up stays fast (measured in docs/models.md). A parameter on the ``meta``
    device (offloaded) contributes its shape and dtype only.
    """
    digest = hashlib.sha256()
    config = getattr(model, "config", None)
    entries = getattr(config, "to_diff_dict", None) or getattr(config, "to_dict", None)
    if callable(entries):
        digest.update(json.dumps(_stable(entries()), sort_keys=True, default=str).encode("utf-8"))
    with torch.no_grad():
        for parameter in model.parameters():
            digest.update(f"{tuple(parameter.shape)}:{parameter.dtype}".encode())
            if parameter.device.type == "meta" or parameter.numel() == 0:
                continue
            flat = torch.linspace(0, parameter.numel() - 1, min(_SAMPLES_PER_TENSOR, parameter.numel())).long()
            picked = parameter[torch.unravel_index(flat.to(parameter.device), parameter.shape)]
            digest.update(picked.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()


def _stable(value: Any) -> Any:
    """``value`` without the volatile config entries (recursively, for sub-configs)."""
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if not str(k).startswith("_") and k not in _VOLATILE_CONFIG}
    return value


def _describe_model(fp: ModelFingerprint) -> str:
    weights = fp.weights_sha256[:12] if fp.weights_sha256 else "not recorded"
    return f"{fp.name!r} (vocab {fp.vocab_size}, tokenizer {fp.tokenizer_sha256[:12]}, weights {weights})"
