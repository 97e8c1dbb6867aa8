"""Events unique on a key of their eventId (migration 0016): the gateway's key is the
database's, rows stored before get theirs, and ids whose keys collide are never merged."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
import pytest

from adfunnel import storage
from adfunnel.schema import event_row
from adfunnel.storage import EventFilters, StagedEvent
from adfunnel.storage._payloads import compress, row_ids, time_text
from adfunnel.tools.generator import Generator

pytestmark = pytest.mark.integration

NOW = datetime(2026, 12, 5, 10, tzinfo=UTC)


def staged(event: dict[str, Any], received: datetime, seq: int) -> StagedEvent:
    return StagedEvent(event_row(event), orjson.dumps(event).decode(), "k", received, seq)


@pytest.fixture
async def conn(database: str) -> Any:
    connection = await asyncpg.connect(database)
    yield connection
    await connection.close()


async def test_the_gateways_key_is_the_databases(conn: asyncpg.Connection) -> None:
    await storage.migrate(conn)
    ids = ["fb-0b8e2c1e-5b7a-4c1e-9d3f-2a6b8c0d1e2f", "Kraków-ü-日本", "tab\there", "\\x00", "a"]
    for event_id in ids:
        key = await conn.fetchval("SELECT adfunnel_event_key($1)::text", event_id)
        assert key.replace("-", "") == storage.event_key(event_id)
    assert len({storage.event_key(event_id) for event_id in ids}) == len(ids)


async def test_rows_stored_before_0016_get_their_keys_and_keep_working(
    conn: asyncpg.Connection,
) -> None:
    await storage.migrate(conn, until=15)
    g = Generator(seed=8, clock=lambda: NOW)
    old = [g.facebook() for _ in range(20)] + [g.tiktok() for _ in range(20)]
    for event in old:
        row = event_row(event)
        ids = row_ids(row.event_id, row.user_id, time_text(row.event_time))
        await conn.execute(
            "INSERT INTO events (event_id, event_time, source, funnel_stage, event_type,"
            " user_id, purchase_amount, campaign_id, age, gender, country, city, followers,"
            " device, payload, received_at, stream_seq)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, 1)",
            *row,
            compress(orjson.dumps(event), ids),
            NOW,
        )
    assert (await storage.migrate(conn))[0] == 16
    keys = await conn.fetch("SELECT event_id, event_key::text AS key FROM events")
    assert len(keys) == len(old)
    assert all(r["key"].replace("-", "") == storage.event_key(r["event_id"]) for r in keys)
    stored = await storage.fetch_event(conn, old[5]["eventId"])
    assert stored is not None and orjson.loads(storage.event_json(stored)) == old[5]
    # The triggers came along: new events, one of them an old user's, keep every rollup and
    # the demographics exact; a re-sent old event is a duplicate.
    new = [g.facebook() for _ in range(20)] + [g.tiktok() for _ in range(20)]
    # A user with events on both sides of the upgrade.
    new[0]["data"]["user"]["userId"] = old[0]["data"]["user"]["userId"]
    received = NOW + timedelta(seconds=5)
    batch = [staged(e, received, 2) for e in [*new, old[3]]]
    async with conn.transaction():
        assert await storage.insert_events(conn, batch) == len(new)
    assert await conn.fetchval("SELECT count(*) FROM events") == len(old) + len(new)
    assert await storage.rollup_mismatches(conn) == []
    assert await storage.demographic_mismatches(conn) == {}
    everything = EventFilters()
    for source in ("facebook", "tiktok"):
        fast = await storage.demographic_counts(conn, everything, source)
        naive = await storage.naive_demographic_counts(conn, everything, source)
        assert sorted(map(tuple, fast), key=repr) == sorted(map(tuple, naive), key=repr)


async def test_ids_whose_keys_collide_are_never_merged(conn: asyncpg.Connection) -> None:
    await storage.migrate(conn)
    g = Generator(seed=9, clock=lambda: NOW)
    first, second = g.facebook("ad.click"), g.facebook("ad.click")
    async with conn.transaction():
        await storage.insert_events(conn, [staged(first, NOW + timedelta(seconds=9), 5)])
    # No two ids are known to share a key: the stored row is given the second id's key, as
    # if they did. The second, received earlier, would otherwise replace the first.
    await conn.execute(
        "UPDATE events SET event_key = adfunnel_event_key($1) WHERE event_id = $2",
        second["eventId"],
        first["eventId"],
    )
    async with conn.transaction():
        assert await storage.insert_events(conn, [staged(second, NOW, 1)]) == 0
    rows = await conn.fetch("SELECT event_id FROM events")
    assert [r["event_id"] for r in rows] == [first["eventId"]]
