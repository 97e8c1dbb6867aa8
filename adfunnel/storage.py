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
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from importlib import resources
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

import asyncpg

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    # A plain connection or one borrowed from a pool: every function here takes either.
    Conn: TypeAlias = asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]

from adfunnel.schema import EventRow

T = TypeVar("T")

# Any constant works; it only has to be the same for every process of the project.
MIGRATION_LOCK_ID = 0x0ADF0001

EVENT_COLUMNS = EventRow._fields
# What a writer COPYs per event: the typed columns, the payload, the delivery metadata. The
# gateway encodes everything but `stream_seq`, which only JetStream knows; `seq` (the order
# of the rows in the COPY) is filled by the staging table itself.
COPY_COLUMNS = (*EVENT_COLUMNS, "payload", "correlation_id", "received_at", "stream_seq")
_STAGING_DDL = """
CREATE TEMP TABLE IF NOT EXISTS events_staging (
    event_id text COLLATE "C", event_time timestamptz, source text, funnel_stage text,
    event_type text, user_id text, purchase_amount numeric, campaign_id text, ad_id text,
    age integer, gender text, country text, city text, followers bigint, device text,
    action_time timestamptz, payload text, correlation_id text, received_at timestamptz,
    stream_seq bigint, seq bigint GENERATED ALWAYS AS IDENTITY
) ON COMMIT DELETE ROWS
"""
_DEADLOCK_RETRIES = 5
# The earliest received copy of an eventId wins, whatever order parallel writers commit in:
# a copy received later never replaces it, an earlier one that commits late does. Ordinary
# re-sends arrive later and change nothing. One statement, in eventId order, so a writer
# takes every event row it needs before its triggers take user and rollup rows: writers
# then always lock in the same order and never deadlock. `xmax = 0` tells a new row from a
# replaced one.
_STORED_LIST = ", ".join(COPY_COLUMNS)
_UPSERT_STAGED = f"""
WITH written AS (
    INSERT INTO events AS e ({_STORED_LIST})
    SELECT DISTINCT ON (event_id)
        {", ".join(c if c != "payload" else "payload::json" for c in COPY_COLUMNS)}
    FROM events_staging
    ORDER BY event_id, received_at, stream_seq, seq
    ON CONFLICT (event_id) DO UPDATE
    SET ({_STORED_LIST}, stored_at) = ({", ".join(f"EXCLUDED.{c}" for c in COPY_COLUMNS)},
        clock_timestamp())
    WHERE (e.received_at, e.stream_seq) > (EXCLUDED.received_at, EXCLUDED.stream_seq)
    RETURNING e.xmax = 0 AS new
)
SELECT count(*) FILTER (WHERE new) FROM written
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


async def create_pool(dsn: str, *, size: int, read_only: bool = False) -> asyncpg.Pool:
    """A small pool; each connection is prepared for staging writes, or can only read."""
    settings = {"jit": "off", "work_mem": "32MB"}
    if read_only:
        # The reporter's sessions: a write, whatever its origin, fails in PostgreSQL itself.
        settings["default_transaction_read_only"] = "on"
    pool = await asyncpg.create_pool(
        dsn,
        min_size=1,
        max_size=size,
        init=_json_text,
        command_timeout=120,
        # Every statement of the project runs in milliseconds over indexes and rollups; JIT
        # compiling one (chosen by estimated cost, which big tables inflate) takes a second.
        # Sorts of a few hundred thousand narrow rows (latest event per repeat user) fit in
        # memory with this, instead of spilling to disk.
        server_settings=settings,
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


# NULL is the empty string in the writers' COPY: no column of an event may be empty (every
# text field has a minimum length of 1), and an empty field costs no escaping.
_NULL = ""
_COPY_SPECIAL = re.compile(r"[\\\t\n\r]")
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_COPY_FIELDS = len(COPY_COLUMNS) - 4  # the typed columns, before the payload


def _copy_text(value: str | None) -> str:
    if value is None:
        return _NULL
    return value.translate(_COPY_ESCAPES) if _COPY_SPECIAL.search(value) else value


def _copy_payload(payload: bytes) -> bytes:
    # JSON text escapes its own control characters, so only a backslash and the whitespace
    # a sender may put between tokens need COPY's escapes.
    payload = payload.replace(b"\\", b"\\\\").replace(b"\n", b"\\n")
    return payload.replace(b"\r", b"\\r").replace(b"\t", b"\\t")


def copy_tail(correlation_id: str | None, received_at: datetime) -> bytes:
    """The columns after the payload that every event of one request shares."""
    return f"\t{_copy_text(correlation_id)}\t{received_at.isoformat()}".encode()


# Events of one request mostly share their timestamp (the publisher stamps them "now"), and
# validation hands consecutive equal ones over as one object: remembering the last one saves
# `isoformat` of an aware datetime, which costs more than the rest of a row.
_last_iso: tuple[datetime | None, str] = (None, "")


def _iso(moment: datetime) -> str:
    global _last_iso
    last = _last_iso
    if last[0] is moment:
        return last[1]
    text = moment.isoformat()
    _last_iso = (moment, text)
    return text


def _typed_fields(row: EventRow) -> tuple[str, ...]:
    (eid, time, source, stage, kind, user, amount, campaign, ad, age, gender) = row[:11]
    (country, city, followers, device, action_time) = row[11:]
    return (
        eid,
        _iso(time),
        source,
        stage,
        kind,
        user,
        "" if amount is None else str(amount),
        campaign or "",
        ad or "",
        "" if age is None else str(age),
        gender or "",
        country or "",
        city or "",
        "" if followers is None else str(followers),
        device or "",
        "" if action_time is None else action_time.isoformat(),
    )


_TEXT_SPECIAL = re.compile(r"[\\\n\r]")
_PAYLOAD_SPECIAL = re.compile(rb"[\\\n\r\t]")


def copy_row(row: EventRow, payload: bytes, tail: bytes) -> bytes:
    """One event as a line of COPY text (what the writers load), without its `stream_seq`:
    `with_stream_seq` appends that once JetStream has numbered the message."""
    text = "\t".join(_typed_fields(row))
    # Nearly every value is plain text: one scan and a count of the tabs tell whether any
    # value holds a tab, a line end or a backslash, and only then is each one escaped.
    if text.count("\t") != _COPY_FIELDS - 1 or _TEXT_SPECIAL.search(text):
        text = "\t".join(map(_copy_text, _typed_fields(row)))
    if _PAYLOAD_SPECIAL.search(payload):
        payload = _copy_payload(payload)
    return b"".join((text.encode(), b"\t", payload, tail, b"\n"))


def with_stream_seq(lines: bytes, stream_seq: int | None) -> bytes:
    """Lines of `copy_row` with their message's stream sequence as the last column."""
    return lines.replace(b"\n", f"\t{_NULL if stream_seq is None else stream_seq}\n".encode())


