"""The reports' answers straight from the raw rows (GROUP BY, DISTINCT ON): the baseline
`adfunnel bench reports` compares against, and a second opinion on the rollup path."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction
from typing import TYPE_CHECKING

import asyncpg

from adfunnel.storage._demographics import KEYS, LATEST_ORDER, LATEST_USER, FollowerStats
from adfunnel.storage._events import bucket_of
from adfunnel.storage._filters import (
    REVENUE_CONDITION,
    EventFilters,
    Params,
    range_conditions,
    where_clause,
)

if TYPE_CHECKING:
    from adfunnel.storage._database import Conn


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
        f"SELECT {bucket_of(interval, 'event_time')}, count(*) AS count"
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
        f"SELECT {bucket_of(interval, 'event_time')}, sum(purchase_amount) AS revenue,"
        f" count(*) AS transactions FROM events{where} GROUP BY 1 ORDER BY 1",
        *params,
    )


async def naive_demographic_counts(
    conn: Conn, filters: EventFilters, source: str
) -> list[asyncpg.Record]:
    """`demographic_counts` computed from every raw event in range."""
    extra = ["source = $1"] + (["funnel_stage = 'top'"] if source == "tiktok" else [])
    params = Params()
    params.add(source)
    conditions = extra + range_conditions(filters, params)
    return await conn.fetch(
        f"SELECT k.dim, k.key1, k.key2, count(*) AS users FROM (SELECT {LATEST_USER} *"
        f" FROM events WHERE {' AND '.join(conditions)} {LATEST_ORDER}) m"
        f" CROSS JOIN LATERAL {KEYS} GROUP BY 1, 2, 3",
        *params.values,
    )


async def naive_follower_stats(conn: Conn, filters: EventFilters) -> FollowerStats:
    """`follower_stats` computed from every raw TikTok event in range."""
    params = Params()
    conditions = ["source = 'tiktok'", *range_conditions(filters, params)]
    rows = await conn.fetch(
        f"WITH latest AS (SELECT {LATEST_USER} * FROM events"
        f" WHERE {' AND '.join(conditions)} {LATEST_ORDER})"
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
