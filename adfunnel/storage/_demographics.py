"""Demographics: distinct users by their latest event in a range, exact, from rollups,
hour rows and the raw edges (migrations 0003, 0006, 0007, 0017, 0026)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from fractions import Fraction
from typing import TYPE_CHECKING, TypeVar

import asyncpg

from adfunnel.storage._filters import (
    STEP,
    EventFilters,
    Params,
    Segment,
    ceil_to,
    floor_to,
    plan_segments,
    range_conditions,
    segment_condition,
)

if TYPE_CHECKING:
    from adfunnel.storage._database import Conn

T = TypeVar("T")

# Latest event per user: newest event time; ties go to the copy received last.
# Users are grouped byte-wise (COLLATE "C"): the same groups as any collation's equality,
# and a third faster to sort than the database's linguistic collation.
LATEST_USER = 'DISTINCT ON (user_id COLLATE "C")'
LATEST_ORDER = 'ORDER BY user_id COLLATE "C", event_time DESC, received_at DESC, event_id DESC'
# The bucket labels in report order; migration 0003 defines which bucket a value falls in.
AGE_BUCKETS = ("0-12", "13-17", "18-24", "25-34", "35-44", "45-54", "55-64", "65+")
FOLLOWER_BUCKETS = ("0-999", "1000-9999", "10000-99999", "100000-999999", "1000000+")
KEYS = "adfunnel_demographic_keys(source, funnel_stage, age, gender, country, city, device) k"
# The most events a user without hour rows has, all in one hour: migration 0026's
# `adfunnel_one_hour_limit()`.
ONE_HOUR_LIMIT = 8


# Demographics: users without hour rows (one event of their source, or up to
# ONE_HOUR_LIMIT all in one hour) come from the demographic rollups (whole hours and days)
# and the raw rows at the edges (migrations 0003, 0026); users with hour rows from their
# rollups and, at the edges, from their raw rows too (migrations 0007, 0017). Each user is
# in exactly one of the parts, so the parts add up.
DEMOGRAPHIC_GRAINS = ("day", "hour")


def _track(source: str) -> str:
    """The hour rows' track of all of `source`'s events (migration 0007)."""
    return "f" if source == "facebook" else "t"


def _several(source: str, alias: str = "e") -> str:
    """Whether the user of event `alias` has hour rows of `source`'s own track (migration
    0026: their events span two hours or pass ONE_HOUR_LIMIT). A probe of their primary key
    per event (OFFSET 0 keeps the subquery correlated): as an anti-join the planner would
    hash every hour row."""
    return (
        f"EXISTS (SELECT 1 FROM repeat_user_hours h WHERE h.track = '{_track(source)}'"
        f" AND h.user_id = {alias}.user_id OFFSET 0)"
    )


# The columns a demographics query reads from an event.
DEMOGRAPHIC_COLUMNS = "source, funnel_stage, age, gender, country, city, followers, device"


def _edge_hours(segments: list[Segment]) -> list[datetime]:
    """The hours the raw segments fall in (a segment lies in at most two: migration 0027)."""
    hours = set()
    for lo, hi in segments:
        assert lo is not None and hi is not None  # raw segments are bounded (plan_segments)
        hour = floor_to(lo, "hour")
        while hour < hi:
            hours.add(hour)
            hour += STEP["hour"]
    return sorted(hours)


def _edge(filters: EventFilters, params: Params, source: str) -> str | None:
    """The common table expression `edge`: the events of `source` in the range's ragged
    edges (what whole hours leave at either end, or all of a range without a whole hour),
    each marked with whether its user has hour rows (`several`). Both parts of the users read
    it, so the edges are scanned and tested once. None when the range has no ragged edge."""
    plan = plan_segments(filters.start, filters.end, DEMOGRAPHIC_GRAINS)
    if not plan["raw"]:
        return None
    # A user with hour rows has one for each hour they were active in, so the users with
    # hour rows at the edge are those of the edge's hours: one range of the hour index,
    # hashed once, instead of a probe of the key per event (migration 0027).
    hours = ", ".join(params.add(hour) for hour in _edge_hours(plan["raw"]))
    several = (
        "e.user_id IN (SELECT h.user_id FROM repeat_user_hours h"
        f" WHERE h.track = '{_track(source)}' AND h.hour IN ({hours}))"
    )
    # The time index's second column is the source (migration 0027): each source's rows
    # only, found in the index.
    where = segment_condition("event_time", plan["raw"], params)
    return (
        f"edge AS MATERIALIZED (SELECT event_id, user_id, event_time, received_at,"
        f" {DEMOGRAPHIC_COLUMNS}, {several} AS several FROM events e"
        f" WHERE {where} AND source = {params.add(source)})"
    )


def _single_user_parts(
    filters: EventFilters,
    params: Params,
    *,
    rollup: str,
    rollup_columns: str,
    raw_columns: str,
    source: str,
    stage: str = "",
) -> tuple[list[str], str | None]:
    """Users without hour rows, in range: rollup rows for whole buckets, and at the `edge`
    (None when the range has no ragged edge) each user's latest event there (`stage`: a
    condition on its funnel stage). Their events all fall in one hour, so a user is either
    in whole hours or at the edge."""
    plan = plan_segments(filters.start, filters.end, DEMOGRAPHIC_GRAINS)
    parts = []
    for grain in DEMOGRAPHIC_GRAINS:
        if plan[grain]:
            where = segment_condition("bucket", plan[grain], params)
            if rollup == "demographic_rollup":
                where += f" AND source = {params.add(source)}"
            parts.append(f"SELECT {rollup_columns} FROM {rollup}_{grain} WHERE {where}")
    if not plan["raw"]:
        return parts, None
    latest = f"SELECT {LATEST_USER} * FROM edge WHERE NOT several{stage} {LATEST_ORDER}"
    return parts, f"SELECT {raw_columns} FROM ({latest}) e"


@dataclass(frozen=True, slots=True)
class _RepeatParts:
    """Users with hour rows of a source, in range (migration 0007), under the common
    table expressions `ctes`: `rollup` selects the rows of the repeat rollups to add up and
    `last_hours` the hour rows those rollup rows count (both None when the
    range holds no whole hour); `people` are signed attribute rows (`DEMOGRAPHIC_COLUMNS`,
    `sign`) read row by row."""

    ctes: list[str]
    rollup: str | None
    last_hours: str | None
    people: list[str]


def _qualified(alias: str) -> str:
    """`DEMOGRAPHIC_COLUMNS` of the table or subquery `alias`."""
    return ", ".join(f"{alias}.{column}" for column in DEMOGRAPHIC_COLUMNS.split(", "))


def _repeat_user_parts(
    filters: EventFilters, params: Params, source: str, track: str
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
    lo = None if start is None else ceil_to(start, "hour")
    hi = None if end is None else floor_to(end, "hour")
    stage = " AND funnel_stage = 'top'" if track == "p" else ""

    def latest(since: str | None, until: str | None) -> str:
        bounds = [f"event_time >= {since}"] if since else []
        bounds += [f"event_time < {until}"] if until else []
        return (
            f"SELECT {LATEST_USER} user_id, {DEMOGRAPHIC_COLUMNS} FROM edge"
            f" WHERE several{stage} AND {' AND '.join(bounds)} {LATEST_ORDER}"
        )

    if lo is not None and hi is not None and lo >= hi:
        # Less than two hours, none of them whole: every copy in range is read.
        edges = latest(params.add(start), params.add(end))
        people = [f"SELECT {DEMOGRAPHIC_COLUMNS}, 1 FROM ({edges}) e"]
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
        next_day = ceil_to(hi, "day")
        day_after = params.add(next_day)
        rollup = f"{in_hours} AND next_day >= {day_after}"
        last_hours = f"{in_hours} AND next_hour >= {day_after}"
        if next_day > hi:
            # The index on next_hour holds finite links only (migration 0022): said here, so
            # a generic plan, which cannot compare the parameter with infinity, may use it.
            people.append(
                f"SELECT {DEMOGRAPHIC_COLUMNS}, 1 FROM repeat_user_hours WHERE track = '{track}'"
                f" AND next_hour >= {until} AND next_hour < {day_after}"
                f" AND next_hour < 'infinity' AND {in_hours}"
            )
    ctes = []
    last_after = "TRUE"
    if end is not None and hi is not None and end > hi:
        ctes.append(f"tail AS MATERIALIZED ({latest(until, params.add(end))})")
        people.append(f"SELECT {DEMOGRAPHIC_COLUMNS}, 1 FROM tail")
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
            f" AND h.hour = {params.add(lo - STEP['hour'])} OFFSET 0) h"
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
    params = Params()
    parts, edges = _single_user_parts(
        filters,
        params,
        rollup="demographic_rollup",
        rollup_columns="dim, key1, key2, users",
        raw_columns=DEMOGRAPHIC_COLUMNS,
        source=source,
        # A TikTok user's device and country are those of their latest top-funnel event.
        stage=" AND funnel_stage = 'top'" if source == "tiktok" else "",
    )
    edge = _edge(filters, params, source)
    repeat = _repeat_user_parts(filters, params, source, "p" if source == "tiktok" else "f")
    if repeat.rollup is not None:
        parts.append(
            "SELECT dim, key1, key2, users FROM repeat_demographic_rollup"
            f" WHERE source = {params.add(source)} AND {repeat.rollup}"
        )
    # Edge and repeat users as signed attribute rows, counted per distinct combination
    # first: the keys are then spelled out once per combination instead of once per user.
    people = [f"SELECT {DEMOGRAPHIC_COLUMNS}, 1 FROM ({edges}) s"] if edges else []
    people += repeat.people
    if people:
        parts.append(
            f"SELECT k.dim, k.key1, k.key2, g.n FROM (SELECT {DEMOGRAPHIC_COLUMNS},"
            f" sum(sign) AS n FROM ({' UNION ALL '.join(people)}) p ({DEMOGRAPHIC_COLUMNS}, sign)"
            f" GROUP BY {DEMOGRAPHIC_COLUMNS}) g CROSS JOIN LATERAL {KEYS}"
        )
    ctes = [edge, *repeat.ctes] if edge else repeat.ctes
    with_ctes = f"WITH {', '.join(ctes)} " if ctes else ""
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


def _utc_hour(moment: str) -> str:
    """SQL of the UTC hour of `moment`, as the follower index keys `event_time`."""
    return f"date_trunc('hour', {moment} AT TIME ZONE 'UTC')"


def _follower_statement(filters: EventFilters, params: Params) -> str:
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
    edge = _edge(filters, params, "tiktok")
    repeat = _repeat_user_parts(filters, params, "tiktok", "t")
    ctes = [edge, *repeat.ctes] if edge else repeat.ctes
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
            f"SELECT followers, sign FROM ({part}) p ({DEMOGRAPHIC_COLUMNS}, sign)"
            for part in repeat.people
        )
        or "SELECT NULL::bigint AS followers, 0 AS sign WHERE FALSE"
    )
    parts.append("SELECT adfunnel_follower_bin(followers), sign, followers * sign FROM repeat")
    # The follower index knows the hour of each event (migration 0020): its range is the
    # range's hours, and the rows are then held to the range itself.
    hour = _utc_hour("event_time")
    in_hours = []
    if filters.start is not None:
        in_hours.append(f"{hour} >= {_utc_hour(params.add(filters.start) + '::timestamptz')}")
    if filters.end is not None:
        in_hours.append(f"{hour} <= {_utc_hour(params.add(filters.end) + '::timestamptz')}")
    in_range = " AND ".join(["TRUE", *in_hours, *range_conditions(filters, params)])
    later = " AND ".join(["TRUE", *range_conditions(filters, params, "l.event_time")])
    return (
        f"WITH {''.join(cte + ', ' for cte in ctes)}"
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
        " (SELECT * FROM (SELECT event_id, user_id, event_time, received_at, followers"
        " FROM events WHERE source = 'tiktok'"
        f" AND followers >= w.bin AND followers < w.bin_end AND {in_range} OFFSET 0) e"
        f" WHERE NOT {_several('tiktok')} OFFSET 0) e"
        # A user without hour rows counts by their latest event in range (their events all
        # fall in one hour): at most ONE_HOUR_LIMIT events read through the user index. The
        # OFFSET above keeps this after the test for hour rows, never for a hot user; the
        # inner one keeps the index on the source out of it, which the planner would AND
        # with the user index, reading every TikTok event for each user.
        " WHERE NOT EXISTS (SELECT 1 FROM (SELECT * FROM events l"
        " WHERE hashtext(l.user_id) = hashtext(e.user_id) AND l.user_id = e.user_id"
        f" OFFSET 0) l WHERE l.source = 'tiktok' AND {later}"
        " AND (l.event_time, l.received_at, l.event_id)"
        " > (e.event_time, e.received_at, e.event_id) OFFSET 0)"
        " UNION ALL SELECT 'value', w.bin, NULL, r.sign, r.followers FROM wanted w"
        f" JOIN repeat r ON r.followers >= w.bin AND r.followers < w.bin_end{interior_values}"
    )


async def follower_stats(conn: Conn, filters: EventFilters) -> FollowerStats:
    """Users, follower buckets and exact min/max/sum/median for TikTok users in range.

    A histogram of fine follower bins locates the ranks of the minimum, the median and the
    maximum; only the users inside those bins are read value by value.
    """
    params = Params()
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