_COPY_UNESCAPE = re.compile(r"\\(.)")
_COPY_UNESCAPES = {"t": "\t", "n": "\n", "r": "\r"}


def _copy_field(line: bytes, index: int) -> str:
    fields = line.rstrip(b"\n").split(b"\t")
    text = fields[index].decode("utf-8", errors="replace") if index < len(fields) else ""
    return _COPY_UNESCAPE.sub(lambda m: _COPY_UNESCAPES.get(m[1], m[1]), text)


def without_stream_seq(line: bytes) -> bytes:
    """A line as the gateway encoded it: `with_stream_seq` undone, line end dropped."""
    return line.rstrip(b"\n").rpartition(b"\t")[0]


def is_copy_line(line: bytes) -> bool:
    """Whether `line` has the columns of a `copy_row` line (without `stream_seq`)."""
    return line.rstrip(b"\n").count(b"\t") == len(COPY_COLUMNS) - 2


def copy_event_id(line: bytes) -> str:
    """The eventId of one COPY line (for the rejected store when a line is refused)."""
    return _copy_field(line, 0)


def copy_payload_text(line: bytes) -> str:
    """The event JSON of one COPY line, as it will be kept when PostgreSQL refuses the line
    (a line that is not one is kept whole)."""
    if not is_copy_line(line):
        return line.rstrip(b"\n").decode("utf-8", errors="replace")
    return _copy_field(line, COPY_COLUMNS.index("payload"))


async def insert_events(conn: Conn, events: Sequence[StagedEvent]) -> int:
    """Store a batch in the caller's transaction; returns how many eventIds were new."""
    lines = [
        with_stream_seq(
            copy_row(e.row, e.payload.encode(), copy_tail(e.correlation_id, e.received_at)),
            e.stream_seq,
        )
        for e in events
    ]
    return await insert_copy(conn, lines)


