"""The Ray engine: a generation run's missing questions answered by model replicas on Ray Data.

>>> from guardrail import Guard
>>> from guardrail.calibrate import generate, load
>>> from guardrail.calibrate.ray_engine import RayEngine
>>> run = generate(Guard.default(), load("capitals", limit=64), engine=RayEngine(Guard.default, replicas=2))

Each row of the Ray dataset is one batch of questions, cut exactly as the local engine cuts
them (:func:`~guardrail.calibrate.engines.batches`); an actor-pool ``map_batches`` over
:class:`_Replica` sends the rows to ``replicas`` actors, each of which builds its guard once
with ``factory`` (so the model is loaded on the replica, never pickled from the driver) and
answers a row with :class:`~guardrail.calibrate.engines.LocalEngine`. Rows come back as they
finish and :func:`~guardrail.calibrate.runs.generate` caches each at once, so an interrupted run
resumes with whatever engine. A replica that dies (out of memory, a lost node) is restarted
and its row retried by Ray (``max_restarts`` / ``max_task_retries``, at most ``retries``
times), never endlessly; an error the guard raises on a replica (a prompt too long for the
context, ...) is raised here as the same exception.

Ray is imported only when a run starts (extra ``spillguard[ray]``); the toolkit imports
this module without it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from guardrail.calibrate.engines import Answer, EngineError, LocalEngine, batches
from guardrail.errors import InvalidInputError, SpillguardError
from guardrail.validation import check_int

__all__ = ["INSTALL_HINT", "RayEngine", "connect", "require_ray"]

INSTALL_HINT = "pip install 'spillguard[ray]'"
DEFAULT_CPUS_PER_REPLICA = 0.5
"""A fraction, so that replicas never take every CPU of a small machine from Ray's own tasks."""
_FACTORY_LIMIT = 16 * 2**20  # bytes: a factory this large carries a loaded model


def require_ray() -> Any:
    """The ``ray`` module (with Ray Data), or an :class:`EngineError` with the install hint."""
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise EngineError(f"the Ray engine needs Ray, whose module {exc.name!r} is missing: {INSTALL_HINT}") from exc
    return ray


