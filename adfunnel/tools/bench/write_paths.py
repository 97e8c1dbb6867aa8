"""Compare ways to write a batch of events to PostgreSQL (the writer's design choice).

    python -m adfunnel.tools.bench.write_paths [DATABASE_URL] [--rows 50000] [--batch 10000]

Without a URL it starts the embedded PostgreSQL in a temporary directory. Each method
writes the same generated events into a fresh `events` table, in batches, one
transaction per batch, then writes the same batches again (all conflicts). Prints
rows/s per method; timings belong here and in docs/performance.md, never in tests.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from adfunnel import embedded, storage
from adfunnel.schema import event_row
from adfunnel.storage import EVENT_COLUMNS, StagedEvent
from adfunnel.storage._payloads import compress, row_ids, time_text
from adfunnel.tools.generator import Generator

_COLUMNS = (*EVENT_COLUMNS, "payload", "event_key", "correlation_id", "received_at", "stream_seq")
_TYPES = (
    "text",
    "timestamptz",
    "text",
    "text",
    "text",
    "text",
    "numeric",
    "text",
    "int",
    "text",
    "text",
    "text",
    "bigint",
    "text",
    "bytea",
    "uuid",
    "text",
    "timestamptz",
    "bigint",
)


async def copy_merge(conn: Any, batch: list[StagedEvent]) -> None:
    await storage.insert_events(conn, batch)


def _records(batch: list[StagedEvent]) -> list[tuple[Any, ...]]:
    return [
        (
            *e.row,
            compress(e.payload.encode(), row_ids(e.row[0], e.row[5], time_text(e.row[1]))),
            storage.event_key(e.row[0]),
            e.correlation_id,
            e.received_at,
            e.stream_seq,
        )
        for e in batch
    ]


async def executemany(conn: Any, batch: list[StagedEvent]) -> None:
    marks = ", ".join(f"${i + 1}" for i in range(len(_COLUMNS)))
    await conn.executemany(
        f"INSERT INTO events ({', '.join(_COLUMNS)}) VALUES ({marks})"
        " ON CONFLICT (event_key) DO NOTHING",
        _records(batch),
    )


async def unnest(conn: Any, batch: list[StagedEvent]) -> None:
    records = _records(batch)
    arrays = [list(column) for column in zip(*records, strict=True)]
    params = ", ".join(f"${i + 1}::{t}[]" for i, t in enumerate(_TYPES))
    await conn.execute(
        f"INSERT INTO events ({', '.join(_COLUMNS)}) SELECT * FROM unnest({params})"
        " ON CONFLICT (event_key) DO NOTHING",
        *arrays,
    )


METHODS: dict[str, Callable[[Any, list[StagedEvent]], Awaitable[None]]] = {
    "copy→staging + INSERT…ON CONFLICT": copy_merge,
    "INSERT…SELECT unnest(arrays) ON CONFLICT": unnest,
    "executemany INSERT…ON CONFLICT": executemany,
}


async def run(dsn: str, rows: int, batch_size: int) -> None:
    received = datetime.now(UTC)
    events = [
        StagedEvent(event_row(e), orjson.dumps(e).decode(), "bench", received, None)
        for e in Generator(seed=1).batch(rows)
    ]
    batches = [events[i : i + batch_size] for i in range(0, rows, batch_size)]
    print(f"{rows} rows in batches of {batch_size}")
    for name, method in METHODS.items():
        database = f"bench_{abs(hash(name)) % 10**8}"
        target = await storage.prepared_database(dsn, database)
        pool = await storage.create_pool(target, size=1)
        try:
            async with pool.acquire() as conn:
                await conn.execute(
                    "DROP TABLE IF EXISTS events, rejected_events, schema_migrations"
                )
                await storage.migrate(conn)
                for label in ("new rows", "all conflicts"):
                    started = time.perf_counter()
                    for batch in batches:
                        async with conn.transaction():
                            await method(conn, batch)
                    elapsed = time.perf_counter() - started
                    print(f"  {name:45s} {label:14s} {rows / elapsed:10,.0f} rows/s")
        finally:
            await pool.close()
            await storage.drop_database(dsn, database)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("database_url", nargs="?")
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=10_000)
    args = parser.parse_args()
    server = None
    dsn = args.database_url
    if dsn is None:
        server = embedded.start_postgres(Path(tempfile.mkdtemp()) / "bench")
        dsn = server.url
        asyncio.run(storage.wait_for_database(dsn))
    try:
        asyncio.run(run(dsn, args.rows, args.batch))
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