async def insert_copy(conn: Conn, chunks: Sequence[bytes]) -> int:
    """Store COPY lines (`copy_row` + `with_stream_seq`) in the caller's transaction; returns
    how many eventIds were new."""
    if not conn.is_in_transaction():
        # The staging table empties at commit: outside a transaction nothing would be stored.
        raise RuntimeError("storing events needs the caller's transaction")
    if not any(chunks):
        return 0
    await conn.execute(_STAGING_DDL)

    async def source() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    await conn.copy_to_table(
        "events_staging", source=source(), columns=COPY_COLUMNS, format="text", null=_NULL
    )
    # Two writers sharing repeat users can still lock a user's state rows in opposite
    # orders (a replacement removes, then adds). PostgreSQL breaks the cycle by failing one
    # statement; going back to before it and running it again lets the other finish first.
    for attempt in range(_DEADLOCK_RETRIES):
        try:
            async with conn.transaction():  # a savepoint inside the caller's transaction
                return int(await conn.fetchval(_UPSERT_STAGED))
        except asyncpg.DeadlockDetectedError:
            if attempt == _DEADLOCK_RETRIES - 1:
                raise
    raise AssertionError("unreachable")


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
_LATEST_USER = 'DISTINCT ON (user_id COLLATE "C")'
_LATEST_ORDER = 'ORDER BY user_id COLLATE "C", event_time DESC, received_at DESC, event_id DESC'
# The bucket labels in report order; migration 0003 defines which bucket a value falls in.
AGE_BUCKETS = ("0-12", "13-17", "18-24", "25-34", "35-44", "45-54", "55-64", "65+")
FOLLOWER_BUCKETS = ("0-999", "1000-9999", "10000-99999", "100000-999999", "1000000+")
_KEYS = "adfunnel_demographic_keys(source, funnel_stage, age, gender, country, city, device) k"


def where_clause(
    filters: EventFilters, *extra: str, time_column: str = "event_time"
) -> tuple[str, list[Any]]:
    """A parameterized WHERE clause for the filters, plus fixed `extra` conditions."""
    params = _Params()
    conditions = [*extra, *_range_conditions(filters, params, time_column)]
    conditions += _filter_conditions(filters, params)
    return (" WHERE " + " AND ".join(conditions) if conditions else ""), params.values


def _range_conditions(
    filters: EventFilters, params: _Params, time_column: str = "event_time"
) -> list[str]:
    """`start` (inclusive) and `end` (exclusive) as conditions on `time_column`."""
    conditions = []
    if filters.start is not None:
        conditions.append(f"{time_column} >= {params.add(filters.start)}")
    if filters.end is not None:
        conditions.append(f"{time_column} < {params.add(filters.end)}")
    return conditions


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
            " rolled AS (SELECT bucket, source, funnel_stage, event_type, campaign_id,"
            " sum(events), sum(revenue), sum(transactions)"
            f" FROM event_rollup_{grain} GROUP BY 1, 2, 3, 4, 5 HAVING sum(events) <> 0"
            " OR sum(revenue) <> 0 OR sum(transactions) <> 0)"
            " SELECT $1 AS grain, * FROM ((TABLE raw EXCEPT TABLE rolled)"
            " UNION ALL (TABLE rolled EXCEPT TABLE raw)) diff",
            grain,
        )
    return mismatches


