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
from datetime import UTC, datetime, timedelta
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
    """Report filters; `start` inclusive, `end` exclusive, on event time."""

    start: datetime | None = None
    end: datetime | None = None
    source: str | None = None
    funnel_stage: str | None = None
    event_type: str | None = None
    campaign_id: str | None = None


# Revenue = purchaseAmount of Facebook checkout.complete and TikTok purchase (SPEC §4);
# migration 0002 spells the same rule in its rollup statement.
_REVENUE_TYPES = (
    "((source = 'facebook' AND event_type = 'checkout.complete')"
    " OR (source = 'tiktok' AND event_type = 'purchase'))"
)
REVENUE_CONDITION = f"{_REVENUE_TYPES} AND purchase_amount IS NOT NULL"
# Latest event per user: newest event time; ties go to the copy received last.
# Users are grouped byte-wise (COLLATE "C"): the same groups as any collation's equality,
# and a third faster to sort than the database's linguistic collation.
_LATEST_USER = 'DISTINCT ON (user_id COLLATE "C") user_id'
_LATEST_ORDER = 'ORDER BY user_id COLLATE "C", event_time DESC, received_at DESC, event_id DESC'
AGE_BUCKETS = ("0-12", "13-17", "18-24", "25-34", "35-44", "45-54", "55-64", "65+")
_AGE_BUCKET_SQL = (
    "CASE WHEN age < 13 THEN '0-12' WHEN age < 18 THEN '13-17' WHEN age < 25 THEN '18-24'"
    " WHEN age < 35 THEN '25-34' WHEN age < 45 THEN '35-44' WHEN age < 55 THEN '45-54'"
    " WHEN age < 65 THEN '55-64' ELSE '65+' END"
)
FOLLOWER_BUCKETS = ("0-999", "1000-9999", "10000-99999", "100000-999999", "1000000+")
_FOLLOWER_BUCKET_SQL = (
    "CASE WHEN followers < 1000 THEN '0-999' WHEN followers < 10000 THEN '1000-9999'"
    " WHEN followers < 100000 THEN '10000-99999' WHEN followers < 1000000 THEN '100000-999999'"
    " ELSE '1000000+' END"
)


def where_clause(
    filters: EventFilters, *extra: str, time_column: str = "event_time"
) -> tuple[str, list[Any]]:
    """A parameterized WHERE clause for the filters, plus fixed `extra` conditions."""
    params = _Params()
    conditions = list(extra)
    if filters.start is not None:
        conditions.append(f"{time_column} >= {params.add(filters.start)}")
    if filters.end is not None:
        conditions.append(f"{time_column} < {params.add(filters.end)}")
    conditions += _filter_conditions(filters, params)
    return (" WHERE " + " AND ".join(conditions) if conditions else ""), params.values


