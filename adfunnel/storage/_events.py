"""Events and revenue reports from rollups and raw edges; one event; the rejected store."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import asyncpg

from adfunnel.storage._filters import (
    GRAINS,
    REVENUE_TYPES,
    EventFilters,
    Params,
    filter_conditions,
    grains_for,
    plan_segments,
    segment_condition,
    where_clause,
)
from adfunnel.storage._payloads import decompress, row_ids, time_text
from adfunnel.storage._writes import event_key

if TYPE_CHECKING:
    from adfunnel.storage._database import Conn


async def fetch_event(conn: Conn, event_id: str) -> asyncpg.Record | None:
    """The stored event with its trace columns, or None; `event_json` reads its payload."""
    return await conn.fetchrow(
        "SELECT event_id, user_id, event_time, payload, payload_json, correlation_id,"
        " received_at,"
        " stored_at FROM event_traces WHERE event_key = $1 AND event_id = $2",
        event_key(event_id),
        event_id,
    )


# Events by eventId, through the key the table is unique on (migration 0016): `$1` the
# keys and `$2` the ids, in the same order (`_keyed`).
_BY_EVENT_IDS = (
    " FROM unnest($1::uuid[], $2::text[]) AS a (k, id)"
    " JOIN event_traces t ON t.event_key = a.k AND t.event_id = a.id"
)


def _keyed(event_ids: Sequence[str]) -> tuple[list[str], list[str]]:
    return [event_key(event_id) for event_id in event_ids], list(event_ids)


async def stored_traces(conn: Conn, event_ids: Sequence[str]) -> list[asyncpg.Record]:
    """`event_id`, `correlation_id` and `stored_at` of those of `event_ids` stored."""
    return list(
        await conn.fetch(
            "SELECT t.event_id, t.correlation_id, t.stored_at" + _BY_EVENT_IDS,
            *_keyed(event_ids),
        )
    )


async def count_stored(conn: Conn, event_ids: Sequence[str]) -> int:
    """How many of `event_ids` are stored."""
    return int(await conn.fetchval("SELECT count(*)" + _BY_EVENT_IDS, *_keyed(event_ids)))


def event_json(row: Any) -> bytes:
    """The JSON of a stored event, from a row with its `event_id`, `user_id`, `event_time`,
    `payload` and `payload_json`: the compressed form, or the text of a row stored before
    payloads were compressed."""
    if row["payload"] is not None:
        ids = row_ids(row["event_id"], row["user_id"], time_text(row["event_time"]))
        return decompress(row["payload"], ids)
    return str(row["payload_json"]).encode()


def _union(
    filters: EventFilters,
    params: Params,
    *,
    interval: str | None,
    rollup_columns: str,
    raw_columns: str,
    extra: str | None = None,
) -> str:
    """Rollup rows for whole buckets and raw rows for the edges, as one UNION ALL."""
    plan = plan_segments(filters.start, filters.end, grains_for(interval))
    parts = []
    for grain, segments in plan.items():
        if not segments:
            continue
        rollup = grain != "raw"
        conditions = [
            segment_condition("bucket" if rollup else "event_time", segments, params),
            *filter_conditions(filters, params),
        ]
        if extra:
            conditions.append(extra)
        table = f"event_rollup_{grain}" if rollup else "events"
        columns = rollup_columns if rollup else raw_columns
        parts.append(f"SELECT {columns} FROM {table} WHERE {' AND '.join(conditions)}")
    return " UNION ALL ".join(parts)


async def event_breakdown(conn: Conn, filters: EventFilters) -> list[asyncpg.Record]:
    """Counts per (source, funnel stage, event type) under the filters."""
    params = Params()
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


def bucket_of(interval: str, column: str) -> str:
    if interval not in GRAINS:
        raise ValueError(f"unknown interval {interval!r}")
    return f"date_trunc('{interval}', {column} AT TIME ZONE 'UTC') AS b"


async def event_series(conn: Conn, filters: EventFilters, interval: str) -> list[asyncpg.Record]:
    """Counts per UTC time bucket (`minute`, `hour` or `day`), empty buckets omitted."""
    params = Params()
    union = _union(
        filters,
        params,
        interval=interval,
        rollup_columns=f"{bucket_of(interval, 'bucket')}, events AS n",
        raw_columns=f"{bucket_of(interval, 'event_time')}, 1 AS n",
    )
    return await conn.fetch(
        f"SELECT b AS bucket, sum(n)::bigint AS count FROM ({union}) x"
        " GROUP BY 1 HAVING sum(n) > 0 ORDER BY 1",
        *params.values,
    )


async def revenue_groups(conn: Conn, filters: EventFilters) -> list[asyncpg.Record]:
    """Exact revenue and transactions per (source, campaign) under the filters."""
    params = Params()
    union = _union(
        filters,
        params,
        interval=None,
        rollup_columns="source, NULLIF(campaign_id, '') AS campaign_id, revenue, transactions",
        raw_columns="source, campaign_id, purchase_amount AS revenue, 1 AS transactions",
        extra=REVENUE_TYPES,
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
    params = Params()
    union = _union(
        filters,
        params,
        interval=interval,
        rollup_columns=f"{bucket_of(interval, 'bucket')}, revenue, transactions",
        raw_columns=f"{bucket_of(interval, 'event_time')}, purchase_amount AS revenue,"
        " 1 AS transactions",
        extra=REVENUE_TYPES,
    )
    return await conn.fetch(
        "SELECT b AS bucket, sum(revenue) AS revenue, sum(transactions)::bigint AS transactions"
        f" FROM ({union}) x WHERE revenue IS NOT NULL GROUP BY 1 HAVING sum(transactions) > 0"
        " ORDER BY 1",
        *params.values,
    )


@dataclass(frozen=True, slots=True)
class RejectedSummary:
    """The rejected store in a receipt-time range: how many, how many were replayed, the
    most frequent reasons and the newest rows."""

    total: int
    replayed: int
    by_reason: list[asyncpg.Record]
    samples: list[asyncpg.Record]

    @property
    def not_replayed(self) -> int:
        return self.total - self.replayed


async def rejected_summary(
    conn: Conn, filters: EventFilters, *, reasons: int, samples: int
) -> RejectedSummary:
    """Counts by reason (most frequent first), replayed or not, and the newest samples with
    their replay state, by receipt time."""
    where, params = where_clause(
        EventFilters(filters.start, filters.end), time_column="received_at"
    )
    counts = await conn.fetchrow(
        f"SELECT count(*) AS total, count(replayed_at) AS replayed FROM rejected_events{where}",
        *params,
    )
    assert counts is not None
    by_reason = await conn.fetch(
        f"SELECT reason, count(*) AS count FROM rejected_events{where}"
        f" GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT {int(reasons)}",
        *params,
    )
    newest = await conn.fetch(
        "SELECT received_at, reason, correlation_id,"
        " coalesce(payload, to_jsonb(raw)) AS payload,"
        " replayed_at, replay_correlation_id, replay_outcome"
        f" FROM rejected_events{where} ORDER BY received_at DESC, id DESC LIMIT {int(samples)}",
        *params,
    )
    return RejectedSummary(
        int(counts["total"]), int(counts["replayed"]), list(by_reason), list(newest)
    )


async def stored_counts(conn: Conn) -> tuple[int, int]:
    """How many events and rejected events are stored."""
    row = await conn.fetchrow(
        "SELECT (SELECT count(*) FROM events) AS events,"
        " (SELECT count(*) FROM rejected_events) AS rejected"
    )
    assert row is not None
    return int(row["events"]), int(row["rejected"])