async def demographic_mismatches(conn: Conn) -> dict[str, int]:
    """Rows of the demographics tables that disagree with the raw rows, by table (none,
    unless something is broken): rollups against the users with one event, and
    `repeat_user_events` against every event of the users with more."""
    columns = f"event_id, user_id, event_time, received_at, {_DEMOGRAPHIC_COLUMNS}"
    users = "SELECT source, user_id FROM events GROUP BY 1, 2 HAVING count(*)"
    expected = {
        "repeat_user_events": f"SELECT {columns} FROM events WHERE (source, user_id) IN"
        f" ({users} > 1)",
        "demographic_users": "SELECT source, user_id, count(*),"
        " CASE WHEN count(*) = 1 THEN min(event_id) END FROM events GROUP BY 1, 2",
    }
    actual = {
        "repeat_user_events": f"SELECT {columns} FROM repeat_user_events",
        "demographic_users": "SELECT source, user_id, events,"
        " CASE WHEN events = 1 THEN first_event_id END FROM demographic_users",
    }
    single = f"(SELECT * FROM events WHERE (source, user_id) IN ({users} = 1)) s"
    # Each repeat user's latest event per track and hour, linked to their next hour.
    hour = "date_trunc('hour', event_time AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'"
    repeat = f"SELECT * FROM events WHERE (source, user_id) IN ({users} > 1)"
    tracked = (
        f"SELECT CASE source WHEN 'facebook' THEN 'f' ELSE 't' END AS track, {hour} AS hour,"
        f" {columns} FROM ({repeat}) r UNION ALL SELECT 'p', {hour}, {columns} FROM ({repeat}) r"
        " WHERE source = 'tiktok' AND funnel_stage = 'top'"
    )
    hours = (
        "SELECT track, hour, coalesce(lead(hour) OVER (PARTITION BY track, user_id"
        " ORDER BY hour), 'infinity') AS next_hour, event_id, user_id, event_time, received_at,"
        f" {_DEMOGRAPHIC_COLUMNS} FROM (SELECT DISTINCT ON (track, user_id, hour) *"
        f" FROM ({tracked}) t ORDER BY track, user_id, hour, event_time DESC, received_at DESC,"
        " event_id DESC) latest"
    )
    expected["repeat_user_hours"] = hours
    actual["repeat_user_hours"] = (
        "SELECT track, hour, next_hour, event_id, user_id, event_time, received_at,"
        f" {_DEMOGRAPHIC_COLUMNS} FROM repeat_user_hours"
    )
    expected["repeat_demographic_rollup"] = (
        "SELECT hour, adfunnel_next_day(next_hour), source, k.dim, k.key1, k.key2, count(*)"
        f" FROM ({hours}) h"
        f" CROSS JOIN LATERAL {_KEYS} WHERE track <> 't' GROUP BY 1, 2, 3, 4, 5, 6"
    )
    actual["repeat_demographic_rollup"] = (
        "SELECT hour, next_day, source, dim, key1, key2, sum(users)"
        " FROM repeat_demographic_rollup GROUP BY 1, 2, 3, 4, 5, 6 HAVING sum(users) <> 0"
    )
    expected["repeat_follower_rollup"] = (
        "SELECT hour, adfunnel_next_day(next_hour), adfunnel_follower_bin(followers), count(*),"
        f" coalesce(sum(followers), 0) FROM ({hours}) h WHERE track = 't' GROUP BY 1, 2, 3"
    )
    actual["repeat_follower_rollup"] = (
        "SELECT hour, next_day, bin, sum(users), sum(followers) FROM repeat_follower_rollup"
        " GROUP BY 1, 2, 3 HAVING sum(users) <> 0 OR sum(followers) <> 0"
    )
    for grain in DEMOGRAPHIC_GRAINS:
        bucket = f"date_trunc('{grain}', event_time AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'"
        expected[f"demographic_rollup_{grain}"] = (
            f"SELECT {bucket}, source, k.dim, k.key1, k.key2, count(*)"
            f" FROM {single} CROSS JOIN LATERAL {_KEYS} GROUP BY 1, 2, 3, 4, 5"
        )
        actual[f"demographic_rollup_{grain}"] = (
            "SELECT bucket, source, dim, key1, key2, sum(users)"
            f" FROM demographic_rollup_{grain} GROUP BY 1, 2, 3, 4, 5 HAVING sum(users) <> 0"
        )
        expected[f"follower_rollup_{grain}"] = (
            f"SELECT {bucket}, adfunnel_follower_bin(followers), count(*),"
            f" coalesce(sum(followers), 0) FROM {single} WHERE source = 'tiktok' GROUP BY 1, 2"
        )
        actual[f"follower_rollup_{grain}"] = (
            f"SELECT bucket, bin, sum(users), sum(followers) FROM follower_rollup_{grain}"
            " GROUP BY 1, 2 HAVING sum(users) <> 0 OR sum(followers) <> 0"
        )
    mismatches = {}
    for table, query in expected.items():
        differing = await conn.fetchval(
            f"SELECT count(*) FROM (({query} EXCEPT ALL {actual[table]})"
            f" UNION ALL ({actual[table]} EXCEPT ALL {query})) diff"
        )
        if differing:
            mismatches[table] = int(differing)
    return mismatches


# Demographics: users with one event of their source come from the demographic rollups
# (whole hours and days) and the raw rows at the edges (migration 0003); users with more
# events from their hour rows' rollups and, at the edges, their copies in
# `repeat_user_events` (migration 0007). Each user is in exactly one of the parts, so the
# parts add up.
DEMOGRAPHIC_GRAINS = ("day", "hour")
# A key probe per candidate (OFFSET 0 keeps the subquery correlated): as an anti-join the
# planner hashed all of `repeat_user_events` (a 5 M-row scan for a few thousand candidates).
_SINGLE = "NOT EXISTS (SELECT 1 FROM repeat_user_events r WHERE r.event_id = e.event_id OFFSET 0)"


# The columns a demographics query reads from an event.
_DEMOGRAPHIC_COLUMNS = "source, funnel_stage, age, gender, country, city, followers, device"


