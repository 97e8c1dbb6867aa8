"""The supervisor: one route-less Serve replica that owns everything behind the gateway.

It starts the embedded servers when no external ones are configured, applies migrations,
creates the stream and durable consumers, and creates the writer pool and the consumer
actors as its own children, so that they live and die with it (SPEC §9): `serve shutdown`
or Ctrl-C ends them and the embedded servers, in that order, after draining.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import ray
import structlog
from ray import serve
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from actors.consumer import Consumer
from actors.writer import Writer
from adfunnel import bus, embedded, logs, storage
from adfunnel.errors import EmbeddedServerError
from adfunnel.settings import Settings

log = structlog.get_logger(component="supervisor")

ACTOR_NAMESPACE = "adfunnel"
WRITER_CPUS = 0.2
RETENTION_PERIOD_S = 3600.0
RETENTION_RETRY_S = 60.0
CONSUMER_CPUS = 0.1


@dataclass(frozen=True)
class Endpoints:
    """Where the bus and the database are, once the supervisor is up."""

    nats_url: str
    database_url: str


def actor_name(stream: str, role: str, index: int) -> str:
    """Names are per stream, so several deployments can share one Ray cluster."""
    return f"adfunnel-{stream}-{role}-{index}"


def spread(nodes: list[str], index: int) -> Any:
    """Where the `index`-th actor of a pool goes: on a cluster of several nodes, the next one
    in turn (`nodes`: their ids), so a pool spans them for certain (Ray's "SPREAD" is best
    effort: it once put both writers on one of two nodes). Elsewhere if that node is gone
    or busy, so nothing waits on it."""
    if len(nodes) < 2:
        return "SPREAD"
    return NodeAffinitySchedulingStrategy(
        nodes[index % len(nodes)], soft=True, _spill_on_unavailable=True
    )


def cluster_nodes() -> list[str]:
    """The ids of the live nodes that can run an actor, in a fixed order."""
    found = ray.nodes()  # type: ignore[no-untyped-call]  # Ray leaves it unannotated
    return sorted(
        node["NodeID"] for node in found if node["Alive"] and node["Resources"].get("CPU")
    )


@serve.deployment(
    name="Supervisor",
    num_replicas=1,
    ray_actor_options={"num_cpus": 0.05},
    max_ongoing_requests=256,
    graceful_shutdown_timeout_s=60,
    health_check_period_s=5,
    health_check_timeout_s=30,
)
class Supervisor:
    """Owner of the embedded servers, the writer pool and the consumer actors."""

    # Ray actors support `async def __init__`; type checkers expect `-> None` all the same.
    async def __init__(self, settings: Settings) -> None:  # type: ignore[misc]
        logs.configure(settings.log_level)
        self.settings = settings
        self._servers: list[embedded.EmbeddedServer] = []
        self._stopped = False
        self._retention: asyncio.Task[None] | None = None
        # Ray actor handles are untyped: Any is the honest type here. Empty until made, so a
        # start that fails part-way still stops, in `__del__`, the servers it started.
        self.writers: list[Any] = []
        self.consumers: list[Any] = []
        data_dir = settings.data_dir  # resolved by the application builder
        nats_url, database_url = settings.nats_url, settings.database_url
        if nats_url is None:
            server = await asyncio.to_thread(embedded.start_nats, data_dir)
            self._servers.append(server)
            nats_url = server.url
        if database_url is None:
            server = await asyncio.to_thread(embedded.start_postgres, data_dir)
            self._servers.append(server)
            database_url = await storage.prepared_database(server.url, embedded.DATABASE)
        self.endpoints_ = Endpoints(nats_url, database_url)
        await storage.wait_for_database(database_url)
        conn = await asyncpg.connect(database_url)
        try:
            applied = await storage.migrate(conn)
        finally:
            await conn.close()
        nc = await bus.connect(nats_url, name="supervisor")
        try:
            await bus.ensure_topology(nc.jetstream(), settings)
        finally:
            await nc.close()
        nodes = await asyncio.to_thread(cluster_nodes)
        self.writers = [
            ray.remote(Writer)
            .options(
                name=actor_name(settings.nats_stream, "writer", i),
                namespace=ACTOR_NAMESPACE,
                num_cpus=WRITER_CPUS,
                max_restarts=-1,
                # Over every node of a multi-node cluster, rather than packed on one.
                scheduling_strategy=spread(nodes, i),
                max_concurrency=8,
            )
            .remote(settings, database_url, i)
            for i in range(settings.writer_pool_size)
        ]
        for lane in bus.LANES:
            count = 1 if lane == "rejected" else settings.consumers_per_source
            for i in range(count):
                self.consumers.append(
                    ray.remote(Consumer)
                    .options(
                        name=actor_name(settings.nats_stream, f"consumer-{lane}", i),
                        namespace=ACTOR_NAMESPACE,
                        num_cpus=CONSUMER_CPUS,
                        max_restarts=-1,
                        scheduling_strategy=spread(nodes, len(self.consumers)),
                        max_concurrency=64,
                    )
                    .remote(settings, nats_url, lane, self.writers, i)
                )
        await asyncio.gather(*(c.start.remote() for c in self.consumers))
        if settings.retention_days is not None:
            self._retention = asyncio.get_running_loop().create_task(
                self._expire_hourly(database_url)
            )
        log.info(
            "supervisor ready",
            embedded=[s.url for s in self._servers],
            migrations_applied=applied,
            writers=len(self.writers),
            consumers=len(self.consumers),
        )

    async def _expire_hourly(self, database_url: str) -> None:
        """Retention (SPEC §10): now, then every hour; a failed run is tried again sooner."""
        while True:
            delay = RETENTION_PERIOD_S
            try:
                conn = await asyncpg.connect(database_url)
                try:
                    cutoff = self.settings.retention_cutoff(datetime.now(UTC))
                    assert cutoff is not None
                    expired = await storage.expire(conn, cutoff)
                finally:
                    await conn.close()
                log.info(
                    "retention",
                    removed_before=expired.before.isoformat(),
                    events=expired.events,
                    rejected=expired.rejected,
                )
            except Exception as error:  # noqa: BLE001  # PostgreSQL away: try again soon
                log.warning("retention failed", error=repr(error)[:300])
                delay = RETENTION_RETRY_S
            await asyncio.sleep(delay)

    async def endpoints(self) -> Endpoints:
        """The bus and database URLs the other deployments connect to."""
        return self.endpoints_

    async def status(self) -> dict[str, Any]:
        """Per-component state for the readiness endpoints."""

        async def probe(ref: Any) -> Any:
            try:
                return await asyncio.wait_for(ref, 5.0)
            except Exception as error:  # noqa: BLE001  # a dead or slow actor is a state
                return {"error": repr(error)[:200]}

        consumer_states = await asyncio.gather(*(probe(c.status.remote()) for c in self.consumers))
        writer_states = await asyncio.gather(*(probe(w.ping.remote()) for w in self.writers))
        consumers: dict[str, Any] = {}
        for state in consumer_states:
            if "lane" in state:
                consumers[f"{state['lane']}-{state['index']}"] = state
            else:
                consumers[f"unknown-{len(consumers)}"] = state
        return {
            "embedded": {s.url: s.alive() for s in self._servers},
            "consumers": consumers,
            "writers": {str(i): ok is True for i, ok in enumerate(writer_states)},
        }

    def writer_names(self) -> list[str]:
        """Names of the writer actors (for operators and fault tests)."""
        return [
            actor_name(self.settings.nats_stream, "writer", i) for i in range(len(self.writers))
        ]

    def check_health(self) -> None:
        """Unhealthy only when an embedded server died: Serve then restarts us, and them."""
        for server in self._servers:
            if not server.alive():
                raise EmbeddedServerError(f"embedded server {server.url} is not running")

    async def __del__(self) -> None:
        """Drain consumers (in-flight batches commit and ack), then stop servers."""
        if self._stopped:
            return
        self._stopped = True
        if self._retention is not None:
            self._retention.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                asyncio.gather(*(c.drain.remote() for c in self.consumers)), timeout=45
            )
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                asyncio.gather(*(w.close.remote() for w in self.writers)), timeout=10
            )
        for actor in [*self.consumers, *self.writers]:
            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)
        for server in reversed(self._servers):
            await asyncio.to_thread(server.stop)
        log.info("supervisor stopped")
