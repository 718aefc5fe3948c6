"""One local Ray cluster for the Ray tests, on this machine's loopback, shut down after them.

Every Ray test runs under a watchdog: a test that would wait forever (a replica no node can
hold, a lost actor) fails after ``WATCHDOG_S`` instead of hanging CI.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import pytest
import torch

ray = pytest.importorskip("ray")

WATCHDOG_S = 420  # generous for a loaded machine; what matters is that it is finite
CPUS = 2  # as in CI: two cores, so replicas must not take them all


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[str]:
    """A local cluster of :data:`CPUS` CPUs on 127.0.0.1; yields its address for other drivers."""
    switch = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # Ray's switch for a loopback-only node
    before = os.environ.get(switch)
    os.environ[switch] = "0"
    context = ray.init(
        num_cpus=CPUS,
        include_dashboard=False,
        logging_level=logging.WARNING,
        log_to_driver=False,
        _node_ip_address="127.0.0.1",
    )
    try:
        yield str(context.address_info["gcs_address"])
    finally:
        ray.shutdown()
        if before is None:
            os.environ.pop(switch)
        else:
            os.environ[switch] = before


@contextmanager
def deadline(seconds: int = WATCHDOG_S) -> Iterator[None]:
    """Raise :class:`TimeoutError` in the block after ``seconds`` (SIGALRM; the main thread only)."""

    def expire(signum: int, frame: FrameType | None) -> Any:
        raise TimeoutError(f"a Ray test ran over {seconds} s: something waits for what never comes")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(autouse=True)
def watchdog() -> Iterator[None]:
    with deadline():
        yield


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Torch on one thread in this process, as in a replica of < 2 CPUs: float32 sums then agree
    with the replica's bit for bit (they depend on the thread count)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