def _single_user_parts(
    filters: EventFilters,
    params: _Params,
    *,
    rollup: str,
    rollup_columns: str,
    raw_columns: str,
    source: str,
) -> tuple[list[str], str | None]:
    """Users with one event, in range: rollup rows for whole buckets, and the raw rows at
    the edges (None when the range has no ragged edge)."""
    plan = plan_segments(filters.start, filters.end, DEMOGRAPHIC_GRAINS)
    parts = []
    for grain in DEMOGRAPHIC_GRAINS:
        if plan[grain]:
            where = _segment_condition("bucket", plan[grain], params)
            if rollup == "demographic_rollup":
                where += f" AND source = {params.add(source)}"
            parts.append(f"SELECT {rollup_columns} FROM {rollup}_{grain} WHERE {where}")
    if not plan["raw"]:
        return parts, None
    # The edges are found by time alone (OFFSET 0 keeps the source test out of the index
    # scan): ANDed with an index on the source, the planner would read a bitmap of every
    # event of that source first.
    # The repeat users' copies are narrowed to the same edges (a copy has its event's time),
    # so the anti-join hashes a few rows rather than the whole table.
    where = _segment_condition("event_time", plan["raw"], params)
    # The copies' source too, so that their (source, event_time) index finds them: without
    # it a hashed anti-join read all of `repeat_user_events` (0.45 s at 5 M copies).
    copies = _segment_condition("r.event_time", plan["raw"], params)
    src = params.add(source)
    edges = (
        f"SELECT {raw_columns} FROM (SELECT event_id, {_DEMOGRAPHIC_COLUMNS} FROM events"
        f" WHERE {where} OFFSET 0) e WHERE e.source = {src} AND NOT EXISTS"
        f" (SELECT 1 FROM repeat_user_events r WHERE r.event_id = e.event_id"
        f" AND r.source = {src} AND {copies})"
    )
    return parts, edges


@dataclass(frozen=True, slots=True)
class _RepeatParts:
    """Users with several events of a source, in range (migration 0007), under the common
    table expressions `ctes`: `rollup` selects the rows of the repeat rollups to add up and
    `last_hours` the hour rows those rollup rows count (both None when the
    range holds no whole hour); `people` are signed attribute rows (`_DEMOGRAPHIC_COLUMNS`,
    `sign`) read row by row."""

    ctes: list[str]
    rollup: str | None
    last_hours: str | None
    people: list[str]


def _qualified(alias: str) -> str:
    """`_DEMOGRAPHIC_COLUMNS` of the table or subquery `alias`."""
    return ", ".join(f"{alias}.{column}" for column in _DEMOGRAPHIC_COLUMNS.split(", "))


def _repeat_user_parts(
    filters: EventFilters, params: _Params, source: str, track: str
) -> _RepeatParts:
    """Each user's latest event in range, with `lo`, `hi` the whole hours inside it:

    - a user active in [hi, end) counts by their latest event there (read row by row);
    - any other user active in [lo, hi) counts by the row of their last hour there, the one
      whose next active hour is at `hi` or later: from the rollups when that next hour is on
      a later day than `hi`, row by row when it is later on `hi`'s own day;
    - any other user active in [start, lo) counts by their latest event there (row by row).
    A user of the first kind also has a row of the second kind when active in [lo, hi): it is
    taken back, found by one probe (the user's last hour before `hi`).
    """
    start, end = filters.start, filters.end
    lo = None if start is None else _ceil(start, "hour")
    hi = None if end is None else _floor(end, "hour")
    stage = " AND funnel_stage = 'top'" if track == "p" else ""

    def latest(since: str | None, until: str | None) -> str:
        bounds = [f"event_time >= {since}"] if since else []
        bounds += [f"event_time < {until}"] if until else []
        return (
            f"SELECT {_LATEST_USER} user_id, {_DEMOGRAPHIC_COLUMNS} FROM repeat_user_events"
            f" WHERE source = {params.add(source)}{stage} AND {' AND '.join(bounds)}"
            f" {_LATEST_ORDER}"
        )

    if lo is not None and hi is not None and lo >= hi:
        # Less than two hours, none of them whole: every copy in range is read.
        edges = latest(params.add(start), params.add(end))
        people = [f"SELECT {_DEMOGRAPHIC_COLUMNS}, 1 FROM ({edges}) e"]
        return _RepeatParts([], None, None, people)
    until = "'infinity'::timestamptz" if hi is None else params.add(hi)
    hours = [] if lo is None else [f"hour >= {params.add(lo)}"]
    hours += [] if hi is None else [f"hour < {until}"]
    in_hours = " AND ".join(hours) or "TRUE"
    people = []
    if hi is None:
        rollup = f"{in_hours} AND next_day = 'infinity'"
        last_hours = f"{in_hours} AND next_hour = 'infinity'"
    else:
        next_day = _ceil(hi, "day")
        day_after = params.add(next_day)
        rollup = f"{in_hours} AND next_day >= {day_after}"
        last_hours = f"{in_hours} AND next_hour >= {day_after}"
        if next_day > hi:
            people.append(
                f"SELECT {_DEMOGRAPHIC_COLUMNS}, 1 FROM repeat_user_hours WHERE track = '{track}'"
                f" AND next_hour >= {until} AND next_hour < {day_after} AND {in_hours}"
            )
    ctes = []
    last_after = "TRUE"
    if end is not None and hi is not None and end > hi:
        ctes.append(f"tail AS MATERIALIZED ({latest(until, params.add(end))})")
        people.append(f"SELECT {_DEMOGRAPHIC_COLUMNS}, 1 FROM tail")
        earlier = "TRUE" if lo is None else f"h.hour >= {params.add(lo)}"
        people.append(
            f"SELECT {_qualified('h')}, -1 FROM tail t CROSS JOIN LATERAL"
            f" (SELECT * FROM repeat_user_hours h WHERE h.track = '{track}'"
            f" AND h.user_id = t.user_id AND h.hour < {until} ORDER BY h.hour DESC LIMIT 1) h"
            f" WHERE {earlier}"
        )
        last_after = f"NOT (h.next_hour = {until} AND d.user_id IN (SELECT user_id FROM tail))"
    if start is not None and lo is not None and start < lo:
        people.append(
            f"SELECT {_qualified('d')}, 1"
            f" FROM ({latest(params.add(start), params.add(lo))}) d"
            # One probe per user (OFFSET 0 keeps it one): joined as a whole, the planner
            # scanned the key index for every user of that hour.
            f" CROSS JOIN LATERAL (SELECT h.next_hour FROM repeat_user_hours h"
            f" WHERE h.track = '{track}' AND h.user_id = d.user_id"
            f" AND h.hour = {params.add(lo - _STEP['hour'])} OFFSET 0) h"
            f" WHERE h.next_hour >= {until} AND {last_after}"
        )
    return _RepeatParts(ctes, rollup, last_hours, people)


