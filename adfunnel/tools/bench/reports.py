"""`adfunnel bench reports`: report latency per category over a mix of filters, side by side
with the naive GROUP BY over the raw rows, in the same run on the same database.

It times the reporter's own storage functions (the SQL the endpoints run), not HTTP, so
the figures are the database work; Serve adds a few milliseconds per request on top.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg

from adfunnel import storage
from adfunnel.schema import EVENT_TYPES, SOURCES
from adfunnel.storage import EventFilters
from adfunnel.tools.stats import percentile

if TYPE_CHECKING:
    from adfunnel.storage import Conn

    Query = Callable[[Conn], Awaitable[Any]]


@dataclass
class Timings:
    """Latencies of one category, optimized and naive, in milliseconds."""

    optimized: list[float] = field(default_factory=list)
    naive: list[float] = field(default_factory=list)
    # Answers compared with the naive query's, and how many of them differed.
    compared: int = 0
    differing: int = 0


def _ms(values: list[float], q: float) -> float:
    value = percentile(values, q)
    return round(value, 1) if value is not None else math.nan


def _window(rng: random.Random, first: datetime, last: datetime) -> tuple[Any, Any]:
    span = (last - first).total_seconds()
    shape = rng.random()
    if shape < 0.1:
        return None, None
    length = timedelta(seconds=rng.choice([60, 600, 3_600, 6 * 3_600, 86_400, 3 * 86_400]))
    length *= rng.uniform(0.5, 1.5)
    start = first + timedelta(seconds=rng.uniform(0, max(1.0, span - length.total_seconds())))
    start += timedelta(microseconds=rng.randrange(1_000_000))  # arbitrary seconds
    end = start + length
    if shape < 0.2:
        return start, None
    if shape < 0.3:
        return None, end
    return start, end


def event_mix(rng: random.Random, first: datetime, last: datetime) -> tuple[EventFilters, Any]:
    """Random filters of the events report, and an interval (or None)."""
    start, end = _window(rng, first, last)
    source = rng.choice([None, *SOURCES])
    stage = rng.choice([None, "top", "bottom"])
    event_type = None
    if rng.random() < 0.4:
        sources = [source] if source else list(SOURCES)
        stages = [stage] if stage else ["top", "bottom"]
        event_type = rng.choice([t for s in sources for g in stages for t in EVENT_TYPES[s][g]])
    short = start is not None and end is not None and end - start <= timedelta(days=2)
    interval = rng.choice([None, None, "hour", "day", *(["minute"] if short else [])])
    return EventFilters(start, end, source, stage, event_type), interval


def revenue_mix(
    rng: random.Random, first: datetime, last: datetime, campaigns: list[str]
) -> tuple[EventFilters, Any]:
    """Random filters of the revenue report, and an interval (or None)."""
    base, interval = event_mix(rng, first, last)
    campaign = rng.choice([None, None, *campaigns]) if campaigns else None
    return EventFilters(base.start, base.end, base.source, campaign_id=campaign), interval


async def _timed(conn: Conn, query: Query) -> float:
    started = time.perf_counter()
    await query(conn)
    return (time.perf_counter() - started) * 1000


async def data_set(conn: Conn) -> dict[str, Any]:
    """Which user mix the database holds (SPEC §3): events, users, the share of events by
    users with several events, and by the 600 busiest users of each source."""
    events = await conn.fetchval("SELECT sum(events) FROM event_rollup_day")
    row = await conn.fetchrow(
        "SELECT count(*) AS users, coalesce(sum(events) FILTER (WHERE events > 1), 0) AS repeat"
        " FROM (SELECT source, user_id, count(*) AS events FROM events GROUP BY 1, 2) u"
    )
    busiest = await conn.fetchval(
        "SELECT coalesce(sum(events), 0) FROM (SELECT events, row_number() OVER"
        " (PARTITION BY source ORDER BY events DESC) AS rank FROM"
        " (SELECT source, user_id, count(*) AS events FROM events GROUP BY 1, 2) u) u"
        " WHERE rank <= 600"
    )
    events = int(events or 0)
    assert row is not None  # an aggregate always returns its row
    return {
        "events": events,
        "users": int(row["users"]),
        "returning_share": round(int(row["repeat"]) / events, 3) if events else 0.0,
        "busiest_600_share": round(int(busiest) / events, 3) if events else 0.0,
    }


async def run(database_url: str, *, samples: int, seed: int) -> dict[str, Timings]:
    """Time every category over `samples` filter combinations (naive demographics: fewer)."""
    rng = random.Random(seed)
    # One connection for the sequential queries, three more for the demographics, which run
    # their queries side by side like the reporter.
    pool = await storage.create_pool(database_url, size=4)
    results = {name: Timings() for name in ("events", "revenue", "demographics")}
    async with pool.acquire() as conn:
        first = await conn.fetchval("SELECT min(bucket) FROM event_rollup_day")
        last = await conn.fetchval("SELECT max(bucket) FROM event_rollup_day")
        if first is None:
            raise SystemExit("no events stored: run `adfunnel seed --events N` first")
        last += timedelta(days=1)
        campaigns = [
            r["campaign_id"]
            for r in await conn.fetch(
                "SELECT DISTINCT campaign_id FROM event_rollup_day WHERE campaign_id <> ''"
            )
        ]
        for _ in range(samples):
            filters, interval = event_mix(rng, first, last)
            await _pair(conn, results["events"], filters, interval, events=True)
            filters, interval = revenue_mix(rng, first, last, campaigns)
            await _pair(conn, results["revenue"], filters, interval, events=False)
        # The naive demographics take seconds each: they run for the first fifth of the
        # filter combinations only.
        for number in range(samples):
            filters, _ = event_mix(rng, first, last)
            naive = number < max(3, samples // 5)
            await _demographics(pool, results["demographics"], filters, naive=naive)
    await pool.close()
    return results


async def _pair(
    conn: Conn, timings: Timings, filters: EventFilters, interval: str | None, *, events: bool
) -> None:
    if events:
        main, main_series = storage.event_breakdown, storage.event_series
        naive, naive_series = storage.naive_event_breakdown, storage.naive_event_series
    else:
        main, main_series = storage.revenue_groups, storage.revenue_series
        naive, naive_series = storage.naive_revenue_groups, storage.naive_revenue_series

    async def optimized(c: Conn) -> None:
        await main(c, filters)
        if interval:
            await main_series(c, filters, interval)

    async def baseline(c: Conn) -> None:
        await naive(c, filters)
        if interval:
            await naive_series(c, filters, interval)

    timings.optimized.append(await _timed(conn, optimized))
    timings.naive.append(await _timed(conn, baseline))


async def _demographics(
    pool: asyncpg.Pool, timings: Timings, filters: EventFilters, *, naive: bool
) -> None:
    """What `/reports/demographics` runs (`source` picks the sections), and if asked the
    naive equivalent; both run their queries side by side on the pool's connections."""
    window, source = EventFilters(filters.start, filters.end), filters.source
    started = time.perf_counter()
    answer = await storage.demographics(pool, window, source)
    timings.optimized.append((time.perf_counter() - started) * 1000)
    if not naive:
        return
    queries: list[Query] = []
    if source in (None, "facebook"):
        queries.append(lambda c: storage.naive_demographic_counts(c, window, "facebook"))
    if source in (None, "tiktok"):
        queries.append(lambda c: storage.naive_follower_stats(c, window))
        queries.append(lambda c: storage.naive_demographic_counts(c, window, "tiktok"))

    async def on_connection(query: Query) -> Any:
        async with pool.acquire() as conn:
            return await query(conn)

    started = time.perf_counter()
    naive_answers = await asyncio.gather(*(on_connection(query) for query in queries))
    timings.naive.append((time.perf_counter() - started) * 1000)
    fast = [
        part
        for part in (answer.facebook, answer.tiktok_followers, answer.tiktok_engagement)
        if part is not None
    ]
    timings.compared += 1
    if [_comparable(part) for part in fast] != [_comparable(part) for part in naive_answers]:
        timings.differing += 1


