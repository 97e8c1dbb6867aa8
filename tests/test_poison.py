"""A message whose write fails every time: bounded redeliveries, then the rejected store
with its reason; the messages fetched with it are stored at once. (The growing delays between
deliveries are `backoff_s`'s, tested as the pure function it is.)

Real JetStream, PostgreSQL and Ray actors. The writer is the project's own, wrapped so
that it fails (as a crashing writer would) on every message carrying a marked event.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
import ray

from actors.consumer import Consumer
from actors.writer import Writer, WriteResult
from adfunnel import bus, storage
from adfunnel.bus import Delivery
from adfunnel.ingest import triage
from adfunnel.settings import Settings
from adfunnel.testing import db_fetch, run, wait_until
from adfunnel.tools.generator import Generator

pytestmark = pytest.mark.integration

# Ray's workers cannot import this test module: ship its classes by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # type: ignore[no-untyped-call]  # unannotated in Ray

MARK = b"write-fails-here"


class FailingWriter:
    """The real writer, except that a message with the mark fails like a crash would."""

    def __init__(self, settings: Settings, database_url: str) -> None:
        self.inner = Writer(settings, database_url, 0)
        self.attempts: list[int] = []  # num_delivered of each try of the marked message

    async def write(self, deliveries: Sequence[Delivery]) -> WriteResult:
        for delivery in deliveries:
            # Payloads travel compressed: the mark is in the events, not in the bytes.
            lines = bus.decode_lines(delivery.body)
            if any(MARK.decode() in storage.copy_payload_text(line) for line in lines):
                self.attempts.append(delivery.num_delivered)
                raise RuntimeError("the writer crashed on this message")
        return await self.inner.write(deliveries)

    async def dead_letter(self, delivery: Delivery, reason: str) -> WriteResult:
        return await self.inner.dead_letter(delivery, reason)

    async def ping(self) -> bool:
        return await self.inner.ping()

    def seen(self) -> list[int]:
        return self.attempts


async def _prepare(settings: Settings, events: list[dict[str, Any]]) -> None:
    assert settings.database_url and settings.nats_url
    conn = await asyncpg.connect(settings.database_url)
    try:
        await storage.migrate(conn)
    finally:
        await conn.close()
    nc = await bus.connect(settings.nats_url, name="poison-test")
    try:
        js = nc.jetstream()
        await bus.ensure_topology(js, settings)
        chunks = bus.encode_batch(
            settings,
            triage(events).accepted,
            [],
            correlation_id="poison-test",
            received_at=datetime.now(UTC),
        )
        await bus.publish(js, nc, settings, chunks)
    finally:
        await nc.close()


def test_a_message_that_always_fails_is_dead_lettered_after_bounded_redeliveries(
    ray_cluster: str, system_settings: dict[str, Any]
) -> None:
    settings = Settings.model_validate(
        {
            **system_settings,
            "max_deliver": 3,
            "events_per_message": 1,  # one event per message: the marked one travels alone
        }
    )
    database = system_settings["database_url"]
    events = Generator(seed=5).batch(40)
    facebook = [event for event in events if event["source"] == "facebook"]
    facebook[3]["note"] = MARK.decode()  # an extra field: valid, kept in the payload
    run(_prepare(settings, facebook))

    writer: Any = ray.remote(FailingWriter).options(num_cpus=0.1).remote(settings, database)
    consumer: Any = (
        ray.remote(Consumer)
        .options(num_cpus=0.1, max_concurrency=16)
        .remote(settings, settings.nats_url, "facebook", [writer], 0)
    )
    try:
        ray.get(consumer.start.remote(), timeout=60)

        def dead_lettered() -> list[Any]:
            return db_fetch(database, "SELECT event_id, reason, raw FROM rejected_events")

        rows = wait_until(dead_lettered, timeout=90, what="the dead-lettered message")
        assert len(rows) == 1
        assert rows[0]["reason"].startswith("undeliverable after 3 attempts: ")
        assert "the writer crashed on this message" in rows[0]["reason"]
        assert MARK.decode() in rows[0]["raw"]
        stored = db_fetch(database, "SELECT event_id FROM events")
        assert {row["event_id"] for row in stored} == {
            event["eventId"] for event in facebook if "note" not in event
        }

        # Nothing more can arrive: the durable consumer has no message pending or unacked
        # (the dead-lettered one was acknowledged).
        def settled() -> bool:
            state: dict[str, Any] = ray.get(consumer.status.remote(), timeout=30)
            return bool(state.get("pending") == 0 and state.get("ack_pending") == 0)

        wait_until(settled, timeout=60, what="every message acknowledged")
        # Tried in delivery order, each delivery once alone (a first try may also have been
        # in a batch with others), and never after the third.
        attempts = ray.get(writer.seen.remote())
        assert attempts == sorted(attempts), attempts
        assert sorted(set(attempts)) == [1, 2, 3], attempts
        assert attempts.count(2) == attempts.count(3) == 1, attempts
        assert len(db_fetch(database, "SELECT 1 FROM rejected_events")) == 1
    finally:
        ray.get(consumer.drain.remote(), timeout=60)
        ray.kill(consumer)
        ray.kill(writer)