async def demographic_counts(
    conn: Conn, filters: EventFilters, source: str
) -> list[asyncpg.Record]:
    """Distinct users of `source` in range per (dim, key1, key2), by their latest attributes.

    Facebook: dims age, gender, country, city (key1 country, key2 city). TikTok: device and
    country of each user's latest top-funnel event.
    """
    params = _Params()
    parts, edges = _single_user_parts(
        filters,
        params,
        rollup="demographic_rollup",
        rollup_columns="dim, key1, key2, users",
        raw_columns=_DEMOGRAPHIC_COLUMNS,
        source=source,
    )
    repeat = _repeat_user_parts(filters, params, source, "p" if source == "tiktok" else "f")
    if repeat.rollup is not None:
        parts.append(
            "SELECT dim, key1, key2, users FROM repeat_demographic_rollup"
            f" WHERE source = {params.add(source)} AND {repeat.rollup}"
        )
    # Edge and repeat users as signed attribute rows, counted per distinct combination
    # first: the keys are then spelled out once per combination instead of once per user.
    people = [f"SELECT {_DEMOGRAPHIC_COLUMNS}, 1 FROM ({edges}) s"] if edges else []
    people += repeat.people
    if people:
        parts.append(
            f"SELECT k.dim, k.key1, k.key2, g.n FROM (SELECT {_DEMOGRAPHIC_COLUMNS},"
            f" sum(sign) AS n FROM ({' UNION ALL '.join(people)}) p ({_DEMOGRAPHIC_COLUMNS}, sign)"
            f" GROUP BY {_DEMOGRAPHIC_COLUMNS}) g CROSS JOIN LATERAL {_KEYS}"
        )
    with_ctes = f"WITH {', '.join(repeat.ctes)} " if repeat.ctes else ""
    return await conn.fetch(
        f"{with_ctes}SELECT dim, key1, key2, sum(users)::bigint AS users"
        f" FROM ({' UNION ALL '.join(parts)}) x (dim, key1, key2, users)"
        " GROUP BY 1, 2, 3 HAVING sum(users) > 0",
        *params.values,
    )


@dataclass(frozen=True, slots=True)
class FollowerStats:
    """Distinct TikTok users in range by their latest follower count."""

    users: int
    counted: int  # users whose latest event has a follower count
    total: Decimal  # sum of those counts
    minimum: int | None
    maximum: int | None
    median: Fraction | None
    buckets: dict[str, int]


def median_ranks(counted: int) -> tuple[int, int]:
    """1-based ranks whose mean is the median (percentile_cont(0.5)) of `counted` values."""
    return (counted + 1) // 2, counted // 2 + 1


