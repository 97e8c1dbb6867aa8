"""Session-wide real servers and one Ray cluster; each test gets its own database and stream.

NATS and PostgreSQL are the machine's when `NATS_URL` / `DATABASE_URL` are set, else
embedded servers started once for the session.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import pytest
import ray
from ray import serve

from adfunnel import embedded, storage
from adfunnel.testing import (
    Deployed,
    deploy,
    run,
    start_serve,
    undeploy,
    unique_database,
    unique_names,
)


@dataclass(frozen=True)
class Servers:
    """Where the session's NATS and PostgreSQL server are."""

    nats_url: str
    postgres_url: str

    def database_url(self, name: str) -> str:
        """The URL of database `name` on the session's PostgreSQL server."""
        base, _, rest = self.postgres_url.rpartition("/")
        query = f"?{rest.partition('?')[2]}" if "?" in rest else ""
        return f"{base}/{name}{query}"


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    started: list[embedded.EmbeddedServer] = []
    nats_url = os.environ.get("NATS_URL")
    postgres_url = os.environ.get("DATABASE_URL")
    data_dir = tmp_path_factory.mktemp("servers")
    if not nats_url:
        started.append(embedded.start_nats(data_dir))
        nats_url = started[-1].url
    if not postgres_url:
        started.append(embedded.start_postgres(data_dir))
        postgres_url = started[-1].url
        run(storage.wait_for_database(postgres_url))
    yield Servers(nats_url, postgres_url)
    for server in reversed(started):
        server.stop()


@pytest.fixture(scope="session")
def metrics_port() -> int:
    """Where the session cluster's metrics agent serves every process's metrics."""
    return embedded.free_port()


@pytest.fixture(scope="session")
def ray_cluster(metrics_port: int) -> Iterator[str]:
    """One Ray cluster and Serve instance for the session; yields the HTTP base URL."""
    ray.init(
        address="local",
        num_cpus=4,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        _metrics_export_port=metrics_port,
        # Export metrics every 2 s instead of 10 s, so Prometheus sees them sooner.
        _system_config={"metrics_report_interval_ms": 2000},
        log_to_driver=False,
    )
    port = embedded.free_port()
    start_serve(port)
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()  # type: ignore[no-untyped-call]  # ray ships it unannotated
    ray.shutdown()


def _fresh_database(servers: Servers) -> Iterator[str]:
    name = unique_database()
    run(storage.ensure_database(servers.postgres_url, name))
    yield servers.database_url(name)
    run(storage.drop_database(servers.postgres_url, name))


@pytest.fixture
def database(servers: Servers) -> Iterator[str]:
    """A fresh database for one test, dropped afterwards."""
    yield from _fresh_database(servers)


async def _delete_stream(nats_url: str, stream: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        await nc.jetstream().delete_stream(stream)
    except Exception:
        pass
    finally:
        await nc.close()


@pytest.fixture
def system_settings(servers: Servers, database: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Settings of a system on the session's servers with its own stream and database."""
    settings: dict[str, Any] = {
        "nats_url": servers.nats_url,
        "database_url": database,
        "data_dir": str(tmp_path / "data"),
        **unique_names(),
    }
    yield settings
    run(_delete_stream(servers.nats_url, settings["nats_stream"]))


@pytest.fixture
def system(ray_cluster: str, system_settings: dict[str, Any]) -> Iterator[Deployed]:
    """The whole pipeline deployed for one test."""
    deployed = deploy(ray_cluster, system_settings)
    yield deployed
    undeploy()


@pytest.fixture(scope="module")
def module_system(
    ray_cluster: str, servers: Servers, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployed]:
    """One deployed pipeline shared by a module's tests that do not care about its state
    (its own database and stream all the same)."""
    for database_url in _fresh_database(servers):
        settings: dict[str, Any] = {
            "nats_url": servers.nats_url,
            "database_url": database_url,
            "data_dir": str(tmp_path_factory.mktemp("module-system")),
            **unique_names(),
        }
        deployed = deploy(ray_cluster, settings)
        yield deployed
        undeploy()
        run(_delete_stream(servers.nats_url, settings["nats_stream"]))
