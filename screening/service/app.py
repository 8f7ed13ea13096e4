"""The Ray Serve application: ``build_app(args)`` binds the FastAPI ingress deployment.

Run it with ``serve run screening.service.app:build_app store_roots=/data/stores`` (or
``screening serve``), or from a RayService ``serveConfigV2``::

    applications:
      - name: screening
        import_path: screening.service.app:build_app
        route_prefix: /
        args:
          store_roots: [s3://bucket/screens]
          token_file: /var/run/secrets/screening/tokens

Every ``args`` key may instead come from ``SCREENING_<KEY>`` in the environment (see
:mod:`screening.service.config`). The replicas are stateless: screens run in detached Ray actors
owned by the job manager (:mod:`screening.service.jobs`), so a replica restart loses nothing.
"""

from __future__ import annotations

import os
from typing import Any

from ray import serve

from screening.service.config import ServiceConfig

__all__ = ["ScreeningService", "build_app"]


@serve.deployment(name="screening", max_ongoing_requests=64, ray_actor_options={"num_cpus": 0.1})
@serve.ingress()
class ScreeningService:
    """One HTTP replica: the API over the (shared, detached) job manager.

    Parameters
    ----------
    config
        :meth:`ServiceConfig.to_dict` of the resolved settings.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        from screening.service.auth import TokenStore
        from screening.service.jobs import get_manager

        self.config = ServiceConfig.from_dict(config)
        self.tokens = TokenStore(self.config.token_digests, self.config.token_file,
                                 os.environ.get("SCREENING_API_TOKENS", ""))
        self.manager = get_manager(self.config.registry, self.config.namespace)

    def __serve_build_asgi_app__(self):
        from screening.service.api import create_api

        return create_api(self.config, self.manager, self.tokens)


def build_app(args: dict[str, Any] | None = None) -> serve.Application:
    """The Serve application builder (``import_path: screening.service.app:build_app``).

    Parameters
    ----------
    args
        Serve's application ``args``: ``store_roots`` (list or comma-separated: local folders or
        ``s3://bucket/prefix``), ``input_roots``, ``registry``, ``token_file``, ``max_perturbations``,
        ``max_spec_bytes``, ``max_query_rows``, ``max_json_rows``, ``max_workers``,
        ``submit_timeout_s``, ``namespace``, ``allow_user_code``, and for the deployment
        ``num_replicas``, ``max_ongoing_requests``, ``replica_cpus``. Each falls back to
        ``SCREENING_<KEY>``; tokens come from ``token_file`` and ``SCREENING_API_TOKENS``.

    Returns
    -------
    ray.serve.Application
        The bound ingress deployment.

    Raises
    ------
    ConfigError
        On a missing store root, no token at all, an unknown key or a bad value.
    """
    config = ServiceConfig.from_args(args)
    options: dict[str, Any] = {}
    deployment = config.deployment
    if "num_replicas" in deployment:
        options["num_replicas"] = int(deployment["num_replicas"])
    if "max_ongoing_requests" in deployment:
        options["max_ongoing_requests"] = int(deployment["max_ongoing_requests"])
    if "replica_cpus" in deployment:
        options["ray_actor_options"] = {"num_cpus": float(deployment["replica_cpus"])}
    service = ScreeningService.options(**options) if options else ScreeningService
    return service.bind(config.to_dict())