class _Params:
    """Numbered query parameters ($1, $2, …) collected while a statement is built."""

    def __init__(self) -> None:
        self.values: list[Any] = []

    def add(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


def _filter_conditions(filters: EventFilters, params: _Params) -> list[str]:
    """Equality filters other than time, shared by raw and rollup queries."""
    conditions = []
    for column, value in (
        ("source", filters.source),
        ("funnel_stage", filters.funnel_stage),
        ("event_type", filters.event_type),
        ("campaign_id", filters.campaign_id),
    ):
        if value is not None:
            conditions.append(f"{column} = {params.add(value)}")
    return conditions


GRAINS = ("day", "hour", "minute")
_STEP = {"day": timedelta(days=1), "hour": timedelta(hours=1), "minute": timedelta(minutes=1)}
Segment = tuple[datetime | None, datetime | None]


def _floor(moment: datetime, grain: str) -> datetime:
    moment = moment.astimezone(UTC)
    if grain == "day":
        return moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if grain == "hour":
        return moment.replace(minute=0, second=0, microsecond=0)
    return moment.replace(second=0, microsecond=0)


def _ceil(moment: datetime, grain: str) -> datetime:
    floor = _floor(moment, grain)
    return floor if floor == moment else floor + _STEP[grain]


def plan_segments(
    start: datetime | None, end: datetime | None, grains: Sequence[str] = GRAINS
) -> dict[str, list[Segment]]:
    """Cover [start, end) with whole buckets of the coarsest grains that fit, finer grains
    towards the edges, and raw rows (key "raw") for what is left of a minute at each end."""
    plan: dict[str, list[Segment]] = {grain: [] for grain in (*grains, "raw")}

    def cover(lo: datetime | None, hi: datetime | None, level: int) -> None:
        if lo is not None and hi is not None and lo >= hi:
            return
        if level == len(grains):
            plan["raw"].append((lo, hi))
            return
        grain = grains[level]
        a = _ceil(lo, grain) if lo is not None else None
        b = _floor(hi, grain) if hi is not None else None
        if a is not None and b is not None and a >= b:
            cover(lo, hi, level + 1)
            return
        plan[grain].append((a, b))
        if lo is not None and a is not None:
            cover(lo, a, level + 1)
        if hi is not None and b is not None:
            cover(b, hi, level + 1)

    cover(start, end, 0)
    return plan


def _grains_for(interval: str | None) -> tuple[str, ...]:
    # A series bucket must never be coarser than the rollup rows it is built from.
    return GRAINS if interval is None else GRAINS[GRAINS.index(interval) :]


def _segment_condition(column: str, segments: list[Segment], params: _Params) -> str:
    parts = []
    for lo, hi in segments:
        bounds = []
        if lo is not None:
            bounds.append(f"{column} >= {params.add(lo)}")
        if hi is not None:
            bounds.append(f"{column} < {params.add(hi)}")
        parts.append("(" + " AND ".join(bounds) + ")" if bounds else "TRUE")
    return "(" + " OR ".join(parts) + ")"


def _union(
    filters: EventFilters,
    params: _Params,
    *,
    interval: str | None,
    rollup_columns: str,
    raw_columns: str,
    extra: str | None = None,
) -> str:
    """Rollup rows for whole buckets and raw rows for the edges, as one UNION ALL."""
    plan = plan_segments(filters.start, filters.end, _grains_for(interval))
    parts = []
    for grain, segments in plan.items():
        if not segments:
            continue
        rollup = grain != "raw"
        conditions = [
            _segment_condition("bucket" if rollup else "event_time", segments, params),
            *_filter_conditions(filters, params),
        ]
        if extra:
            conditions.append(extra)
        table = f"event_rollup_{grain}" if rollup else "events"
        columns = rollup_columns if rollup else raw_columns
        parts.append(f"SELECT {columns} FROM {table} WHERE {' AND '.join(conditions)}")
    return " UNION ALL ".join(parts)


async def event_breakdown(conn: Conn, filters: EventFilters) -> list[asyncpg.Record]:
    """Counts per (source, funnel stage, event type) under the filters."""
    params = _Params()
    union = _union(
        filters,
        params,
        interval=None,
        rollup_columns="source, funnel_stage, event_type, events AS n",
        raw_columns="source, funnel_stage, event_type, 1 AS n",
    )
    return await conn.fetch(
        "SELECT source, funnel_stage, event_type, sum(n)::bigint AS count"
        f" FROM ({union}) x GROUP BY 1, 2, 3 HAVING sum(n) > 0 ORDER BY count DESC, 1, 2, 3",
        *params.values,
    )


def _bucket_of(interval: str, column: str) -> str:
    if interval not in GRAINS:
        raise ValueError(f"unknown interval {interval!r}")
    return f"date_trunc('{interval}', {column} AT TIME ZONE 'UTC') AS b"


async def event_series(conn: Conn, filters: EventFilters, interval: str) -> list[asyncpg.Record]:
    """Counts per UTC time bucket (`minute`, `hour` or `day`), empty buckets omitted."""
    params = _Params()
    union = _union(
        filters,
        params,
        interval=interval,
        rollup_columns=f"{_bucket_of(interval, 'bucket')}, events AS n",
        raw_columns=f"{_bucket_of(interval, 'event_time')}, 1 AS n",
    )
    return await conn.fetch(
        f"SELECT b AS bucket, sum(n)::bigint AS count FROM ({union}) x"
        " GROUP BY 1 HAVING sum(n) > 0 ORDER BY 1",
        *params.values,
    )


async def revenue_groups(conn: Conn, filters: EventFilters) -> list[asyncpg.Record]:
    """Exact revenue and transactions per (source, campaign) under the filters."""
    params = _Params()
    union = _union(
        filters,
        params,
        interval=None,
        rollup_columns="source, NULLIF(campaign_id, '') AS campaign_id, revenue, transactions",
        raw_columns="source, campaign_id, purchase_amount AS revenue, 1 AS transactions",
        extra=_REVENUE_TYPES,
    )
    return await conn.fetch(
        "SELECT source, campaign_id, sum(revenue) AS revenue,"
        " sum(transactions)::bigint AS transactions"
        f" FROM ({union}) x WHERE revenue IS NOT NULL"
        " GROUP BY 1, 2 HAVING sum(transactions) > 0",
        *params.values,
    )


async def revenue_series(conn: Conn, filters: EventFilters, interval: str) -> list[asyncpg.Record]:
    """Revenue and transactions per UTC time bucket, empty buckets omitted."""
    params = _Params()
    union = _union(
        filters,
        params,
        interval=interval,
        rollup_columns=f"{_bucket_of(interval, 'bucket')}, revenue, transactions",
        raw_columns=f"{_bucket_of(interval, 'event_time')}, purchase_amount AS revenue,"
        " 1 AS transactions",
        extra=_REVENUE_TYPES,
    )
    return await conn.fetch(
        "SELECT b AS bucket, sum(revenue) AS revenue, sum(transactions)::bigint AS transactions"
        f" FROM ({union}) x WHERE revenue IS NOT NULL GROUP BY 1 HAVING sum(transactions) > 0"
        " ORDER BY 1",
        *params.values,
    )


async def rollup_mismatches(conn: Conn) -> list[asyncpg.Record]:
    """Rollup rows that disagree with the raw rows (none, unless something is broken)."""
    mismatches: list[asyncpg.Record] = []
    for grain in GRAINS:
        mismatches += await conn.fetch(
            "WITH raw AS (SELECT date_trunc($1, event_time AT TIME ZONE 'UTC')"
            " AT TIME ZONE 'UTC' AS bucket, source, funnel_stage, event_type,"
            " coalesce(campaign_id, '') AS campaign_id, count(*) AS events,"
            f" coalesce(sum(purchase_amount) FILTER (WHERE {REVENUE_CONDITION}), 0) AS revenue,"
            f" count(*) FILTER (WHERE {REVENUE_CONDITION}) AS transactions"
            " FROM events GROUP BY 1, 2, 3, 4, 5),"
            f" rolled AS (SELECT * FROM event_rollup_{grain} WHERE events <> 0"
            " OR revenue <> 0 OR transactions <> 0)"
            " SELECT $1 AS grain, * FROM ((TABLE raw EXCEPT TABLE rolled)"
            " UNION ALL (TABLE rolled EXCEPT TABLE raw)) diff",
            grain,
        )
    return mismatches


async def facebook_demographics(conn: Conn, filters: EventFilters) -> list[asyncpg.Record]:
    """Distinct Facebook users in range by their latest attributes, as grouping sets.

    Rows with `grouping` 0b1111 are the total; the others carry one of: age bucket,
    gender, country, or (country, city).
    """
    where, params = where_clause(EventFilters(filters.start, filters.end), "source = 'facebook'")
    return await conn.fetch(
        f"WITH latest AS (SELECT {_LATEST_USER}, age, gender, country, city"
        f" FROM events{where} {_LATEST_ORDER})"
        f" SELECT {_AGE_BUCKET_SQL} AS age_bucket, gender, country, city,"
        f" GROUPING({_AGE_BUCKET_SQL}, gender, country, city) AS grouping, count(*) AS users"
        f" FROM latest GROUP BY GROUPING SETS (({_AGE_BUCKET_SQL}), (gender), (country),"
        " (country, city), ())",
        *params,
    )


async def tiktok_followers(conn: Conn, filters: EventFilters) -> list[asyncpg.Record]:
    """Distinct TikTok users in range by their latest follower count: stats and buckets.

    The row whose `bucket` is NULL carries the totals (users, min, max, avg, median).
    """
    where, params = where_clause(EventFilters(filters.start, filters.end), "source = 'tiktok'")
    return await conn.fetch(
        f"WITH latest AS (SELECT {_LATEST_USER}, followers"
        f" FROM events{where} {_LATEST_ORDER})"
        f" SELECT {_FOLLOWER_BUCKET_SQL} AS bucket, count(*) AS users,"
        " min(followers) AS min, max(followers) AS max, avg(followers) AS avg,"
        " percentile_cont(0.5) WITHIN GROUP (ORDER BY followers) AS median"
        f" FROM latest GROUP BY GROUPING SETS (({_FOLLOWER_BUCKET_SQL}), ())",
        *params,
    )


async def tiktok_engagement(conn: Conn, filters: EventFilters) -> list[asyncpg.Record]:
    """Distinct TikTok users by device and by country of their latest top-funnel event."""
    where, params = where_clause(
        EventFilters(filters.start, filters.end), "source = 'tiktok'", "funnel_stage = 'top'"
    )
    return await conn.fetch(
        f"WITH latest AS (SELECT {_LATEST_USER}, device, country"
        f" FROM events{where} {_LATEST_ORDER})"
        " SELECT device, country, GROUPING(device, country) AS grouping, count(*) AS users"
        " FROM latest GROUP BY GROUPING SETS ((device), (country))",
        *params,
    )


async def rejected_summary(
    conn: Conn, filters: EventFilters, *, reasons: int, samples: int
) -> tuple[int, list[asyncpg.Record], list[asyncpg.Record]]:
    """Total, counts by reason (most frequent first) and the newest samples, by receipt time."""
    where, params = where_clause(
        EventFilters(filters.start, filters.end), time_column="received_at"
    )
    total = await conn.fetchval(f"SELECT count(*) FROM rejected_events{where}", *params)
    by_reason = await conn.fetch(
        f"SELECT reason, count(*) AS count FROM rejected_events{where}"
        f" GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT {int(reasons)}",
        *params,
    )
    newest = await conn.fetch(
        "SELECT received_at, reason, correlation_id,"
        " coalesce(payload, to_jsonb(raw)) AS payload"
        f" FROM rejected_events{where} ORDER BY received_at DESC, id DESC LIMIT {int(samples)}",
        *params,
    )
    return int(total), list(by_reason), list(newest)


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


async def prepared_database(server_dsn: str, name: str) -> str:
    """Wait for a fresh server, create database `name` on it if needed; returns its URL."""
    await wait_for_database(server_dsn)
    await ensure_database(server_dsn, name)
    return server_dsn.rsplit("/", 1)[0] + f"/{name}"


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


# The same answers straight from the raw rows: the baseline `adfunnel bench reports`
# compares against, and a second opinion on the rollup path.
async def naive_event_breakdown(conn: Conn, filters: EventFilters) -> list[asyncpg.Record]:
    """`event_breakdown` computed by GROUP BY over the raw rows."""
    where, params = where_clause(filters)
    return await conn.fetch(
        "SELECT source, funnel_stage, event_type, count(*) AS count FROM events"
        f"{where} GROUP BY 1, 2, 3 ORDER BY count DESC, 1, 2, 3",
        *params,
    )


async def naive_event_series(
    conn: Conn, filters: EventFilters, interval: str
) -> list[asyncpg.Record]:
    """`event_series` computed by GROUP BY over the raw rows."""
    where, params = where_clause(filters)
    return await conn.fetch(
        f"SELECT {_bucket_of(interval, 'event_time')}, count(*) AS count"
        f" FROM events{where} GROUP BY 1 ORDER BY 1",
        *params,
    )


async def naive_revenue_groups(conn: Conn, filters: EventFilters) -> list[asyncpg.Record]:
    """`revenue_groups` computed by GROUP BY over the raw rows."""
    where, params = where_clause(filters, REVENUE_CONDITION)
    return await conn.fetch(
        "SELECT source, campaign_id, sum(purchase_amount) AS revenue, count(*) AS transactions"
        f" FROM events{where} GROUP BY 1, 2",
        *params,
    )


async def naive_revenue_series(
    conn: Conn, filters: EventFilters, interval: str
) -> list[asyncpg.Record]:
    """`revenue_series` computed by GROUP BY over the raw rows."""
    where, params = where_clause(filters, REVENUE_CONDITION)
    return await conn.fetch(
        f"SELECT {_bucket_of(interval, 'event_time')}, sum(purchase_amount) AS revenue,"
        f" count(*) AS transactions FROM events{where} GROUP BY 1 ORDER BY 1",
        *params,
    )
