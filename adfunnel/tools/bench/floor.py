"""The floors of `adfunnel bench`: the pipeline's work done bare, in one asyncio process with
no HTTP and no Ray. The one-event floor: JetStream publish of one event per message, pull,
asyncpg COPY. The batched floor: the pipeline's own batching (messages of 1,000 events as
JSON lines, fetches of several messages, one COPY per fetch, acks after the commit).

They answer "how fast could these servers take events at all from one Python process on
this machine"; the pipeline's ratio to them says what HTTP, Ray and our guarantees cost.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg
import nats
import orjson
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StorageType, StreamConfig

from adfunnel.schema import EventRow, event_row
from adfunnel.settings import Settings
from adfunnel.tools.generator import Generator

_PUBLISH_WINDOW = 1_000  # publishes in flight: enough to keep the server busy
_FETCH = 1_000
# The batched floor batches like the product does by default.
EVENTS_PER_MESSAGE: int = Settings.model_fields["events_per_message"].default
FETCH_MESSAGES: int = Settings.model_fields["fetch_batch_messages"].default


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
    times = {"event_time"}
    columns = [
        f"{name} {'timestamptz' if name in times else types.get(name, 'text')}"
        for name in EventRow._fields
    ]
    return ", ".join(columns)


@dataclass
class _Rig:
    """A throwaway stream, durable pull consumer and plain table for one floor run."""

    js: JetStreamContext
    conn: asyncpg.Connection
    stream: str
    subject: str
    table: str
    subscription: JetStreamContext.PullSubscription


@asynccontextmanager
async def _rig(nats_url: str, database_url: str) -> AsyncIterator[_Rig]:
    """Set up a floor's stream, consumer and table; drop them afterwards."""
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
        yield _Rig(js, conn, stream, subject, table, subscription)
    finally:
        await conn.execute(f"DROP TABLE IF EXISTS {table}")
        await conn.close()
        try:
            await js.delete_stream(stream)
        finally:
            await nc.close()


async def _publish_all(rig: _Rig, bodies: Sequence[bytes]) -> None:
    """Publish `bodies` as messages, `_PUBLISH_WINDOW` acks awaited at a time."""
    for start in range(0, len(bodies), _PUBLISH_WINDOW):
        chunk = bodies[start : start + _PUBLISH_WINDOW]
        await asyncio.gather(
            *(
                rig.js.publish(
                    rig.subject, body, stream=rig.stream, headers={"Nats-Msg-Id": str(i)}
                )
                for i, body in enumerate(chunk, start)
            )
        )


async def _fetch(rig: _Rig, batch: int) -> list[Msg]:
    """Up to `batch` messages; none when nothing came within a second."""
    try:
        return await rig.subscription.fetch(batch, timeout=1)
    except nats.errors.TimeoutError:
        return []


async def _timed(produce: Awaitable[None], consume: Awaitable[None]) -> float:
    started = time.perf_counter()
    await asyncio.gather(produce, consume)
    return time.perf_counter() - started


async def run_floor(nats_url: str, database_url: str, *, events: int, seed: int = 1) -> FloorResult:
    """Publish `events` generated events one per message, pull and COPY them; time it."""
    generator = Generator(seed=seed)
    bodies = [orjson.dumps(generator.event()) for _ in range(events)]
    async with _rig(nats_url, database_url) as rig:

        async def consume() -> None:
            stored = 0
            while stored < events:
                if not (messages := await _fetch(rig, _FETCH)):
                    continue
                rows = [tuple(event_row(orjson.loads(m.data))) for m in messages]
                await rig.conn.copy_records_to_table(
                    rig.table, records=rows, columns=EventRow._fields
                )
                await asyncio.gather(*(m.ack() for m in messages))
                stored += len(rows)

        return FloorResult(events, await _timed(_publish_all(rig, bodies), consume()))


def batched_bodies(events: int, *, per_message: int, seed: int = 1) -> list[bytes]:
    """`events` generated events as messages of `per_message` JSON lines, like the bus's."""
    generator = Generator(seed=seed)
    bodies = []
    for start in range(0, events, per_message):
        count = min(per_message, events - start)
        bodies.append(b"\n".join(orjson.dumps(generator.event()) for _ in range(count)))
    return bodies


async def run_batched_floor(
    nats_url: str,
    database_url: str,
    *,
    events: int,
    seed: int = 1,
    per_message: int = EVENTS_PER_MESSAGE,
    fetch_messages: int = FETCH_MESSAGES,
) -> FloorResult:
    """The pipeline's batching done bare: multi-event messages published, pulled
    `fetch_messages` at a time, each line parsed and typed, one COPY per fetch, acks
    after its commit; time it. Generation happens before the clock starts."""
    bodies = batched_bodies(events, per_message=per_message, seed=seed)
    async with _rig(nats_url, database_url) as rig:

        async def consume() -> None:
            stored = 0
            while stored < events:
                if not (messages := await _fetch(rig, fetch_messages)):
                    continue
                rows = [
                    tuple(event_row(orjson.loads(line)))
                    for m in messages
                    for line in m.data.split(b"\n")
                ]
                # One statement outside a transaction block: it has committed on return.
                await rig.conn.copy_records_to_table(
                    rig.table, records=rows, columns=EventRow._fields
                )
                await asyncio.gather(*(m.ack() for m in messages))
                stored += len(rows)

        return FloorResult(events, await _timed(_publish_all(rig, bodies), consume()))
