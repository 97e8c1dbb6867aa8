"""Helpers to run the real system in tests and tools: deploy it on a Ray cluster, wait, query.

Lives beside the code (not under tests/) so the benchmark and the publisher can use it too.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
import httpx
from ray import serve

import serve_app

T = TypeVar("T")


def unique_names(tag: str = "t") -> dict[str, str]:
    """Stream and subject-prefix settings no other test uses."""
    suffix = uuid.uuid4().hex[:10]
    return {"nats_stream": f"{tag.upper()}_{suffix}", "nats_subject_prefix": f"{tag}{suffix}"}


def unique_database(tag: str = "t") -> str:
    """A database name no other test uses."""
    return f"{tag}_{uuid.uuid4().hex[:10]}"


def wait_until(
    probe: Callable[[], T | None], *, timeout: float = 60.0, interval: float = 0.25, what: str = ""
) -> T:
    """Poll until `probe` returns something truthy; fail loudly with `what` on timeout."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what or probe}: last={last!r}")


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine from synchronous code (tests, tools)."""
    return asyncio.run(coro)


async def fetch_rows(dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    """The rows of one query on a fresh connection."""
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


def db_fetch(dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    """The rows of one query, from synchronous code."""
    return run(fetch_rows(dsn, sql, *args))


@dataclass
class Deployed:
    """A running system: its HTTP base URL and the settings it was deployed with."""

    base_url: str
    settings: dict[str, Any]

    def client(self, timeout: float = 120.0) -> httpx.Client:
        """An HTTP client for the gateway and reporter."""
        return httpx.Client(base_url=self.base_url, timeout=timeout)

    def total(self, **params: str) -> int:
        """The exact `total` of `/reports/events` under the filters."""
        with self.client() as client:
            response = client.get("/reports/events", params=params)
            response.raise_for_status()
            return int(response.json()["total"])

    def endpoints(self) -> Any:
        """The URLs the supervisor resolved (embedded servers included)."""
        return (
            serve.get_deployment_handle("Supervisor", app_name="ingest").endpoints.remote().result()
        )


def deploy(
    base_url: str,
    settings: dict[str, Any],
    *,
    gateway_replicas: int = 1,
    ready_timeout: float = 180,
) -> Deployed:
    """Deploy the `ingest` and `reports` applications and wait for /health/ready."""
    ingest = serve_app.ingest(
        serve_app.IngestArgs(gateway_replicas=gateway_replicas, settings=settings)
    )
    reports = serve_app.reports(serve_app.ReportsArgs(settings=settings))
    serve.run(ingest, name="ingest", route_prefix="/")
    serve.run(reports, name="reports", route_prefix="/reports")
    deployed = Deployed(base_url, settings)

    def ready() -> bool:
        try:
            with deployed.client(timeout=15) as client:
                return (
                    client.get("/health/ready").status_code == 200
                    and client.get("/reports/health/ready").status_code == 200
                )
        except httpx.HTTPError:
            return False

    wait_until(ready, timeout=ready_timeout, what="/health/ready")
    return deployed


def undeploy() -> None:
    """Delete both applications; the supervisor drains and stops what it started."""
    for name in ("reports", "ingest"):
        serve.delete(name, _blocking=True)
