"""Derived tables checked against the raw rows: none disagree unless something is broken."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import asyncpg

from adfunnel.storage._demographics import (
    DEMOGRAPHIC_COLUMNS,
    DEMOGRAPHIC_GRAINS,
    KEYS,
    ONE_HOUR_LIMIT,
)
from adfunnel.storage._filters import GRAINS, REVENUE_CONDITION

if TYPE_CHECKING:
    from adfunnel.storage._database import Conn


async def rollup_mismatches(conn: Conn, since: datetime | None = None) -> list[asyncpg.Record]:
    """Rollup rows that disagree with the raw rows (none, unless something is broken).

    `since`: only buckets from then on. Retention removes raw rows and keeps their rollups,
    so before its horizon the two disagree by design.
    """
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
            " UNION ALL (TABLE rolled EXCEPT TABLE raw)) diff"
            " WHERE $2::timestamptz IS NULL OR bucket >= $2",
            grain,
            since,
        )
    return mismatches


async def demographic_mismatches(conn: Conn) -> dict[str, int]:
    """Rows of the demographics tables that disagree with the raw rows, by table (none,
    unless something is broken): rollups against the users without hour rows, hour rows
    against the users with them, and `repeat_user_pointers` against their events (migrations
    0023, 0029: a pointer for each event its source's hour row does not name).

    Which users have hour rows depends on their history (migration 0026: a user gets them
    when their events span two hours or pass `ONE_HOUR_LIMIT`, and keeps them while they
    have two or more), so the split is read from `repeat_user_hours` and checked against
    that rule: `hour_row_users` counts users with hour rows and fewer than two events,
    `one_hour_users` users without them whose events span two hours or pass the limit."""
    columns = f"event_id, user_id, event_time, received_at, {DEMOGRAPHIC_COLUMNS}"
    hour = "date_trunc('hour', event_time AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'"
    several = (
        "SELECT DISTINCT CASE track WHEN 'f' THEN 'facebook' ELSE 'tiktok' END, user_id"
        " FROM repeat_user_hours WHERE track <> 'p'"
    )
    expected: dict[str, str] = {
        "hour_row_users": (
            f"SELECT source, user_id FROM events WHERE (source, user_id) IN ({several})"
            " GROUP BY 1, 2 HAVING count(*) < 2"
        ),
        "one_hour_users": (
            f"SELECT source, user_id FROM events WHERE (source, user_id) NOT IN ({several})"
            f" GROUP BY 1, 2 HAVING count(*) > {ONE_HOUR_LIMIT}"
            f" OR count(DISTINCT {hour}) > 1"
        ),
    }
    actual: dict[str, str] = {
        "hour_row_users": "SELECT NULL, NULL WHERE FALSE",
        "one_hour_users": "SELECT NULL, NULL WHERE FALSE",
    }
    # A user without hour rows counts by their latest event (of their one hour); for device
    # and country, a TikTok user by their latest top-funnel event.
    one_hour = f"SELECT * FROM events WHERE (source, user_id) NOT IN ({several})"
    latest = (
        "(SELECT DISTINCT ON (source, user_id) * FROM ({events}) o{where}"
        " ORDER BY source, user_id, event_time DESC, received_at DESC, event_id DESC) s"
    )
    keyed = latest.format(
        events=one_hour, where=" WHERE source = 'facebook' OR funnel_stage = 'top'"
    )
    single = latest.format(events=one_hour, where="")
    # Each repeat user's latest event per track and hour, linked to their next hour.
    repeat = f"SELECT * FROM events WHERE (source, user_id) IN ({several})"
    tracked = (
        f"SELECT CASE source WHEN 'facebook' THEN 'f' ELSE 't' END AS track, {hour} AS hour,"
        f" {columns} FROM ({repeat}) r UNION ALL SELECT 'p', {hour}, {columns} FROM ({repeat}) r"
        " WHERE source = 'tiktok' AND funnel_stage = 'top'"
    )
    hours = (
        "SELECT track, hour, coalesce(lead(hour) OVER (PARTITION BY track, user_id"
        " ORDER BY hour), 'infinity') AS next_hour, event_id, user_id, event_time, received_at,"
        f" {DEMOGRAPHIC_COLUMNS} FROM (SELECT DISTINCT ON (track, user_id, hour) *"
        f" FROM ({tracked}) t ORDER BY track, user_id, hour, event_time DESC, received_at DESC,"
        " event_id DESC) latest"
    )
    expected["repeat_user_hours"] = hours
    actual["repeat_user_hours"] = (
        "SELECT track, hour, next_hour, event_id, user_id, event_time, received_at,"
        f" {DEMOGRAPHIC_COLUMNS} FROM repeat_user_hours"
    )
    expected["repeat_demographic_rollup"] = (
        "SELECT hour, adfunnel_next_day(next_hour), source, k.dim, k.key1, k.key2, count(*)"
        f" FROM ({hours}) h"
        f" CROSS JOIN LATERAL {KEYS} WHERE track <> 't' GROUP BY 1, 2, 3, 4, 5, 6"
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
            f" FROM {keyed} CROSS JOIN LATERAL {KEYS} GROUP BY 1, 2, 3, 4, 5"
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
    named = (
        "SELECT CASE track WHEN 'f' THEN 'facebook' ELSE 'tiktok' END, user_id, event_id"
        f" FROM ({hours}) h WHERE track <> 'p'"
    )
    expected["repeat_user_pointers"] = (
        "SELECT hashtext(user_id), adfunnel_hour_number(event_time), event_key FROM events"
        f" WHERE (source, user_id) IN ({several}) AND (source, user_id, event_id) NOT IN ({named})"
    )
    actual["repeat_user_pointers"] = (
        "SELECT user_hash, hour_number, event_key FROM repeat_user_pointers"
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
