"""`adfunnel seed` loads through the writers' storage path: every unique event once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from adfunnel.seed import SeedPlan, seed
from adfunnel.testing import fetch_rows

pytestmark = pytest.mark.integration


async def test_seed_stores_each_unique_event_once_inside_the_window(database: str) -> None:
    end = datetime(2026, 11, 27, tzinfo=UTC)
    plan = SeedPlan(events=5_000, days=2, end=end, seed=3, batch=1_200, duplicate_share=0.05)
    result = await seed(database, plan)
    assert result.sent == 5_000
    rows = await fetch_rows(
        database,
        "SELECT count(*) AS n, count(DISTINCT event_id) AS ids, min(event_time) AS first,"
        " max(event_time) AS last FROM events",
    )
    assert rows[0]["n"] == rows[0]["ids"] == result.stored
    # Re-sent copies were part of what was sent, but are stored once.
    assert 4_000 < result.stored < 5_000
    assert end - timedelta(days=2) <= rows[0]["first"] <= rows[0]["last"] <= end

    again = await seed(database, plan)  # the same seed: every event is already there
    assert again.stored == 0
