"""`adfunnel seed`: load realistic events straight into PostgreSQL, fast, for report work.

Rows go through `storage.insert_events`, the writers' own path (COPY → staging → merge), so
anything the writers maintain alongside the raw rows stays consistent. Generating the
next batch runs in a thread while PostgreSQL merges the previous one.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson

from adfunnel import storage
from adfunnel.schema import event_row
from adfunnel.storage import StagedEvent
from adfunnel.tools.generator import DEFAULT_RETURNING_SHARE, Generator, user_mix


@dataclass(frozen=True)
class SeedPlan:
    """What to load: how many events over which time window, with how many re-sends, and
    which users (the generator's mix: `returning_share` reuse a recent user; with
    `hot_users=N`, `hot_share` of the events, None: 0.5, come from N users per source).
    """

    events: int
    days: float = 7.0
    end: datetime | None = None
    seed: int = 1
    batch: int = 20_000
    duplicate_share: float = 0.01
    returning_share: float = DEFAULT_RETURNING_SHARE
    hot_users: int = 0
    hot_share: float | None = None

    def __post_init__(self) -> None:
        # Refused here, before a pool and migrations, rather than in the generator thread.
        user_mix(self.returning_share, self.hot_users, self.hot_share)

    def generator(self) -> Generator:
        """The plan's event generator: its seed and user mix."""
        return Generator(
            seed=self.seed,
            returning_share=self.returning_share,
            hot_users=self.hot_users,
            hot_share=self.hot_share,
        )


@dataclass
class SeedResult:
    """What was loaded."""

    sent: int = 0
    stored: int = 0
    seconds: float = 0.0

    @property
    def events_per_s(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0


def _batch(
    generator: Generator, rng: random.Random, plan: SeedPlan, start: datetime, size: int
) -> list[StagedEvent]:
    window = plan.days * 86_400
    # A batch is received at once, like a bus message: it shares one trace row.
    received = datetime.now(UTC)
    out: list[StagedEvent] = []
    for _ in range(size):
        if out and rng.random() < plan.duplicate_share:
            out.append(out[rng.randrange(len(out))])  # a re-sent event: stored once
            continue
        at = start + timedelta(seconds=rng.random() * window)
        event = generator.event(at=at)
        out.append(
            StagedEvent(event_row(event), orjson.dumps(event).decode(), "seed", received, None)
        )
    return out


async def seed(database_url: str, plan: SeedPlan) -> SeedResult:
    """Migrate, then load `plan.events` events in batches; returns counts and time."""
    pool = await storage.create_pool(database_url, size=1)
    result = SeedResult()
    started = time.perf_counter()
    end = plan.end or datetime.now(UTC)
    start = end - timedelta(days=plan.days)
    generator, rng = plan.generator(), random.Random(plan.seed)
    sizes = [min(plan.batch, plan.events - i) for i in range(0, plan.events, plan.batch)]

    def generate(size: int) -> asyncio.Task[list[StagedEvent]]:
        return asyncio.create_task(asyncio.to_thread(_batch, generator, rng, plan, start, size))

    try:
        async with pool.acquire() as conn:
            await storage.migrate(conn)
            upcoming = generate(sizes[0]) if sizes else None
            for index in range(len(sizes)):
                assert upcoming is not None
                batch = await upcoming
                # One generation in flight at a time: the generator is not thread-safe.
                upcoming = generate(sizes[index + 1]) if index + 1 < len(sizes) else None
                async with conn.transaction():
                    result.stored += await storage.insert_events(conn, batch)
                result.sent += len(batch)
    finally:
        await pool.close()
    result.seconds = time.perf_counter() - started
    return result
