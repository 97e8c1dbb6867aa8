"""`adfunnel bench reports` runs end to end on a small seeded database (no timings asserted)."""

from __future__ import annotations

import asyncpg
import pytest

from adfunnel.tools.bench import reports as bench_reports
from adfunnel.tools.bench.reports import Timings, table
from adfunnel.tools.seed import SeedPlan, seed
from adfunnel.tools.stats import percentile


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 95) == 95.0
    assert percentile(values, 99) == 99.0
    assert percentile([3.0], 99) == 3.0


def test_table_has_a_row_per_category_and_the_ratio() -> None:
    text, figures = table(
        {"events": Timings([1.0, 2.0], [10.0, 20.0]), "demographics": Timings([5.0], [])}
    )
    assert "| events | 2 |" in text and "| demographics | 1 |" in text
    assert figures["events"]["p95_ratio"] == 10.0
    assert "naive_p95_ms" not in figures["demographics"]


@pytest.mark.integration
async def test_the_bench_runs_on_a_seeded_database(database: str) -> None:
    await seed(database, SeedPlan(events=3_000, days=1, seed=5, batch=1_000))
    results = await bench_reports.run(database, samples=4, seed=2)
    assert len(results["events"].optimized) == len(results["events"].naive) == 4
    assert len(results["revenue"].optimized) == 4
    assert len(results["demographics"].optimized) == 4
    assert len(results["demographics"].naive) == 3  # the naive ones: a fifth, at least 3
    # Each naive answer is also the check of the optimized one.
    assert results["demographics"].compared == 3
    assert results["demographics"].differing == 0


@pytest.mark.integration
async def test_the_data_set_is_described_by_its_user_mix(database: str) -> None:
    await seed(database, SeedPlan(events=4_000, days=1, seed=6, batch=1_000, hot_users=3))
    conn = await asyncpg.connect(database)
    try:
        described = await bench_reports.data_set(conn)
    finally:
        await conn.close()
    assert described["events"] == await _stored(database)
    # Half of the events come from the 3 hot users of each source, who return constantly.
    assert 0.45 < described["returning_share"] < 0.7
    assert described["busiest_600_share"] > 0.5


async def _stored(database: str) -> int:
    conn = await asyncpg.connect(database)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM events"))
    finally:
        await conn.close()