def connect(address: str | None = None) -> bool:
    """Connect to the Ray cluster at ``address`` (else ``$RAY_ADDRESS``), or start a local one.

    Returns whether this call connected (and so should :func:`ray.shutdown` when done); an
    already initialized Ray (a caller's own ``ray.init``) is used as it is.
    """
    ray = require_ray()
    if ray.is_initialized():
        return False
    target = address or os.environ.get("RAY_ADDRESS") or None
    try:
        ray.init(address=target, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    except ConnectionError as exc:
        raise EngineError(f"cannot connect to the Ray cluster at {target!r}: {exc}") from exc
    return True


class RayEngine:
    """Answers on a Ray cluster with ``replicas`` model replicas (see the module docstring).

    Args:
        factory: builds the guard on a replica, e.g. ``Guard.default`` or
            ``functools.partial(Guard.from_pretrained, "/models/llama")``; it is pickled to
            the replicas, so it must not hold a loaded model (refused when it pickles to more
            than 16 MiB), and a model path must exist on every node.
        replicas: model replicas (Ray actors), >= 1.
        cpus_per_replica: CPUs Ray reserves for a replica (torch uses that many threads, at
            least one); default 0.5, a fraction, so that replicas never starve Ray's own tasks.
        gpus_per_replica: GPUs per replica (e.g. 1, or 0.5 to pack two small models on one).
        address: a Ray cluster (``ray://...`` or ``host:port``); default ``$RAY_ADDRESS``, else
            a local cluster started for the run and shut down after it.
        retries: how often a replica that died is restarted and its batch retried.
    """

    def __init__(
        self,
        factory: Callable[[], Any],
        *,
        replicas: int = 1,
        cpus_per_replica: float | None = None,
        gpus_per_replica: float = 0.0,
        address: str | None = None,
        retries: int = 3,
    ) -> None:
        if not callable(factory):
            raise InvalidInputError(f"`factory` must be a callable that builds a Guard, got {factory!r}")
        self.factory = factory
        self.replicas = check_int("replicas", replicas, minimum=1)
        cpus = DEFAULT_CPUS_PER_REPLICA if cpus_per_replica is None else cpus_per_replica
        self.cpus_per_replica = _check_amount("cpus_per_replica", cpus, positive=True)
        self.gpus_per_replica = _check_amount("gpus_per_replica", gpus_per_replica, positive=False)
        self.address = address
        self.retries = check_int("retries", retries, minimum=0)

    def answer(
        self, guard: Any, questions: Sequence[Any], *, batch_size: int, max_new_tokens: int
    ) -> Iterator[list[Answer]]:
        """See :meth:`guardrail.calibrate.engines.Engine.answer`."""
        rows = [{"questions": json.dumps(chunk, ensure_ascii=False)} for chunk in batches(questions, batch_size)]
        if not rows:
            return
        ray = require_ray()
        self._check_factory(ray)
        started = connect(self.address)
        try:
            self._check_fits(ray)
            with _quiet_ray_data():
                dataset = self._dataset(ray, rows, guard.fingerprint.model_dump(), batch_size, max_new_tokens)
                try:
                    for batch in dataset.iter_batches(batch_size=1, batch_format="numpy"):
                        results = [pickle.loads(blob) for blob in batch["answers"]]
                        for result in results:
                            if isinstance(result, SpillguardError):
                                raise result
                        yield [answer for result in results for answer in result]
                except ray.exceptions.RayError as exc:
                    summary = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                    raise EngineError(
                        f"the Ray run failed after {self.retries} retries of a replica that died: {summary}"
                    ) from exc
        finally:
            if started:
                ray.shutdown()

    def _dataset(
        self, ray: Any, rows: list[dict[str, str]], fingerprint: dict[str, Any], batch_size: int, max_new_tokens: int
    ) -> Any:
        from ray.data import ActorPoolStrategy

        dataset = ray.data.from_items(rows, override_num_blocks=len(rows))
        with warnings.catch_warnings():
            # Ray 2.60 deprecates passing ``max_restarts``/``max_task_retries`` through
            # map_batches' **ray_remote_args but offers no other way to bound them (Ray Data's
            # own default is -1, restart and retry forever).
            warnings.filterwarnings("ignore", message=".*ray_remote_args.*", category=DeprecationWarning)
            return dataset.map_batches(
                _Replica,
                batch_size=1,
                compute=ActorPoolStrategy(size=min(self.replicas, len(rows))),  # no idle replicas
                fn_constructor_kwargs={"factory": self.factory, "fingerprint": fingerprint},
                fn_kwargs={"batch_size": batch_size, "max_new_tokens": max_new_tokens},
                num_cpus=self.cpus_per_replica,
                num_gpus=self.gpus_per_replica or None,
                max_restarts=self.retries,
                max_task_retries=self.retries,
            )

    def _check_factory(self, ray: Any) -> None:
        size = len(ray.cloudpickle.dumps(self.factory))
        if size > _FACTORY_LIMIT:
            raise InvalidInputError(
                f"`factory` pickles to {size / 2**20:.0f} MiB: it carries a loaded model to every replica; "
                "pass a function that loads the model where it runs (e.g. Guard.default)"
            )

    def _check_fits(self, ray: Any) -> None:
        """Refuse at once a replica no node can hold: Ray Data would wait for it forever."""
        need = {"CPU": self.cpus_per_replica, "GPU": self.gpus_per_replica}
        room = 0
        for node in ray.nodes():
            if node.get("Alive"):
                have = node.get("Resources", {})
                room += min(math.floor(have.get(k, 0.0) / v + 1e-9) for k, v in need.items() if v > 0)
        if room == 0:
            total = ray.cluster_resources()
            raise EngineError(
                f"no node of the Ray cluster can hold a replica of {self.cpus_per_replica:g} CPU and "
                f"{self.gpus_per_replica:g} GPU (the cluster has {total.get('CPU', 0):g} CPUs, "
                f"{total.get('GPU', 0):g} GPUs); lower --cpus-per-replica/--gpus-per-replica or add nodes"
            )


@contextmanager
def _quiet_ray_data() -> Iterator[None]:
    """No Ray Data progress bars (the run shows its own) nor "execution started" lines, meanwhile."""
    from ray.data import DataContext

    context, logger = DataContext.get_current(), logging.getLogger("ray.data")
    bars, level = context.enable_progress_bars, logger.level
    context.enable_progress_bars = False
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        context.enable_progress_bars = bars
        logger.setLevel(level)


class _Replica:
    """One model replica: builds its guard once, then answers rows of question batches.

    A :class:`~guardrail.errors.SpillguardError` (building the guard or answering) comes back
    as the row's result, pickled, so that the driver raises the very exception: Ray's own
    wrapping of user-code errors does not keep it, and Ray never retries it (it is no crash).
    """

    def __init__(self, factory: Callable[[], Any], fingerprint: dict[str, Any]) -> None:
        self.guard: Any = None
        self.error: SpillguardError | None = None
        try:
            self.guard = factory()
            found = self.guard.fingerprint.model_dump()
            if found != fingerprint:
                raise EngineError(
                    f"a replica loaded another model than the run's ({found['name']!r}, vocabulary "
                    f"{found['vocab_size']}, instead of {fingerprint['name']!r}, vocabulary "
                    f"{fingerprint['vocab_size']}): is the model path the same on every node?"
                )
        except SpillguardError as exc:
            self.error = exc

    def __call__(self, batch: dict[str, np.ndarray], *, batch_size: int, max_new_tokens: int) -> dict[str, np.ndarray]:
        out = []
        for row in batch["questions"]:
            result: list[Answer] | SpillguardError
            try:
                if self.error is not None:
                    raise self.error
                parts = LocalEngine().answer(
                    self.guard, json.loads(str(row)), batch_size=batch_size, max_new_tokens=max_new_tokens
                )
                result = [answer for part in parts for answer in part]
            except SpillguardError as exc:
                result = exc
            out.append(pickle.dumps(result))
        return {"answers": np.array(out, dtype=object)}


def _check_amount(name: str, value: object, *, positive: bool) -> float:
    number = value if isinstance(value, int | float) and not isinstance(value, bool) else math.nan
    if not math.isfinite(number) or number < 0 or (positive and number == 0):
        raise InvalidInputError(f"`{name}` must be a finite number {'> 0' if positive else '>= 0'}, got {value!r}")
    return float(number)
