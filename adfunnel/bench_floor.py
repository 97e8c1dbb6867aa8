"""The floor of `adfunnel bench`: the pipeline's work done bare, in one asyncio process with
no HTTP and no Ray — JetStream publish of one event per message, pull, asyncpg COPY.

It answers "how fast could these servers take events at all from one Python process on
this machine"; the pipeline's ratio to it says what HTTP, Ray and our guarantees cost.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass

import asyncpg
import nats
import orjson
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StorageType, StreamConfig

from adfunnel.generator import Generator
from adfunnel.schema import EventRow, event_row

_PUBLISH_WINDOW = 1_000  # publishes in flight: enough to keep the server busy
_FETCH = 1_000


@dataclass(frozen=True, slots=True)
class FloorResult:
    """Events moved from publish to committed rows, and how long it took."""

    events: int
    seconds: float

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


def _columns_ddl() -> str:
    types = {"age": "integer", "followers": "bigint", "purchase_amount": "numeric"}
    times = {"event_time", "action_time"}
    columns = [
        f"{name} {'timestamptz' if name in times else types.get(name, 'text')}"
        for name in EventRow._fields
    ]
    return ", ".join(columns)


async def run_floor(nats_url: str, database_url: str, *, events: int, seed: int = 1) -> FloorResult:
    """Publish `events` generated events one per message, pull and COPY them; time it."""
    generator = Generator(seed=seed)
    bodies = [orjson.dumps(generator.event()) for _ in range(events)]
    tag = uuid.uuid4().hex[:12]
    stream, subject, table = f"FLOOR_{tag}", f"floor-{tag}.events", f"floor_{tag}"
    nc = await nats.connect(nats_url, name="adfunnel-bench-floor")
    js = nc.jetstream()
    conn = await asyncpg.connect(database_url)
    try:
        await js.add_stream(
            StreamConfig(
                name=stream,
                subjects=[subject],
                retention=RetentionPolicy.WORK_QUEUE,
                storage=StorageType.FILE,
            )
        )
        await js.add_consumer(
            stream, ConsumerConfig(durable_name="floor", ack_policy=AckPolicy.EXPLICIT)
        )
        await conn.execute(f"CREATE TABLE {table} ({_columns_ddl()})")
        subscription = await js.pull_subscribe(subject, "floor", stream=stream)

        async def produce() -> None:
            for start in range(0, len(bodies), _PUBLISH_WINDOW):
                chunk = bodies[start : start + _PUBLISH_WINDOW]
                await asyncio.gather(
                    *(
                        js.publish(subject, body, stream=stream, headers={"Nats-Msg-Id": str(i)})
                        for i, body in enumerate(chunk, start)
                    )
                )

        async def consume() -> None:
            stored = 0
            while stored < events:
                try:
                    messages = await subscription.fetch(_FETCH, timeout=1)
                except nats.errors.TimeoutError:
                    continue
                rows = [tuple(event_row(orjson.loads(m.data))) for m in messages]
                await conn.copy_records_to_table(table, records=rows, columns=EventRow._fields)
                await asyncio.gather(*(m.ack() for m in messages))
                stored += len(rows)

        started = time.perf_counter()
        await asyncio.gather(produce(), consume())
        seconds = time.perf_counter() - started
        return FloorResult(events, seconds)
    finally:
        await conn.execute(f"DROP TABLE IF EXISTS {table}")
        await conn.close()
        try:
            await js.delete_stream(stream)
        finally:
            await nc.close()
