"""The Ray Serve deployment: :class:`~guardrail.serve.handler.ChatHandler` behind HTTP, on replicas.

>>> from ray import serve
>>> from guardrail import Guard
>>> from guardrail.serve.deployment import application
>>> serve.run(application(Guard.default, num_replicas="auto"))  # POST /v1/chat/completions

Each replica builds its guard once with ``factory`` (the model is loaded on the replica, never
pickled). How many replicas run, and how they scale, is Ray Serve's own deployment config
(``num_replicas``, ``autoscaling_config``, ``max_ongoing_requests``, ``ray_actor_options``),
passed through unchanged, checked by Serve, and overridable in a Serve config file
(``serve run``/``serve deploy``). Ray is imported when an application is built, not when this
module is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from guardrail.errors import InvalidInputError, SpillguardError
from guardrail.serve.handler import ChatHandler

__all__ = ["DEPLOYMENT_NAME", "INSTALL_HINT", "SpillguardDeployment", "application"]

INSTALL_HINT = "pip install 'spillguard[ray]'"
DEPLOYMENT_NAME = "spillguard"


class ServeMissingError(SpillguardError):
    """Ray Serve (extra ``spillguard[ray]``) is not installed."""


class SpillguardDeployment:
    """A Serve replica: one guard, one handler; every request goes through :meth:`__call__`."""

    def __init__(self, factory: Callable[[], Any]) -> None:
        self.handler = ChatHandler(factory())

    async def __call__(self, request: Any) -> Any:
        """A Starlette request in, a JSON response out (routes: see :class:`ChatHandler`)."""
        from starlette.responses import JSONResponse

        path = request.url.path
        root = request.scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        reply = await self.handler.handle(request.method, path, await request.body())
        return JSONResponse(reply.body, status_code=reply.status, headers=reply.headers)


def application(
    factory: Callable[[], Any],
    *,
    name: str = DEPLOYMENT_NAME,
    num_replicas: int | str | None = 1,
    autoscaling_config: Mapping[str, Any] | None = None,
    max_ongoing_requests: int | None = None,
    ray_actor_options: Mapping[str, Any] | None = None,
) -> Any:
    """A Serve application of :class:`SpillguardDeployment`, for ``serve.run``.

    Args:
        factory: builds the guard on a replica (e.g. ``Guard.default``); picklable, no model.
        name: the deployment's name (what a Serve config file's ``deployments`` entry names).
        num_replicas: Serve's ``num_replicas``: a count, or ``"auto"`` for autoscaling.
        autoscaling_config: Serve's ``autoscaling_config`` (``min_replicas``,
            ``max_replicas``, ``target_ongoing_requests``, ...); then ``num_replicas`` must be
            ``None`` or ``"auto"``.
        max_ongoing_requests: Serve's per-replica concurrency limit (requests beyond it queue).
        ray_actor_options: Serve's ``ray_actor_options``, e.g. ``{"num_cpus": 1, "num_gpus": 1}``.
    """
    try:
        from ray import serve
    except ImportError as exc:
        missing = f"serving needs Ray Serve, whose module {exc.name!r} is missing"
        raise ServeMissingError(f"{missing}: {INSTALL_HINT}") from exc
    options: dict[str, Any] = {"name": name, "num_replicas": num_replicas}
    if autoscaling_config is not None:
        options["autoscaling_config"] = dict(autoscaling_config)
    if max_ongoing_requests is not None:
        options["max_ongoing_requests"] = max_ongoing_requests
    if ray_actor_options is not None:
        options["ray_actor_options"] = dict(ray_actor_options)
    try:
        deployment: Any = serve.deployment(SpillguardDeployment, **options)
    except (TypeError, ValueError) as exc:  # Serve's own checks (pydantic ValidationError is a ValueError)
        raise InvalidInputError(f"Ray Serve refused the deployment options {options}: {exc}") from exc
    return deployment.bind(factory)
