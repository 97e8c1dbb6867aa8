"""`adfunnel seed` loads through the writers' storage path: every unique event once; its
user mix (returning and hot users) is the generator's, set by SeedPlan and the CLI flags.
"""

from __future__ import annotations

import contextlib
import random
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from adfunnel import cli, embedded
from adfunnel.testing import fetch_rows
from adfunnel.tools import cli as tools_cli
from adfunnel.tools.seed import SeedPlan, SeedResult, _batch, seed

END = datetime(2026, 11, 27, tzinfo=UTC)


def seeded_users(plan: SeedPlan, n: int) -> list[tuple[str, str]]:
    """(source, userId) of each event of one seed batch, as `seed` would generate it."""
    start = END - timedelta(days=plan.days)
    staged = _batch(plan.generator(), random.Random(plan.seed), plan, start, n)
    events = [orjson.loads(row.payload) for row in staged]
    return [(event["source"], event["data"]["user"]["userId"]) for event in events]


def reused(users: list[tuple[str, str]]) -> float:
    seen: set[tuple[str, str]] = set()
    count = 0
    for user in users:
        count += user in seen
        seen.add(user)
    return count / len(users)


def test_seeded_events_have_the_planned_returning_users() -> None:
    plan = SeedPlan(events=0, seed=3, duplicate_share=0.0, returning_share=0.3)
    assert reused(seeded_users(plan, 20_000)) == pytest.approx(0.3, abs=0.02)
    default = SeedPlan(events=0, seed=3, duplicate_share=0.0)
    assert (default.returning_share, default.hot_users, default.hot_share) == (0.02, 0, None)
    assert reused(seeded_users(default, 20_000)) == pytest.approx(0.02, abs=0.005)


def test_seeded_events_have_the_planned_hot_users() -> None:
    plan = SeedPlan(events=0, seed=3, duplicate_share=0.0, returning_share=0.0, hot_users=600)
    users = seeded_users(plan, 24_000)
    for source in ("facebook", "tiktok"):
        counts = Counter(user_id for kind, user_id in users if kind == source)
        hot = {user_id for user_id, n in counts.items() if n > 1}
        assert len(hot) <= 600, source
        # Half by default once there are hot users.
        share = sum(counts[user_id] for user_id in hot) / counts.total()
        assert share == pytest.approx(0.5, abs=0.02), source


@pytest.mark.parametrize(
    ("bad", "named"),
    [
        ({"returning_share": 1.1}, "returning_share"),
        ({"hot_users": -5}, "hot_users"),
        ({"hot_share": 0.5}, "needs hot_users > 0"),
        ({"hot_users": 10, "hot_share": 0.9, "returning_share": 0.2}, "add up to more than 1"),
    ],
)
def test_a_bad_user_mix_is_refused_before_seeding(bad: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        SeedPlan(events=10, **bad)


def test_the_seed_flags_reach_the_plan(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    plans: list[SeedPlan] = []

    async def fake_seed(database_url: str, plan: SeedPlan) -> SeedResult:
        plans.append(plan)
        return SeedResult(sent=plan.events, stored=plan.events, seconds=1.0)

    @contextlib.contextmanager
    def no_database(explicit: str | None) -> Iterator[str]:
        yield "postgresql://unused"

    monkeypatch.setattr(tools_cli, "seed", fake_seed)
    monkeypatch.setattr(embedded, "database", no_database)
    argv = ["seed", "--events", "10", "--returning", "0.3", "--hot-users", "600"]
    assert cli.main(argv) == 0
    assert cli.main([*argv, "--hot-share", "0.25"]) == 0
    assert cli.main(["seed", "--events", "10"]) == 0
    mixes = [(plan.returning_share, plan.hot_users, plan.hot_share) for plan in plans]
    assert mixes == [(0.3, 600, None), (0.3, 600, 0.25), (0.02, 0, None)]

    capsys.readouterr()
    assert cli.main(["seed", "--events", "10", "--hot-share", "0.5"]) == 2
    assert "hot_share 0.5 needs hot_users > 0" in capsys.readouterr().err
    assert len(plans) == 3  # refused before any seeding


@pytest.mark.integration
async def test_seed_stores_each_unique_event_once_inside_the_window(database: str) -> None:
    end = END
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
