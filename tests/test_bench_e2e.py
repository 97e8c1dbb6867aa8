"""`adfunnel bench` (end to end): its accounting of lost and duplicated events, checked on a
small run against the real pipeline. Timings are printed by the benchmark, never asserted."""

from __future__ import annotations

import asyncpg
import httpx
import pytest

from adfunnel import bench_e2e
from adfunnel.bench_e2e import BenchPlan, Results, Sample, Target, growth
from adfunnel.testing import Deployed

pytestmark = pytest.mark.integration

TINY = BenchPlan(
    e2e_events=2_500,
    ack_posts=2,
    sustained_s=3,
    floor_events=0,
    big_batch=1_000,
    sustained_batches=(200, 800),
    freshness_ids_per_post=10,
)


def test_backlog_growth_is_the_least_squares_slope() -> None:
    samples = [Sample(t, 1_000 * t + 500, 0, None) for t in range(5)]
    assert growth(samples) == pytest.approx(1_000)
    flat = [Sample(t, 100, 100, None) for t in range(5)]
    assert growth(flat) == 0
    assert growth(flat[:1]) is None


async def test_a_small_run_accounts_every_accepted_event(system: Deployed) -> None:
    database_url = system.settings["database_url"]
    target = Target(system.base_url, database_url, system.settings["nats_url"])
    target.stream = system.settings["nats_stream"]
    results = Results()
    await bench_e2e.run_phases(target, TINY, results, lambda message: None)
    figures = results.figures()
    assert results.failed_posts == 0
    assert results.lost == 0 and results.duplicated == 0
    conn = await asyncpg.connect(database_url)
    try:
        stored = await conn.fetchval("SELECT count(*) FROM events")
    finally:
        await conn.close()
    # Every stored row is an accepted event and every accepted event is stored.
    assert stored == len(results.accepted_ids) == figures["accepted"]
    assert results.e2e_events > 0 and len(results.ack_latencies) == TINY.ack_posts
    assert results.samples and results.freshness
    assert all(value > 0 for value in results.freshness)


async def test_the_accounting_sees_a_lost_and_an_extra_event(system: Deployed) -> None:
    database_url = system.settings["database_url"]
    target = Target(system.base_url, database_url, system.settings["nats_url"])
    results = Results()
    plan = BenchPlan(0, 1, 0, 0, big_batch=500)
    async with httpx.AsyncClient(base_url=system.base_url, timeout=60) as client:
        await bench_e2e.phase_acks(client, target, plan, results)
    accepted = set(results.accepted_ids)
    assert await bench_e2e.account(database_url, accepted, len(accepted)) == (0, 0)
    # An accepted id that was never stored is lost; a stored row nobody accepted is extra.
    assert await bench_e2e.account(database_url, accepted | {"never-stored"}, len(accepted)) == (
        1,
        0,
    )
    assert await bench_e2e.account(database_url, accepted, len(accepted) + 1) == (0, 1)


def test_figures_have_the_issue_keys() -> None:
    results = Results(floor=10_000.0, e2e_events=20_000, e2e_seconds=1.0)
    results.ack_latencies = [0.5, 1.0]
    results.samples = [Sample(0, 0, 0, 0), Sample(1, 10, 0, 1)]
    figures = results.figures()
    for key in (
        "e2e_events_per_s",
        "floor_events_per_s",
        "ratio_vs_floor",
        "sustained_events_per_s",
        "backlog_growth_events_per_s",
        "ack_p50_ms",
        "ack_p99_ms",
        "freshness_p50_ms",
        "freshness_p99_ms",
        "peak_rss_mb",
        "lost",
        "duplicated",
    ):
        assert key in figures
    assert figures["ratio_vs_floor"] == 2.0
    assert figures["ack_p99_ms"] == 1000.0
    assert figures["backlog_growth_events_per_s"] == 10
