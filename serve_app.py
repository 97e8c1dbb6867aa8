"""Serve applications of `config.yaml`: wiring only, the logic lives in `adfunnel` and `actors`.

`ingest` is the gateway (route `/`) plus the route-less supervisor that owns the embedded
servers, the writer pool and the consumer actors; `reports` is the reporter (`/reports`).
Settings come from the environment (SPEC §2); `settings` in a builder's args overrides them.
"""

from typing import Any, cast

from pydantic import BaseModel, Field
from ray.serve import Application, Deployment

from actors.supervisor import Supervisor
from adfunnel.gateway import Gateway
from adfunnel.reporter import Reporter
from adfunnel.settings import Settings


class IngestArgs(BaseModel):
    """Arguments of the `ingest` application."""

    gateway_replicas: int = Field(1, ge=1)
    settings: dict[str, Any] = Field(default_factory=dict)


class ReportsArgs(BaseModel):
    """Arguments of the `reports` application."""

    replicas: int = Field(1, ge=1)
    ingest_app: str = "ingest"
    settings: dict[str, Any] = Field(default_factory=dict)


def _settings(overrides: dict[str, Any]) -> Settings:
    settings = Settings(**overrides)
    # Resolve here: replicas may run in another working directory than the one `serve run`
    # was started in.
    return settings.model_copy(update={"data_dir": settings.data_dir.resolve()})


def _deployment(decorated: object) -> Deployment:
    # @serve.deployment turns a class into a Deployment, which type checkers cannot see.
    return cast(Deployment, decorated)


def ingest(args: IngestArgs) -> Application:
    """Gateway + supervisor."""
    settings = _settings(args.settings)
    supervisor = _deployment(Supervisor).bind(settings)
    gateway = _deployment(Gateway).options(num_replicas=args.gateway_replicas)
    return gateway.bind(settings, supervisor)


def reports(args: ReportsArgs) -> Application:
    """Reporter."""
    settings = _settings(args.settings)
    reporter = _deployment(Reporter).options(num_replicas=args.replicas)
    return reporter.bind(settings, args.ingest_app)
