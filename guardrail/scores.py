"""Per-token scores of one answer: a frozen value with named metrics and reductions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from guardrail.energy import METRICS, derived_metric, pool
from guardrail.errors import InvalidInputError, NonFiniteLogitsError

__all__ = ["TokenScores", "TokenStep"]

_STATS = ("chosen_logit", "log_partition", "next_log_partition", "entropy")


def _frozen(values: Any) -> np.ndarray:
    array = np.array(values, dtype=np.float64)
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False)
class TokenScores:
    """Raw-logit statistics of the ``n`` tokens of one answer, in generation order.

    The four stored arrays have shape ``(n,)`` and come from *raw* logits (never processed
    scores). Every metric of :data:`guardrail.energy.METRICS` derives from them; see
    :mod:`guardrail.energy` for the definitions and the sign convention.

    Attributes:
        token_ids: ``(n,)`` int64, the answer's token ids (no prompt, no terminating EOS).
        chosen_logit: ``z_t[y_t]``, raw logit of each emitted token.
        log_partition: ``logsumexp(z_t)`` of the step that emitted each token.
        next_log_partition: ``logsumexp(z_{t+1})``, the step after each token.
        entropy: entropy (nats) of ``softmax(z_t)``.
    """

    token_ids: np.ndarray
    chosen_logit: np.ndarray
    log_partition: np.ndarray
    next_log_partition: np.ndarray
    entropy: np.ndarray

    def __post_init__(self) -> None:
        ids = np.array(self.token_ids, dtype=np.int64)
        ids.setflags(write=False)
        object.__setattr__(self, "token_ids", ids)
        for name in _STATS:
            array = _frozen(getattr(self, name))
            if array.shape != ids.shape:
                raise InvalidInputError(f"`{name}` must have shape {ids.shape} like `token_ids`, got {array.shape}")
            object.__setattr__(self, name, array)
        bad = ~np.isfinite(np.stack([getattr(self, n) for n in _STATS[:3]]))
        if bad.any():
            positions = sorted({int(i) for i in np.nonzero(bad)[1]})
            raise NonFiniteLogitsError(
                f"raw logits are NaN or inf at answer token positions {positions}; "
                "no score can be computed (check the model's dtype and weights)"
            )

    def __len__(self) -> int:
        return int(self.token_ids.shape[0])

    @property
    def spilled_energy(self) -> np.ndarray:
        """``ΔE(t) = logsumexp(z_{t+1}) - z_t[y_t]``, shape ``(n,)``."""
        return self.metric("spilled_energy")

    @property
    def logit_energy(self) -> np.ndarray:
        """``E_l(t) = -z_t[y_t]``, shape ``(n,)``."""
        return self.metric("logit_energy")

    @property
    def marginal_energy(self) -> np.ndarray:
        """``E_m(t) = -logsumexp(z_{t+1})``, shape ``(n,)``."""
        return self.metric("marginal_energy")

    @property
    def logprob(self) -> np.ndarray:
        """``log p_t(y_t)`` under the raw (temperature 1) distribution, shape ``(n,)``."""
        return self.metric("logprob")

    def metric(self, name: str) -> np.ndarray:
        """The per-token values of one metric of :data:`~guardrail.energy.METRICS`."""
        return derived_metric(name, **{s: getattr(self, s) for s in _STATS})

    def pooled(self, metric: str, pooling: str, indices: range | None = None) -> float:
        """Pool ``metric`` over the tokens at ``indices`` (default: all tokens)."""
        values = self.metric(metric)
        chosen = values if indices is None else values[indices.start : indices.stop]
        if chosen.shape[0] == 0:
            raise InvalidInputError(f"`indices` selects no token of {len(self)}: {indices}")
        return pool(chosen, pooling)

    def to_dict(self) -> dict[str, list[float] | list[int]]:
        """Per-token lists of the ids and every metric, JSON-ready."""
        out: dict[str, list[float] | list[int]] = {"token_ids": self.token_ids.tolist()}
        out.update({name: self.metric(name).tolist() for name in METRICS})
        return out


@dataclass(frozen=True)
class TokenStep:
    """One answer token's raw-logit statistics, as soon as they are known while streaming.

    Spilled energy needs the step *after* the token, so a token's step arrives one token late.
    """

    index: int
    token_id: int
    chosen_logit: float
    log_partition: float
    next_log_partition: float
    entropy: float

    @property
    def spilled_energy(self) -> float:
        """``logsumexp(z_{t+1}) - z_t[y_t]``."""
        return self.next_log_partition - self.chosen_logit

    @property
    def logprob(self) -> float:
        """``z_t[y_t] - logsumexp(z_t)``."""
        return self.chosen_logit - self.log_partition
