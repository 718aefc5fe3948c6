"""``spillguard serve``: guarded generation over HTTP on Ray Serve (extra ``spillguard[ray]``).

The server speaks OpenAI's chat-completions API (``POST /v1/chat/completions``, ``GET
/v1/models``) with the verdict in each response (see :mod:`guardrail.serve`); the guard's policy
applies on the server. Replicas and autoscaling are Ray Serve's own options, passed through.
For a Serve config file (``serve run``/``serve deploy``), :func:`app_builder` builds the same
application from the guard options as ``args``; the file's ``deployments`` entry named
``spillguard`` then sets replicas, autoscaling and resources.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import signal
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from guardrail.calibration import Calibration
from guardrail.cli.cluster import INSTALL_HINT, add_replica_options, guard_factory
from guardrail.cli.options import add_guard_options
from guardrail.errors import InvalidInputError, SpillguardError

__all__ = ["app_builder", "configure", "run"]

DEFAULT_CPUS_PER_REPLICA = 0.5


def _replicas(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError(f"must be a count >= 1 or 'auto', got {value!r}")
    return count


def _json_object(value: str) -> dict[str, Any]:
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON ({exc}): {value!r}") from None
    if not isinstance(parsed, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object, got {value!r}")
    return parsed


def configure(parser: argparse.ArgumentParser) -> None:
    """Options of ``spillguard serve``."""
    add_guard_options(parser)
    parser.add_argument("--host", default="127.0.0.1", help="HTTP host (default 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
    parser.add_argument(
        "--num-replicas",
        type=_replicas,
        default=1,
        help="Ray Serve's num_replicas: a count (default 1) or 'auto' for autoscaling",
    )
    parser.add_argument(
        "--autoscaling-config",
        type=_json_object,
        help='Ray Serve\'s autoscaling_config as JSON, e.g. \'{"min_replicas": 1, "max_replicas": 4}\' '
        "(with --num-replicas auto)",
    )
    parser.add_argument("--max-ongoing-requests", type=int, help="Ray Serve's per-replica concurrency limit")
    add_replica_options(parser)
    parser.add_argument("--name", default="spillguard", help="Ray Serve application name (default spillguard)")


def _application(args: argparse.Namespace, **deployment: Any) -> Any:
    """The Serve application of the guard options in ``args`` (the calibration loaded here)."""
    from guardrail.serve.deployment import application

    overrides = {"calibration": Calibration.load(args.calibration)} if args.calibration else {}
    return application(guard_factory(args, **overrides), **deployment)


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted (Ctrl-C or SIGTERM), then remove the application."""
    if importlib.util.find_spec("ray") is None:
        raise SpillguardError(f"`spillguard serve` needs Ray Serve: {INSTALL_HINT}")
    local = not (args.address or os.environ.get("RAY_ADDRESS"))
    if local and args.model and not Path(args.model).exists():  # on a cluster, the path is the nodes' business
        raise InvalidInputError(f"`--model` {args.model!r} does not exist; spillguard loads local models only")
    cpus = DEFAULT_CPUS_PER_REPLICA if args.cpus_per_replica is None else args.cpus_per_replica
    app = _application(
        args,
        num_replicas=args.num_replicas,
        autoscaling_config=args.autoscaling_config,
        max_ongoing_requests=args.max_ongoing_requests,
        ray_actor_options={"num_cpus": cpus, "num_gpus": args.gpus_per_replica},
    )
    import ray
    from ray import serve

    started = not ray.is_initialized()
    if started:  # --address, else $RAY_ADDRESS, else a local cluster for this command
        ray.init(address=args.address, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        serve.start(http_options={"host": args.host, "port": args.port})
        try:
            serve.run(app, name=args.name, route_prefix="/")
            print(
                f"spillguard serve: http://{args.host}:{args.port}/v1 (POST /v1/chat/completions); "
                f"application {args.name!r}; Ctrl-C stops",
                flush=True,
            )
            stop.wait()
        finally:
            serve.delete(args.name)
    finally:
        if started:
            ray.shutdown()
    return 0


def app_builder(args: Mapping[str, Any]) -> Any:
    """The application for a Ray Serve config file: ``import_path: guardrail.cli.serve:app_builder``.

    ``args`` are ``spillguard serve``'s guard options by name (``model``, ``calibration``,
    ``localizer``, ``policy``, ``max_new_tokens``); replicas, autoscaling and resources come
    from the file's ``deployments`` entry named ``spillguard``.
    """
    parser = argparse.ArgumentParser(prog="app_builder", exit_on_error=False, add_help=False)
    add_guard_options(parser)
    argv = [part for key, value in args.items() for part in (f"--{key.replace('_', '-')}", str(value))]
    try:
        options, unknown = parser.parse_known_args(argv)
    except argparse.ArgumentError as exc:
        raise InvalidInputError(f"`args` of app_builder: {exc}") from None
    if unknown:
        raise InvalidInputError(f"`args` of app_builder has unknown options {unknown}; it takes the guard options")
    return _application(options)
