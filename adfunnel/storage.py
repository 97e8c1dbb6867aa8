"""PostgreSQL storage: migrations, batched writes and the reads the reporter needs.

Every SQL statement of the project lives in this module. Writes go through a per-connection
temporary staging table: COPY is the fastest way in, and `INSERT … SELECT DISTINCT ON …
ON CONFLICT` then keeps one row per eventId: the earliest received copy, inside the batch
and against what is already stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import TYPE_CHECKING, Any, TypeAlias

import asyncpg

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    # A plain connection or one borrowed from a pool: every function here takes either.
    Conn: TypeAlias = asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]

from adfunnel.schema import EventRow

# Any constant works; it only has to be the same for every process of the project.
MIGRATION_LOCK_ID = 0x0ADF0001

EVENT_COLUMNS = EventRow._fields
_STAGED_EXTRA = ("payload", "correlation_id", "received_at", "stream_seq", "seq")
_STAGING_DDL = """
CREATE TEMP TABLE IF NOT EXISTS events_staging (
    event_id text, event_time timestamptz, source text, funnel_stage text, event_type text,
    user_id text, purchase_amount numeric, campaign_id text, ad_id text, age integer,
    gender text, country text, city text, followers bigint, device text,
    action_time timestamptz, payload jsonb, correlation_id text, received_at timestamptz,
    stream_seq bigint, seq bigint
) ON COMMIT DELETE ROWS
"""
_COLUMN_LIST = ", ".join((*EVENT_COLUMNS, *_STAGED_EXTRA[:-1]))
_UPDATE_LIST = ", ".join(f"{c} = EXCLUDED.{c}" for c in (*EVENT_COLUMNS[1:], *_STAGED_EXTRA[:-1]))
# The earliest received copy of an eventId wins, whatever order parallel writers commit in:
# a copy received later never replaces it, an earlier one that commits late does. Ordinary
# re-sends arrive later and change nothing. `xmax = 0` tells inserted rows from replaced ones.
_MERGE_STAGED = f"""
INSERT INTO events ({_COLUMN_LIST})
SELECT DISTINCT ON (event_id) {_COLUMN_LIST}
FROM events_staging
ORDER BY event_id, received_at, stream_seq, seq
ON CONFLICT (event_id) DO UPDATE SET {_UPDATE_LIST}, stored_at = clock_timestamp()
WHERE (events.received_at, events.stream_seq) > (EXCLUDED.received_at, EXCLUDED.stream_seq)
RETURNING (xmax = 0) AS inserted
"""
_REJECTED_COLUMNS = (
    "dedup_key",
    "event_id",
    "source",
    "reason",
    "batch_index",
    "payload",
    "raw",
    "correlation_id",
    "received_at",
)
_INSERT_REJECTED = f"""
INSERT INTO rejected_events ({", ".join(_REJECTED_COLUMNS)})
SELECT * FROM unnest(
    $1::text[], $2::text[], $3::text[], $4::text[], $5::int[], $6::jsonb[], $7::text[],
    $8::text[], $9::timestamptz[]
)
ON CONFLICT (dedup_key) DO NOTHING
"""


@dataclass(frozen=True, slots=True)
class StagedEvent:
    """An accepted event ready to write: typed columns plus delivery metadata."""

    row: EventRow
    payload: str
    correlation_id: str | None
    received_at: datetime
    stream_seq: int | None


@dataclass(frozen=True, slots=True)
class RejectedRow:
    """One row of the rejected store; `dedup_key` makes redelivered rejections idempotent."""

    dedup_key: str
    event_id: str | None
    source: str | None
    reason: str
    batch_index: int | None
    payload: str | None
    raw: str | None
    correlation_id: str | None
    received_at: datetime


def _jsonb_encode(text: str) -> bytes:
    return b"\x01" + text.encode()  # jsonb's binary format: version 1, then the JSON text


def _jsonb_decode(data: bytes) -> str:
    return data[1:].decode()


async def _json_text(conn: Conn) -> None:
    # Payloads are already JSON text: pass them through untouched, in the binary format
    # because COPY (the fast path) speaks only binary.
    await conn.set_type_codec(
        "jsonb", encoder=_jsonb_encode, decoder=_jsonb_decode, schema="pg_catalog", format="binary"
    )


async def create_pool(dsn: str, *, size: int) -> asyncpg.Pool:
    """A small pool; each connection is prepared for staging writes."""
    pool = await asyncpg.create_pool(
        dsn, min_size=1, max_size=size, init=_json_text, command_timeout=120
    )
    assert pool is not None
    return pool


def _migrations() -> list[tuple[int, str, str]]:
    found = []
    for entry in resources.files("adfunnel.migrations").iterdir():
        match = re.fullmatch(r"(\d{4})_(\w+)\.sql", entry.name)
        if match:
            found.append((int(match[1]), match[2], entry.read_text()))
    return sorted(found)


async def migrate(conn: Conn) -> list[int]:
    """Apply pending migrations under an advisory lock; returns the versions applied now."""
    applied: list[int] = []
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_ID)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, name, sql in _migrations():
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name
                )
            applied.append(version)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_ID)
    return applied


async def insert_events(conn: Conn, events: Sequence[StagedEvent]) -> int:
    """Store a batch in the caller's transaction; returns how many eventIds were new."""
    if not conn.is_in_transaction():
        # The staging table empties at commit: outside a transaction nothing would be stored.
        raise RuntimeError("insert_events needs the caller's transaction")
    await conn.execute(_STAGING_DDL)
    records = [
        (*e.row, e.payload, e.correlation_id, e.received_at, e.stream_seq, seq)
        for seq, e in enumerate(events)
    ]
    await conn.copy_records_to_table(
        "events_staging", records=records, columns=(*EVENT_COLUMNS, *_STAGED_EXTRA)
    )
    changed = await conn.fetch(_MERGE_STAGED)
    return sum(1 for row in changed if row["inserted"])