def _comparable(part: Any) -> Any:
    """A demographics part as a value: count rows as a set, follower stats as they are."""
    if isinstance(part, list):
        return {tuple(row) for row in part if row["users"]}
    return part


def table(results: dict[str, Timings]) -> tuple[str, dict[str, Any]]:
    """A printable table and the same figures as a dict."""
    lines = [
        "| category | queries | p50 ms | p95 ms | p99 ms | naive p50 ms | naive p95 ms"
        " | naive p99 ms | p95 ratio |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    figures: dict[str, Any] = {}
    for name, timings in results.items():
        row = {f"p{q}_ms": _ms(timings.optimized, q) for q in (50, 95, 99)}
        row["queries"] = len(timings.optimized)
        if timings.naive:
            row |= {f"naive_p{q}_ms": _ms(timings.naive, q) for q in (50, 95, 99)}
            row["p95_ratio"] = round(row["naive_p95_ms"] / max(row["p95_ms"], 0.001), 1)
        if timings.compared:
            row["answers_compared"] = timings.compared
            row["answers_differing"] = timings.differing
        figures[name] = row
        naive = (
            f"{row['naive_p50_ms']} | {row['naive_p95_ms']} | {row['naive_p99_ms']}"
            f" | {row['p95_ratio']}x"
            if timings.naive
            else "same query | | | 1x"
        )
        lines.append(
            f"| {name} | {row['queries']} | {row['p50_ms']} | {row['p95_ms']} | {row['p99_ms']}"
            f" | {naive} |"
        )
    figures["mean_ms"] = {k: round(statistics.mean(v.optimized), 1) for k, v in results.items()}
    return "\n".join(lines), figures


async def _described(database_url: str) -> dict[str, Any]:
    conn = await asyncpg.connect(database_url)
    try:
        return await data_set(conn)
    finally:
        await conn.close()


def main(database_url: str, *, samples: int, seed: int, json_path: Path | None) -> None:
    """Run, print the data set and the table, optionally write JSON."""
    described = asyncio.run(_described(database_url))
    print(
        f"data set: {described['events']:,} events, {described['users']:,} users;"
        f" {described['returning_share']:.0%} of the events by users with several,"
        f" {described['busiest_600_share']:.0%} by the 600 busiest users of each source"
    )
    results = asyncio.run(run(database_url, samples=samples, seed=seed))
    text, figures = table(results)
    figures["data_set"] = described
    print(text)
    demographics = results["demographics"]
    print(
        f"demographics: {demographics.compared} answers compared with the naive query's,"
        f" {demographics.differing} differing"
    )
    if json_path is not None:
        json_path.write_text(json.dumps(figures, indent=2))
