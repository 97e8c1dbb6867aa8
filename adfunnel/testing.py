"""Helpers to run the real system in tests and tools: deploy it on a Ray cluster, wait, query.

Lives beside the code (not under tests/) so the benchmark and the publisher can use it too.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx
import ray
import yaml
from ray import serve

import serve_app
from adfunnel.embedded import free_port

T = TypeVar("T")


def unique_names(tag: str = "t") -> dict[str, str]:
    """Stream and subject-prefix settings no other test uses."""
    suffix = uuid.uuid4().hex[:10]
    return {"nats_stream": f"{tag.upper()}_{suffix}", "nats_subject_prefix": f"{tag}{suffix}"}


def unique_database(tag: str = "t") -> str:
    """A database name no other test uses."""
    return f"{tag}_{uuid.uuid4().hex[:10]}"


async def database_names(server_dsn: str) -> set[str]:
    """The names of the databases on the server at `server_dsn`."""
    conn = await asyncpg.connect(server_dsn)
    try:
        return {row["datname"] for row in await conn.fetch("SELECT datname FROM pg_database")}
    finally:
        await conn.close()


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


# The Serve config `serve run` reads: tests and tools start Serve as it does.
SERVE_CONFIG = Path(serve_app.__file__).with_name("config.yaml")


def start_serve(port: int) -> None:
    """`serve.start` on 127.0.0.1:`port`, with the controller options of `config.yaml`."""
    options = yaml.safe_load(SERVE_CONFIG.read_text()).get("controller_options")
    serve.start(http_options={"host": "127.0.0.1", "port": port}, controller_options=options)


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


def dashboard_queries(directory: Path) -> list[tuple[str, str, str]]:
    """(dashboard file, panel title, PromQL) of every panel target of every dashboard."""
    found: list[tuple[str, str, str]] = []
    for path in sorted(directory.glob("*.json")):
        dashboard = json.loads(path.read_text())
        panels = list(dashboard.get("panels", []))
        while panels:
            panel = panels.pop(0)
            panels.extend(panel.get("panels", []))  # rows may nest their panels
            for target in panel.get("targets", []):
                found.append((path.name, panel["title"], target["expr"]))
    return found


@dataclass
class Prometheus:
    """A real Prometheus server started for a test, and its HTTP query API."""

    url: str
    process: subprocess.Popen[bytes]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The result vector of an instant query (an error answer raises)."""
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=30)
        body = response.json()
        if body.get("status") != "success":
            raise RuntimeError(f"prometheus refused {expr!r}: {body}")
        return list(body["data"]["result"])

    def value(self, expr: str) -> float | None:
        """The single value of a query that sums to one series, or None when it has none."""
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_prometheus(
    config: Path, targets: list[str], work_dir: Path, *, scrape_interval: str = "1s"
) -> Prometheus:
    """Run Prometheus with `config`, its file service discovery pointed at `targets`.

    The project's local config reads Ray's service-discovery file; here a file of the same
    format lists the test cluster's metrics port, and the scrape interval is shortened.
    """
    binary = shutil.which("prometheus")
    if binary is None:
        raise FileNotFoundError("prometheus is not installed (apt-get install prometheus)")
    sd_file = work_dir / "targets.json"
    sd_file.write_text(json.dumps([{"labels": {"job": "ray"}, "targets": targets}]))
    settings = yaml.safe_load(config.read_text())
    settings["global"]["scrape_interval"] = scrape_interval
    for job in settings["scrape_configs"]:
        for sd in job.get("file_sd_configs", []):
            sd["files"] = [str(sd_file)]
            sd["refresh_interval"] = scrape_interval
    test_config = work_dir / "prometheus.yml"
    test_config.write_text(yaml.safe_dump(settings))
    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={test_config}",
            f"--storage.tsdb.path={work_dir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(work_dir / "prometheus.log").open("wb"),
    )
    server = Prometheus(f"http://127.0.0.1:{port}", process)

    def up() -> bool:
        try:
            return httpx.get(f"{server.url}/-/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return process.poll() is not None  # exited: stop waiting, fail below

    wait_until(up, timeout=60, what="prometheus ready")
    if process.poll() is not None:
        raise RuntimeError(f"prometheus exited: {(work_dir / 'prometheus.log').read_text()}")
    return server


def ray_logs_dir() -> Path:
    """Where this process's Ray cluster keeps its processes' log files."""
    node = ray._private.worker._global_node
    if node is None:
        raise RuntimeError("Ray is not initialized in this process")
    return Path(node.get_logs_dir_path())