async def insert_rejected(conn: Conn, rows: Sequence[RejectedRow]) -> int:
    """Store rejected events; a redelivered rejection is not stored twice."""
    if not rows:
        return 0
    columns = [[getattr(row, name) for row in rows] for name in _REJECTED_COLUMNS]
    status = await conn.execute(_INSERT_REJECTED, *columns)
    return int(status.rsplit(" ", 1)[1])


async def fetch_event(conn: Conn, event_id: str) -> asyncpg.Record | None:
    """The stored event with its trace columns, or None."""
    return await conn.fetchrow(
        "SELECT payload, correlation_id, received_at, stored_at FROM events WHERE event_id = $1",
        event_id,
    )


@dataclass(frozen=True, slots=True)
class EventFilters:
    """Filters of the events report; `start` inclusive, `end` exclusive, on event time."""

    start: datetime | None = None
    end: datetime | None = None
    source: str | None = None
    funnel_stage: str | None = None
    event_type: str | None = None


def where_clause(filters: EventFilters) -> tuple[str, list[Any]]:
    """A parameterized WHERE clause for the filters."""
    conditions: list[str] = []
    params: list[Any] = []
    for column, op, value in (
        ("event_time", ">=", filters.start),
        ("event_time", "<", filters.end),
        ("source", "=", filters.source),
        ("funnel_stage", "=", filters.funnel_stage),
        ("event_type", "=", filters.event_type),
    ):
        if value is not None:
            params.append(value)
            conditions.append(f"{column} {op} ${len(params)}")
    return (" WHERE " + " AND ".join(conditions) if conditions else ""), params


async def event_breakdown(conn: Conn, filters: EventFilters) -> list[asyncpg.Record]:
    """Counts per (source, funnel stage, event type) under the filters."""
    where, params = where_clause(filters)
    return await conn.fetch(
        "SELECT source, funnel_stage, event_type, count(*) AS count FROM events"
        f"{where} GROUP BY 1, 2, 3 ORDER BY count DESC, 1, 2, 3",
        *params,
    )


async def event_series(conn: Conn, filters: EventFilters, interval: str) -> list[asyncpg.Record]:
    """Counts per UTC time bucket (`minute`, `hour` or `day`), empty buckets omitted."""
    if interval not in ("minute", "hour", "day"):
        raise ValueError(f"unknown interval {interval!r}")
    where, params = where_clause(filters)
    return await conn.fetch(
        f"SELECT date_trunc('{interval}', event_time AT TIME ZONE 'UTC') AS bucket,"
        f" count(*) AS count FROM events{where} GROUP BY 1 ORDER BY 1",
        *params,
    )


async def stored_counts(conn: Conn) -> tuple[int, int]:
    """How many events and rejected events are stored."""
    row = await conn.fetchrow(
        "SELECT (SELECT count(*) FROM events) AS events,"
        " (SELECT count(*) FROM rejected_events) AS rejected"
    )
    assert row is not None
    return int(row["events"]), int(row["rejected"])


async def wait_for_database(dsn: str, *, max_wait_s: float = 60.0) -> None:
    """Wait until PostgreSQL accepts connections (a fresh server spends a moment starting)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max_wait_s
    while True:
        try:
            conn = await asyncpg.connect(dsn, timeout=5)
        except (OSError, asyncpg.CannotConnectNowError, asyncpg.PostgresConnectionError):
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.2)
        else:
            await conn.close()
            return


async def ensure_database(server_dsn: str, name: str) -> None:
    """Create database `name` on the server if it does not exist yet."""
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
        raise ValueError(f"unsafe database name {name!r}")
    conn = await asyncpg.connect(server_dsn)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            with contextlib.suppress(asyncpg.DuplicateDatabaseError):
                await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
