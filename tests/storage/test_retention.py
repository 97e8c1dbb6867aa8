"""Retention (SPEC §10): raw events and rejected rows past the window go in bounded batches;
whole buckets of the events and revenue reports keep their numbers; demographics stay those
of the events kept; a dry run changes nothing."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from adfunnel import cli, storage
from adfunnel.schema import event_row
from adfunnel.storage import EventFilters, RejectedRow, StagedEvent
from adfunnel.testing import db_fetch, run
from adfunnel.tools.generator import Generator

pytestmark = pytest.mark.integration

NOW = datetime(2026, 12, 5, 12, tzinfo=UTC)
OLD_DAY = datetime(2026, 11, 25, tzinfo=UTC)  # ten days before NOW
CUTOFF = NOW - timedelta(days=5)


def staged(payload: dict[str, Any], seq: int) -> StagedEvent:
    return StagedEvent(event_row(payload), orjson.dumps(payload).decode(), "c", NOW, seq)


def events(rng: random.Random) -> list[dict[str, Any]]:
    """A day ten days old and the last four days, with users that came back across both."""
    generator = Generator(seed=3, returning_share=0.0)
    old = [
        generator.event(at=OLD_DAY + timedelta(seconds=rng.randrange(86_400))) for _ in range(1_500)
    ]
    recent = [
        generator.event(at=NOW - timedelta(seconds=rng.randrange(4 * 86_400))) for _ in range(1_500)
    ]
    # Users with events on both sides of the horizon, and users with several old events.
    for event in rng.sample(recent, 300):
        twin = rng.choice([e for e in old if e["source"] == event["source"]])
        event["data"]["user"]["userId"] = twin["data"]["user"]["userId"]
    for event in rng.sample(old, 300):
        twin = rng.choice([e for e in old if e["source"] == event["source"]])
        event["data"]["user"]["userId"] = twin["data"]["user"]["userId"]
    return old + recent


async def _seeded(database: str) -> list[dict[str, Any]]:
    """The database migrated and holding `events`, plus two old rejected rows and a new one."""
    pool = await storage.create_pool(database, size=1)
    made = events(random.Random(11))
    async with pool.acquire() as conn:
        await storage.migrate(conn)
        for k in range(0, len(made), 500):
            async with conn.transaction():
                batch = [staged(e, k + i) for i, e in enumerate(made[k : k + 500])]
                await storage.insert_events(conn, batch)
        rejected = [
            RejectedRow(f"r{i}", None, None, "timestamp: invalid", None, None, "{}", "c", at)
            for i, at in enumerate([OLD_DAY, OLD_DAY, NOW - timedelta(hours=1)])
        ]
        await storage.insert_rejected(conn, rejected)
    await pool.close()
    return made


async def _reports(conn: storage.Conn) -> list[Any]:
    day = EventFilters(OLD_DAY, OLD_DAY + timedelta(days=1))
    return [
        [tuple(r) for r in await storage.event_breakdown(conn, day)],
        [tuple(r) for r in await storage.event_series(conn, day, "hour")],
        [tuple(r) for r in await storage.revenue_groups(conn, day)],
    ]


async def test_expired_rows_go_and_whole_buckets_keep_their_numbers(database: str) -> None:
    made = await _seeded(database)
    pool = await storage.create_pool(database, size=1)
    async with pool.acquire() as conn:
        before = await _reports(conn)
        assert before[0], "the old day has events to keep counting"
        dry = await storage.expire(conn, CUTOFF, dry_run=True)
        assert (dry.events, dry.rejected) == (1_500, 2)
        assert await conn.fetchval("SELECT count(*) FROM events") == 3_000
        expired = await storage.expire(conn, CUTOFF, batch=400)  # several batches
        assert (expired.events, expired.rejected) == (1_500, 2)
        # A day of grace past the window (events accepted at its edge may wait in JetStream).
        assert expired.before == storage.removal_horizon(CUTOFF) == CUTOFF - timedelta(days=1)
        assert await conn.fetchval("SELECT min(event_time) FROM events") >= expired.before
        assert await conn.fetchval("SELECT count(*) FROM rejected_events") == 1
        # The events and revenue reports of the expired day, from the rollups: unchanged.
        assert await _reports(conn) == before
        old_id = next(e["eventId"] for e in made if e["timestamp"] < "2026-11-26")
        assert await storage.fetch_event(conn, old_id) is None
        # Raw rows and rollups agree wherever raw rows are kept; the demographics tables
        # agree with the events that remain.
        assert await storage.rollup_mismatches(conn, since=expired.before) == []
        assert await storage.demographic_mismatches(conn) == {}
        for source in ("facebook", "tiktok"):
            everything = EventFilters()
            fast = await storage.demographic_counts(conn, everything, source)
            naive = await storage.naive_demographic_counts(conn, everything, source)
            assert sorted(map(tuple, fast), key=repr) == sorted(map(tuple, naive), key=repr)
        # The traces of the expired events' messages went with them; the rest keep theirs.
        assert await conn.fetchval("SELECT count(*) FROM deliveries") == 1_500
        assert await conn.fetchval("SELECT count(*) FROM event_traces WHERE stored_at IS NULL") == 0
        # A second run finds nothing more.
        again = await storage.expire(conn, CUTOFF)
        assert (again.events, again.rejected) == (0, 0)
    await pool.close()


async def test_a_message_keeps_its_trace_while_any_of_its_events_is_kept(database: str) -> None:
    generator = Generator(seed=5)
    old, recent = generator.event(at=OLD_DAY), generator.event(at=NOW - timedelta(hours=2))
    pool = await storage.create_pool(database, size=1)
    async with pool.acquire() as conn:
        await storage.migrate(conn)
        async with conn.transaction():
            await storage.insert_events(conn, [staged(old, 1), staged(recent, 1)])
        assert (await storage.expire(conn, CUTOFF)).events == 1
        assert await storage.fetch_event(conn, old["eventId"]) is None
        kept = await storage.fetch_event(conn, recent["eventId"])
        assert kept is not None and kept["correlation_id"] == "c"
        assert kept["stored_at"] is not None
    await pool.close()


def test_the_command_removes_what_the_dry_run_counted(
    database: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run(_seeded(database))

    def stored() -> int:
        return int(db_fetch(database, "SELECT count(*) AS n FROM events")[0]["n"])

    # The old day is ten days before NOW; the command reads the real clock: a window that
    # reaches back to two days after the old day removes exactly that day (one day of grace).
    days = (datetime.now(UTC) - OLD_DAY).total_seconds() / 86_400 - 2
    monkeypatch.setenv("RETENTION_DAYS", str(days))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert cli.main(["retention", "--dry-run", "--database-url", database]) == 0
    assert "would remove 1,500 events" in capsys.readouterr().out
    assert stored() == 3_000
    assert cli.main(["retention", "--database-url", database]) == 0
    assert "removed 1,500 events" in capsys.readouterr().out
    assert stored() == 1_500
    monkeypatch.delenv("RETENTION_DAYS")
    assert cli.main(["retention", "--database-url", database]) == 2
