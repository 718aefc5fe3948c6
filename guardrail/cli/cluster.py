"""Options for running on a Ray cluster, shared by ``calibrate``/``evaluate`` and ``serve``.

Ray (extra ``spillguard[ray]``) is imported only when a command runs on it; without the extra,
``--engine ray`` and ``serve`` stop with the install hint before any model loads.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
from typing import Any

from guardrail.cli.options import build_guard

__all__ = ["INSTALL_HINT", "add_engine_options", "add_replica_options", "guard_factory", "make_engine", "ray_installed"]

INSTALL_HINT = "pip install 'spillguard[ray]'"


def add_replica_options(parser: argparse.ArgumentParser) -> None:
    """``--cpus-per-replica``, ``--gpus-per-replica`` and ``--address``."""
    parser.add_argument(
        "--cpus-per-replica",
        type=float,
        help="CPUs Ray reserves for each model replica (default 0.5: a fraction, so that replicas never "
        "take every CPU from Ray's own tasks); torch uses that many threads, at least one",
    )
    parser.add_argument("--gpus-per-replica", type=float, default=0.0, help="GPUs for each model replica (default 0)")
    parser.add_argument(
        "--address", help="Ray cluster to run on (default: $RAY_ADDRESS, else a local cluster started for the command)"
    )


def add_engine_options(parser: argparse.ArgumentParser) -> None:
    """``--engine``, ``--replicas`` and the replica options of :func:`add_replica_options`."""
    parser.add_argument(
        "--engine",
        choices=("local", "ray"),
        type=ray_installed,
        default="local",
        help="who generates the missing answers: this process (default) or model replicas on Ray Data",
    )
    parser.add_argument("--replicas", type=int, default=1, help="with --engine ray: model replicas (default 1)")
    add_replica_options(parser)


def guard_factory(args: argparse.Namespace, **overrides: Any) -> functools.partial[Any]:
    """A picklable function that builds the command's guard where it is called (a replica).

    It carries the command's guard options (``--model`` or the bundled model, ``--policy``,
    ``--localizer``, ``--max-new-tokens``) and ``overrides`` (e.g. the calibration already
    loaded, so a replica needs no access to the file), never a loaded model.
    """
    names = ("model", "policy", "localizer", "max_new_tokens")
    options = argparse.Namespace(**{name: getattr(args, name, None) for name in names})
    return functools.partial(build_guard, options, **overrides)


def make_engine(args: argparse.Namespace, guard: Any) -> Any:
    """The engine ``--engine`` names for ``guard``'s run: ``None`` (the local default) or a
    ``RayEngine`` whose replicas build the same guard (with its calibration) themselves."""
    if args.engine != "ray":
        return None
    from guardrail.calibrate.ray_engine import RayEngine

    return RayEngine(
        guard_factory(args, calibration=guard.calibration),
        replicas=args.replicas,
        cpus_per_replica=args.cpus_per_replica,
        gpus_per_replica=args.gpus_per_replica,
        address=args.address,
    )


def ray_installed(value: str) -> str:
    """An argparse ``type``: refuse ``ray`` at once, with the install hint, when Ray is missing."""
    if value == "ray" and importlib.util.find_spec("ray") is None:
        raise argparse.ArgumentTypeError(f"Ray is not installed: {INSTALL_HINT}")
    return value