def _follower_statement(filters: EventFilters, params: _Params) -> str:
    """Histogram rows (`kind` 'bin') and the exact values of the bins holding the minimum,
    the median and the maximum (`kind` 'value'), in one statement."""
    parts, edges = _single_user_parts(
        filters,
        params,
        rollup="follower_rollup",
        rollup_columns="bin, users, followers",
        raw_columns="adfunnel_follower_bin(followers), 1, followers",
        source="tiktok",
    )
    parts += [edges] if edges else []
    repeat = _repeat_user_parts(filters, params, "tiktok", "t")
    interior_values = ""
    if repeat.rollup is not None:
        parts.append(
            f"SELECT bin, users, followers FROM repeat_follower_rollup WHERE {repeat.rollup}"
        )
    if repeat.last_hours is not None:
        interior_values = (
            " UNION ALL SELECT 'value', w.bin, NULL, 1, h.followers FROM wanted w"
            " CROSS JOIN LATERAL (SELECT followers FROM repeat_user_hours WHERE track = 't'"
            f" AND followers >= w.bin AND followers < w.bin_end AND {repeat.last_hours}"
            " OFFSET 0) h"
        )
    signed = (
        " UNION ALL ".join(
            f"SELECT followers, sign FROM ({part}) p ({_DEMOGRAPHIC_COLUMNS}, sign)"
            for part in repeat.people
        )
        or "SELECT NULL::bigint AS followers, 0 AS sign WHERE FALSE"
    )
    parts.append("SELECT adfunnel_follower_bin(followers), sign, followers * sign FROM repeat")
    in_range = " AND ".join(["TRUE", *_range_conditions(filters, params)])
    return (
        f"WITH {''.join(cte + ', ' for cte in repeat.ctes)}"
        f"repeat AS MATERIALIZED ({signed}),"
        " hist AS MATERIALIZED (SELECT bin, sum(users)::bigint AS users,"
        f" sum(followers) AS followers FROM ({' UNION ALL '.join(parts)}) x (bin, users, followers)"
        " GROUP BY bin HAVING sum(users) > 0),"
        " placed AS (SELECT bin, users, sum(users) OVER (ORDER BY bin) - users AS below"
        " FROM hist WHERE bin IS NOT NULL),"
        " counted AS (SELECT coalesce(sum(users), 0)::bigint AS n FROM placed),"
        # Bins one value wide need no reading: their value is the bin.
        " wanted AS MATERIALIZED (SELECT DISTINCT p.bin,"
        " adfunnel_follower_bin_end(p.bin) AS bin_end"
        " FROM placed p, counted c, unnest(ARRAY[1, (c.n + 1) / 2, c.n / 2 + 1, c.n]) rank"
        " WHERE rank > p.below AND rank <= p.below + p.users"
        " AND adfunnel_follower_bin_end(p.bin) - p.bin > 1)"
        " SELECT 'bin' AS kind, bin, adfunnel_follower_bucket(bin) AS bucket, users, followers"
        " FROM hist"
        " UNION ALL SELECT 'value', w.bin, NULL, 1, e.followers FROM wanted w"
        " CROSS JOIN LATERAL"
        " (SELECT event_id, followers FROM events WHERE source = 'tiktok'"
        f" AND followers >= w.bin AND followers < w.bin_end AND {in_range} OFFSET 0) e"
        f" WHERE {_SINGLE}"
        " UNION ALL SELECT 'value', w.bin, NULL, r.sign, r.followers FROM wanted w"
        f" JOIN repeat r ON r.followers >= w.bin AND r.followers < w.bin_end{interior_values}"
    )


async def follower_stats(conn: Conn, filters: EventFilters) -> FollowerStats:
    """Users, follower buckets and exact min/max/sum/median for TikTok users in range.

    A histogram of fine follower bins locates the ranks of the minimum, the median and the
    maximum; only the users inside those bins are read value by value.
    """
    params = _Params()
    rows = await conn.fetch(_follower_statement(filters, params), *params.values)
    bins = [row for row in rows if row["kind"] == "bin"]
    # A value row comes with how many users it stands for, -1 for one taken back.
    signed: dict[int, Counter[int]] = {}
    for row in rows:
        if row["kind"] == "value":
            signed.setdefault(row["bin"], Counter())[int(row["followers"])] += row["users"]
    values = {
        bin_: sorted(Counter({v: n for v, n in found.items() if n > 0}).elements())
        for bin_, found in signed.items()
    }
    counted_bins = sorted((row for row in bins if row["bin"] is not None), key=lambda r: r["bin"])
    counted = sum(row["users"] for row in counted_bins)
    buckets: dict[str, int] = {}
    for row in counted_bins:
        buckets[row["bucket"]] = buckets.get(row["bucket"], 0) + row["users"]
    users = sum(row["users"] for row in bins)
    total = sum((row["followers"] for row in counted_bins), Decimal(0))
    if not counted:
        return FollowerStats(users, 0, total, None, None, None, buckets)

    def value(rank: int) -> int:
        seen = 0
        for row in counted_bins:
            if rank <= seen + row["users"]:
                if row["bin"] not in values:
                    return int(row["bin"])  # a bin one value wide
                found = values[row["bin"]]
                if len(found) != row["users"]:  # the parts disagree: never a wrong median
                    raise AssertionError(
                        f"bin {row['bin']}: {len(found)} values, {row['users']} users"
                    )
                return found[rank - seen - 1]
            seen += row["users"]
        raise AssertionError(f"rank {rank} beyond {counted} users")

    low, high = median_ranks(counted)
    median = Fraction(value(low) + value(high), 2)
    return FollowerStats(users, counted, total, value(1), value(counted), median, buckets)


@dataclass(frozen=True, slots=True)
class Demographics:
    """What `/reports/demographics` needs: each part None when its source was not asked."""

    facebook: list[asyncpg.Record] | None
    tiktok_followers: FollowerStats | None
    tiktok_engagement: list[asyncpg.Record] | None


async def demographics(
    pool: asyncpg.Pool, filters: EventFilters, source: str | None
) -> Demographics:
    """Every demographics query of the sections asked for, each on its own connection of
    `pool` so that PostgreSQL runs them side by side."""

    async def on_connection(query: Callable[[Conn], Awaitable[T]]) -> T:
        async with pool.acquire() as conn:
            return await query(conn)

    async def nothing() -> None:
        return None

    facebook = source in (None, "facebook")
    tiktok = source in (None, "tiktok")
    fb, followers, engagement = await asyncio.gather(
        on_connection(lambda c: demographic_counts(c, filters, "facebook"))
        if facebook
        else nothing(),
        on_connection(lambda c: follower_stats(c, filters)) if tiktok else nothing(),
        on_connection(lambda c: demographic_counts(c, filters, "tiktok")) if tiktok else nothing(),
    )
    return Demographics(fb, followers, engagement)


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


async def naive_demographic_counts(
    conn: Conn, filters: EventFilters, source: str
) -> list[asyncpg.Record]:
    """`demographic_counts` computed from every raw event in range."""
    extra = ["source = $1"] + (["funnel_stage = 'top'"] if source == "tiktok" else [])
    params = _Params()
    params.add(source)
    conditions = extra + _range_conditions(filters, params)
    return await conn.fetch(
        f"SELECT k.dim, k.key1, k.key2, count(*) AS users FROM (SELECT {_LATEST_USER} *"
        f" FROM events WHERE {' AND '.join(conditions)} {_LATEST_ORDER}) m"
        f" CROSS JOIN LATERAL {_KEYS} GROUP BY 1, 2, 3",
        *params.values,
    )


async def naive_follower_stats(conn: Conn, filters: EventFilters) -> FollowerStats:
    """`follower_stats` computed from every raw TikTok event in range."""
    params = _Params()
    conditions = ["source = 'tiktok'", *_range_conditions(filters, params)]
    rows = await conn.fetch(
        f"WITH latest AS (SELECT {_LATEST_USER} * FROM events"
        f" WHERE {' AND '.join(conditions)} {_LATEST_ORDER})"
        " SELECT adfunnel_follower_bucket(followers) AS bucket, count(*) AS users,"
        " count(followers) AS counted, sum(followers) AS total, min(followers) AS minimum,"
        " max(followers) AS maximum,"
        " percentile_cont(0.5) WITHIN GROUP (ORDER BY followers) AS median,"
        " GROUPING(adfunnel_follower_bucket(followers)) AS everyone"
        " FROM latest GROUP BY GROUPING SETS ((adfunnel_follower_bucket(followers)), ())",
        *params.values,
    )
    totals = next(row for row in rows if row["everyone"])
    return FollowerStats(
        users=totals["users"],
        counted=totals["counted"],
        total=totals["total"] if totals["total"] is not None else Decimal(0),
        minimum=totals["minimum"],
        maximum=totals["maximum"],
        median=None if totals["median"] is None else Fraction(totals["median"]),
        buckets={
            row["bucket"]: row["users"]
            for row in rows
            if not row["everyone"] and row["bucket"] is not None
        },
    )
