"""PostgreSQL storage on a real server: migrations, idempotent writes, report queries."""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any

import asyncpg
import orjson
import pytest

from adfunnel import schema, storage
from adfunnel.schema import dump_json, parse_timestamp
from adfunnel.storage import EventFilters, RejectedRow, StagedEvent
from adfunnel.testing import database_names, unique_database
from adfunnel.tools.generator import Generator

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 27, 10, 0, 0, 123000, tzinfo=UTC)
RECEIVED = datetime(2026, 11, 27, 10, 0, 1, tzinfo=UTC)


def migration_versions() -> list[int]:
    """The versions shipped in adfunnel/storage/migrations, read independently of storage."""
    return sorted(
        int(entry.name[:4])
        for entry in resources.files("adfunnel.storage.migrations").iterdir()
        if re.fullmatch(r"\d{4}_\w+\.sql", entry.name)
    )


def staged(
    payload: dict[str, Any],
    *,
    received_at: datetime = RECEIVED,
    stream_seq: int | None = 1,
    correlation_id: str | None = "corr-1",
) -> StagedEvent:
    return StagedEvent(
        row=schema.event_row(payload),
        payload=orjson.dumps(payload).decode(),
        correlation_id=correlation_id,
        received_at=received_at,
        stream_seq=stream_seq,
    )


def copy_of(payload: dict[str, Any], **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = orjson.loads(orjson.dumps(payload))
    out.update(extra)
    return out


@pytest.fixture
async def pool(database: str) -> AsyncIterator[asyncpg.Pool]:
    """A migrated database's pool, prepared as the writers' is."""
    pool = await storage.create_pool(database, size=3)
    async with pool.acquire() as conn:
        await storage.migrate(conn)
    yield pool
    await pool.close()


async def insert(pool: asyncpg.Pool, events: list[StagedEvent]) -> int:
    async with pool.acquire() as conn, conn.transaction():
        return await storage.insert_events(conn, events)


async def stored(pool: asyncpg.Pool, event_id: str) -> asyncpg.Record:
    row = await pool.fetchrow(
        "SELECT event_id, user_id, event_time, payload, payload_json, received_at, stored_at,"
        " stream_seq, correlation_id, event_type FROM event_traces WHERE event_id = $1",
        event_id,
    )
    assert row is not None, event_id
    return row


async def count(pool: asyncpg.Pool, table: str) -> int:
    value = await pool.fetchval(f"SELECT count(*) FROM {table}")
    return int(value)


# -- migrations ----------------------------------------------------------------------------


async def test_concurrent_migrations_apply_each_version_once(database: str) -> None:
    versions = migration_versions()
    assert versions, "no migrations found"
    conns = [await asyncpg.connect(database) for _ in range(6)]
    try:
        results = await asyncio.gather(*(storage.migrate(conn) for conn in conns))
        applied = [version for result in results for version in result]
        assert sorted(applied) == versions
        assert sum(1 for result in results if result) == 1
        again = await asyncio.gather(*(storage.migrate(conn) for conn in conns[:2]))
        assert again == [[], []]
        rows = await conns[0].fetch(
            "SELECT version, count(*) AS n FROM schema_migrations GROUP BY 1"
        )
        assert sorted(row["version"] for row in rows) == versions
        assert {row["n"] for row in rows} == {1}
        tables = {
            row["tablename"]
            for row in await conns[0].fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            )
        }
        assert {"events", "rejected_events", "schema_migrations"} <= tables
        # The advisory lock is released by everyone: another session takes it at once.
        conns.append(await asyncpg.connect(database))
        assert await conns[-1].fetchval(
            "SELECT pg_try_advisory_lock($1)", storage.MIGRATION_LOCK_ID
        )
    finally:
        for conn in conns:
            await conn.close()


async def test_a_second_migration_run_applies_nothing(database: str) -> None:
    conn = await asyncpg.connect(database)
    try:
        assert await storage.migrate(conn) == migration_versions()
        assert await storage.migrate(conn) == []
        versions = [r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")]
        assert sorted(versions) == migration_versions()
    finally:
        await conn.close()


# -- databases -----------------------------------------------------------------------------


async def test_a_database_is_dropped_with_its_open_connections(servers: Any) -> None:
    name = unique_database("drop")
    url = await storage.prepared_database(servers.postgres_url, name)
    left_open = await asyncpg.connect(url)
    try:
        await storage.drop_database(servers.postgres_url, name)
        assert name not in await database_names(servers.postgres_url)
        await storage.drop_database(servers.postgres_url, name)  # already gone: nothing to do
    finally:
        await left_open.close()


async def test_an_unsafe_database_name_is_refused_before_any_ddl(servers: Any) -> None:
    with pytest.raises(ValueError, match="unsafe database name"):
        await storage.drop_database(servers.postgres_url, 'x" WITH (FORCE); --')


# -- insert_events -------------------------------------------------------------------------


async def test_a_batch_is_stored_and_new_ids_are_counted(pool: asyncpg.Pool) -> None:
    events = Generator(1, clock=lambda: NOW).batch(300, out_of_order_share=0.2)
    assert await insert(pool, [staged(e) for e in events]) == 300
    assert await count(pool, "events") == 300
    ids = {r["event_id"] for r in await pool.fetch("SELECT event_id FROM events")}
    assert ids == {e["eventId"] for e in events}
    # Half old, some new: only the new ones count.
    more = Generator(2, clock=lambda: NOW).batch(50)
    mixed = [staged(e) for e in events[:150] + more]
    assert await insert(pool, mixed) == 50
    assert await count(pool, "events") == 350
    assert await insert(pool, mixed) == 0
    assert await count(pool, "events") == 350


async def test_an_empty_batch_stores_nothing(pool: asyncpg.Pool) -> None:
    assert await insert(pool, []) == 0
    assert await count(pool, "events") == 0


async def test_typed_columns_are_stored(pool: asyncpg.Pool) -> None:
    g = Generator(3, clock=lambda: NOW)
    checkout = g.facebook("checkout.complete")
    checkout["data"]["engagement"]["purchaseAmount"] = "1234.56"
    view = g.tiktok("video.view")
    await insert(pool, [staged(checkout), staged(view, correlation_id=None, stream_seq=2)])
    rows = {
        r["event_id"]: r
        for r in await pool.fetch(
            "SELECT event_id, event_time, source, funnel_stage, event_type, purchase_amount,"
            " campaign_id, age, country, followers, device, correlation_id FROM event_traces"
        )
    }
    fb, tt = rows[checkout["eventId"]], rows[view["eventId"]]
    assert fb["event_time"] == parse_timestamp(checkout["timestamp"])
    assert (fb["source"], fb["funnel_stage"], fb["event_type"]) == (
        "facebook",
        "bottom",
        "checkout.complete",
    )
    assert str(fb["purchase_amount"]) == "1234.56"
    assert fb["campaign_id"] == checkout["data"]["engagement"]["campaignId"]
    assert fb["age"] == checkout["data"]["user"]["age"]
    assert fb["correlation_id"] == "corr-1"
    assert tt["followers"] == view["data"]["user"]["followers"]
    assert tt["country"] == view["data"]["engagement"]["country"]
    assert tt["device"] == view["data"]["engagement"]["device"]
    assert tt["correlation_id"] is None


@pytest.mark.parametrize(
    "timestamp",
    [
        "0001-01-01T00:00:00Z",
        "1969-12-31T23:59:58.500001Z",
        "2026-11-27T12:00:00.123456+02:00",
        "9999-12-31T23:59:59.999999Z",
    ],
)
async def test_the_event_time_is_stored_to_the_microsecond_in_every_year(
    pool: asyncpg.Pool, timestamp: str
) -> None:
    # Writers send it as microseconds since 1970, which PostgreSQL turns back into a time.
    event = Generator(4, clock=lambda: NOW).facebook("ad.click")
    event["timestamp"] = timestamp
    assert await insert(pool, [staged(event)]) == 1
    row = await pool.fetchrow(
        "SELECT event_time, last_event_time FROM events JOIN deliveries"
        " USING (received_at, stream_seq)"
    )
    assert row is not None
    assert row["event_time"] == row["last_event_time"] == parse_timestamp(timestamp)


@pytest.mark.parametrize("early_first", [True, False], ids=["early-first", "late-first"])
async def test_the_same_event_id_twice_in_a_batch_keeps_the_earliest_received(
    pool: asyncpg.Pool, early_first: bool
) -> None:
    event = Generator(4, clock=lambda: NOW).facebook("ad.click")
    early = staged(copy_of(event, copy="early"), received_at=RECEIVED, stream_seq=9)
    late = staged(
        copy_of(event, copy="late"), received_at=RECEIVED + timedelta(seconds=3), stream_seq=2
    )
    batch = [early, late] if early_first else [late, early]
    assert await insert(pool, batch) == 1
    assert await count(pool, "events") == 1
    row = await stored(pool, event["eventId"])
    assert orjson.loads(storage.event_json(row))["copy"] == "early"
    assert row["received_at"] == RECEIVED
    assert row["stream_seq"] == 9


async def test_same_received_at_in_a_batch_keeps_the_lower_stream_seq(pool: asyncpg.Pool) -> None:
    event = Generator(5, clock=lambda: NOW).tiktok("follow")
    first = staged(copy_of(event, copy="seq-3"), stream_seq=3)
    second = staged(copy_of(event, copy="seq-8"), stream_seq=8)
    assert await insert(pool, [second, first]) == 1
    assert orjson.loads(storage.event_json(await stored(pool, event["eventId"])))["copy"] == "seq-3"


async def test_a_copy_received_later_never_replaces_the_stored_one(pool: asyncpg.Pool) -> None:
    event = Generator(6, clock=lambda: NOW).facebook("form.submission")
    assert await insert(pool, [staged(copy_of(event, copy="first"), stream_seq=5)]) == 1
    before = await stored(pool, event["eventId"])
    later = [
        staged(copy_of(event, copy="later"), received_at=RECEIVED + timedelta(seconds=1)),
        staged(copy_of(event, copy="later-seq"), received_at=RECEIVED, stream_seq=6),
        staged(copy_of(event, copy="same"), received_at=RECEIVED, stream_seq=5),
    ]
    for copy in later:
        assert await insert(pool, [copy]) == 0
    after = await stored(pool, event["eventId"])
    assert orjson.loads(storage.event_json(after))["copy"] == "first"
    assert after == before  # stored_at included: nothing was rewritten
    assert await count(pool, "events") == 1


async def test_a_copy_received_earlier_that_commits_late_replaces_the_stored_one(
    pool: asyncpg.Pool,
) -> None:
    event = Generator(7, clock=lambda: NOW).tiktok("purchase")
    later = copy_of(event, copy="later")
    assert await insert(pool, [staged(later, received_at=RECEIVED, stream_seq=20)]) == 1
    earlier = copy_of(event, copy="earlier", eventType="purchase")
    earlier["data"]["engagement"]["purchaseAmount"] = "9.99"
    replaced = staged(
        earlier,
        received_at=RECEIVED - timedelta(milliseconds=1),
        stream_seq=19,
        correlation_id="corr-early",
    )
    # Not a new eventId: the count of new ids stays 0 although the row changed.
    assert await insert(pool, [replaced]) == 0
    row = await stored(pool, event["eventId"])
    assert orjson.loads(storage.event_json(row))["copy"] == "earlier"
    assert row["received_at"] == RECEIVED - timedelta(milliseconds=1)
    assert row["stream_seq"] == 19
    assert row["correlation_id"] == "corr-early"
    amount = await pool.fetchval(
        "SELECT purchase_amount FROM events WHERE event_id = $1", event["eventId"]
    )
    assert str(amount) == "9.99"
    assert await count(pool, "events") == 1


async def test_same_received_at_with_a_lower_stream_seq_replaces(pool: asyncpg.Pool) -> None:
    event = Generator(8, clock=lambda: NOW).facebook("ad.view")
    assert await insert(pool, [staged(copy_of(event, copy="seq-7"), stream_seq=7)]) == 1
    assert await insert(pool, [staged(copy_of(event, copy="seq-4"), stream_seq=4)]) == 0
    assert orjson.loads(storage.event_json(await stored(pool, event["eventId"])))["copy"] == "seq-4"


async def test_a_failed_transaction_stores_nothing(pool: asyncpg.Pool) -> None:
    events = Generator(9, clock=lambda: NOW).batch(20)
    with pytest.raises(RuntimeError, match="abort"):
        async with pool.acquire() as conn, conn.transaction():
            assert await storage.insert_events(conn, [staged(e) for e in events]) == 20
            raise RuntimeError("abort")
    assert await count(pool, "events") == 0
    # The staging table is empty for the next batch on the same connections.
    assert await insert(pool, [staged(e) for e in events[:5]]) == 5
    assert await count(pool, "events") == 5


@pytest.mark.parametrize(
    "text",
    ["tab\there", "line\nend", "carriage\rreturn", "back\\slash", "\\N", "\\t literal", "Kraków"],
)
async def test_copy_escapes_round_trip_every_typed_column_and_the_payload(
    pool: asyncpg.Pool, text: str
) -> None:
    g = Generator(10, clock=lambda: NOW)
    event = g.facebook("checkout.complete")
    event["eventId"] = f"fb-{text}"
    user, engagement = event["data"]["user"], event["data"]["engagement"]
    user["userId"] = f"u-{text}"
    user["location"] = {"country": f"c-{text}", "city": f"city-{text}"}
    engagement["campaignId"], engagement["adId"] = f"cmp-{text}", f"ad-{text}"
    event["note"] = text
    # The sender's own whitespace between tokens is part of the payload bytes too.
    raw = orjson.dumps(event, option=orjson.OPT_INDENT_2).replace(b"  ", b"\t")
    assert b"\n" in raw and b"\t" in raw
    line = storage.copy_row(schema.event_row(event), raw)
    async with pool.acquire() as conn, conn.transaction():
        assert storage.current_lines(line) == line
        trace = storage.MessageTrace(RECEIVED, 3, text)
        assert await storage.insert_copy(conn, [line], [trace]) == 1
    row = await pool.fetchrow(
        "SELECT event_id, user_id, event_time, country, city, campaign_id, correlation_id,"
        " payload, payload_json, stream_seq FROM event_traces"
    )
    assert row is not None
    assert row["event_id"] == event["eventId"]
    assert (row["user_id"], row["country"], row["city"]) == (
        user["userId"],
        f"c-{text}",
        f"city-{text}",
    )
    assert row["campaign_id"] == f"cmp-{text}"
    assert row["correlation_id"] == text
    # The payload's own bytes, whitespace and all, through compression and back.
    assert storage.event_json(row) == raw
    assert row["stream_seq"] == 3
    assert storage.copy_event_id(line) == event["eventId"]
    assert storage.copy_payload_text(line) == raw.decode()


# -- insert_rejected -----------------------------------------------------------------------


def rejected_row(key: str, **overrides: Any) -> RejectedRow:
    values: dict[str, Any] = {
        "dedup_key": key,
        "event_id": f"fb-{key}",
        "source": "facebook",
        "reason": "timestamp: 'invalid-timestamp' is not an ISO-8601 timestamp",
        "batch_index": 3,
        "payload": '{"eventId": "fb-x", "timestamp": "invalid-timestamp"}',
        "raw": None,
        "correlation_id": "corr-r",
        "received_at": RECEIVED,
    }
    values.update(overrides)
    return RejectedRow(**values)


async def test_insert_rejected_is_idempotent_on_dedup_key(pool: asyncpg.Pool) -> None:
    rows = [rejected_row(f"msg-1:{i}") for i in range(4)]
    async with pool.acquire() as conn:
        assert await storage.insert_rejected(conn, rows) == 4
        assert await storage.insert_rejected(conn, rows) == 0
        changed = [rejected_row("msg-1:0", reason="something else"), rejected_row("msg-2:0")]
        assert await storage.insert_rejected(conn, changed) == 1
        assert await storage.insert_rejected(conn, [rejected_row("msg-3:0")] * 2) == 1
        assert await storage.insert_rejected(conn, []) == 0
    assert await count(pool, "rejected_events") == 6
    reason = await pool.fetchval("SELECT reason FROM rejected_events WHERE dedup_key = 'msg-1:0'")
    assert reason.startswith("timestamp")


async def test_rejected_rows_keep_every_column(pool: asyncpg.Pool) -> None:
    row = rejected_row(
        "k", event_id=None, source=None, batch_index=None, payload=None, raw="not json {"
    )
    async with pool.acquire() as conn:
        await storage.insert_rejected(conn, [row, rejected_row("j")])
    got = {
        r["dedup_key"]: r
        for r in await pool.fetch(
            "SELECT dedup_key, event_id, source, reason, batch_index, payload, raw,"
            " correlation_id, received_at FROM rejected_events"
        )
    }
    assert got["k"]["payload"] is None and got["k"]["raw"] == "not json {"
    assert got["k"]["event_id"] is None and got["k"]["batch_index"] is None
    assert got["j"]["event_id"] == "fb-j" and got["j"]["batch_index"] == 3
    assert orjson.loads(got["j"]["payload"]) == {
        "eventId": "fb-x",
        "timestamp": "invalid-timestamp",
    }
    assert got["j"]["received_at"] == RECEIVED
    assert got["j"]["correlation_id"] == "corr-r"


# -- report queries ------------------------------------------------------------------------


def _key(e: dict[str, Any]) -> tuple[str, str, str]:
    return (e["source"], e["funnelStage"], e["eventType"])


def _bucket(moment: datetime, interval: str) -> datetime:
    moment = moment.astimezone(UTC).replace(tzinfo=None)
    if interval == "minute":
        return moment.replace(second=0, microsecond=0)
    if interval == "hour":
        return moment.replace(minute=0, second=0, microsecond=0)
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


@pytest.fixture
async def report_data(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    # Late events reach up to 12 hours back: with the clock at 02:30 they span two days,
    # so "day" buckets have something to split.
    clock = datetime(2026, 11, 27, 2, 30, 0, tzinfo=UTC)
    g = Generator(21, clock=lambda: clock)
    events = g.batch(1500, out_of_order_share=0.6, duplicate_share=0.05)
    # Some exact duplicates: stored once, so counted once.
    unique = list({e["eventId"]: e for e in events}.values())
    assert len(unique) < len(events)
    assert await insert(pool, [staged(e) for e in events]) == len(unique)
    return unique


def _filter(
    events: list[dict[str, Any]], filters: EventFilters
) -> list[tuple[dict[str, Any], datetime]]:
    out = []
    for e in events:
        t = parse_timestamp(e["timestamp"])
        if filters.start is not None and t < filters.start:
            continue
        if filters.end is not None and t >= filters.end:
            continue
        if filters.source is not None and e["source"] != filters.source:
            continue
        if filters.funnel_stage is not None and e["funnelStage"] != filters.funnel_stage:
            continue
        if filters.event_type is not None and e["eventType"] != filters.event_type:
            continue
        out.append((e, t))
    return out


FilterMaker = Callable[[list[dict[str, Any]]], EventFilters]


def _at(events: list[dict[str, Any]], rank: int) -> datetime:
    """The `rank`-th smallest event time: a bound that equals a stored timestamp exactly."""
    return sorted(parse_timestamp(e["timestamp"]) for e in events)[rank]


FILTERS: dict[str, FilterMaker] = {
    "none": lambda events: EventFilters(),
    "facebook": lambda events: EventFilters(source="facebook"),
    "bottom": lambda events: EventFilters(funnel_stage="bottom"),
    "comment-both-sources": lambda events: EventFilters(event_type="comment"),
    "range-on-exact-bounds": lambda events: EventFilters(_at(events, 100), _at(events, 700)),
    "tiktok-top-range": lambda events: EventFilters(
        _at(events, 50), _at(events, 1200), "tiktok", "top"
    ),
    "from-only": lambda events: EventFilters(start=_at(events, 900)),
    "to-only-purchase": lambda events: EventFilters(
        end=_at(events, 1000), source="tiktok", event_type="purchase"
    ),
    "empty": lambda events: EventFilters(source="facebook", event_type="like"),
}


@pytest.mark.parametrize("name", list(FILTERS))
async def test_event_breakdown_counts_equal_python_counts(
    pool: asyncpg.Pool, report_data: list[dict[str, Any]], name: str
) -> None:
    filters = FILTERS[name](report_data)
    expected = Counter(_key(e) for e, _ in _filter(report_data, filters))
    async with pool.acquire() as conn:
        rows = await storage.event_breakdown(conn, filters)
    got = {(r["source"], r["funnel_stage"], r["event_type"]): r["count"] for r in rows}
    assert got == dict(expected)
    counts = [r["count"] for r in rows]
    assert counts == sorted(counts, reverse=True)
    if name != "empty":
        assert sum(counts) > 0


@pytest.mark.parametrize("interval", ["minute", "hour", "day"])
@pytest.mark.parametrize("name", ["none", "bottom", "range-on-exact-bounds", "tiktok-top-range"])
async def test_event_series_counts_equal_python_counts(
    pool: asyncpg.Pool, report_data: list[dict[str, Any]], name: str, interval: str
) -> None:
    filters = FILTERS[name](report_data)
    expected = Counter(_bucket(t, interval) for _, t in _filter(report_data, filters))
    async with pool.acquire() as conn:
        rows = await storage.event_series(conn, filters, interval)
    buckets = [r["bucket"] for r in rows]
    assert buckets == sorted(buckets)
    assert {r["bucket"]: r["count"] for r in rows} == dict(expected)
    assert all(r["count"] > 0 for r in rows)
    if interval == "day" and name == "none":
        assert len(rows) == 2  # the data spans midnight


async def test_event_series_refuses_an_unknown_interval(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        with pytest.raises(ValueError, match="interval"):
            await storage.event_series(conn, EventFilters(), "week")


async def test_stored_counts(pool: asyncpg.Pool) -> None:
    events = Generator(22, clock=lambda: NOW).batch(12)
    await insert(pool, [staged(e) for e in events])
    async with pool.acquire() as conn:
        await storage.insert_rejected(conn, [rejected_row("a"), rejected_row("b")])
        assert await storage.stored_counts(conn) == (12, 2)


async def test_the_wal_position_moves_by_what_is_written(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        before = await storage.wal_position(conn)
        # A WAL record of 10,000 bytes that touches no table.
        await conn.execute("SELECT pg_logical_emit_message(false, 'adfunnel', repeat('x', 10000))")
        moved = await storage.wal_position(conn) - before
    # Other tests' writes on the same server may land in between: at least, not exactly.
    assert moved >= 10_000


# -- fetch_event ---------------------------------------------------------------------------


async def test_fetch_event_round_trips_the_payload(pool: asyncpg.Pool) -> None:
    g = Generator(23, clock=lambda: NOW)
    event = g.facebook("checkout.complete")
    event["data"]["user"]["location"] = {"country": "Poland", "city": "Kraków"}
    event["extra"] = {"emoji": "🎯", "quote": 'say "hi"\n', "nested": [1, 2.5, None, True]}
    other = g.tiktok("share")
    await insert(pool, [staged(event, correlation_id="trace-me", stream_seq=42), staged(other)])
    async with pool.acquire() as conn:
        row = await storage.fetch_event(conn, event["eventId"])
        missing = await storage.fetch_event(conn, "fb-does-not-exist")
    assert missing is None
    assert row is not None
    # Stored compressed: a zstd frame far smaller than the JSON it holds.
    assert isinstance(row["payload"], bytes) and row["payload_json"] is None
    assert len(row["payload"]) < len(orjson.dumps(event)) / 2
    assert orjson.loads(storage.event_json(row)) == event
    assert row["correlation_id"] == "trace-me"
    assert row["received_at"] == RECEIVED
    assert isinstance(row["stored_at"], datetime)


async def test_fetch_event_keeps_an_integer_beyond_64_bits(pool: asyncpg.Pool) -> None:
    event = Generator(24, clock=lambda: NOW).tiktok("like")
    event["bigCounter"] = 123456789012345678901234567890
    text = dump_json(event).decode()  # orjson cannot write it; the bus' encoder can
    row = schema.event_row(event)
    await insert(pool, [StagedEvent(row, text, None, RECEIVED, 1)])
    async with pool.acquire() as conn:
        fetched = await storage.fetch_event(conn, event["eventId"])
    assert fetched is not None
    assert json.loads(storage.event_json(fetched)) == event


async def test_a_read_only_pool_can_read_and_never_write(pool: asyncpg.Pool, database: str) -> None:
    reader = await storage.create_pool(database, size=1, read_only=True)
    try:
        assert await reader.fetchval("SELECT count(*) FROM events") == 0
        for statement in (
            "INSERT INTO rejected_events (dedup_key, reason, received_at) VALUES ('k', 'r', now())",
            "DELETE FROM events",
            "CREATE TEMP TABLE scratch (x int)",
            "DROP TABLE events",
        ):
            with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
                await reader.execute(statement)
    finally:
        await reader.close()


async def test_users_of_one_follower_count_in_one_hour_share_an_index_key(
    pool: asyncpg.Pool,
) -> None:
    # 4,000 TikTok users of ten follower counts in one hour: ten keys of the follower index
    # (migration 0020), each with its list of rows. Keyed by the event time, as before, it
    # took 4,000 entries of 28 bytes, 16 pages at least.
    g = Generator(seed=21, clock=lambda: NOW, returning_share=0.0)
    events = [g.tiktok("like") for _ in range(4_000)]
    for n, event in enumerate(events):
        event["timestamp"] = (NOW + timedelta(milliseconds=n)).isoformat()
        event["data"]["user"]["followers"] = 1_000 * (n % 10)
    assert await insert(pool, [staged(e) for e in events]) == len(events)
    pages = await pool.fetchval(
        "SELECT pg_relation_size('events_tiktok_followers_idx')"
        " / current_setting('block_size')::int"
    )
    assert pages <= 8
    # The stats read through it stay exact, in a range that starts and ends inside the hour.
    within = EventFilters(start=NOW + timedelta(seconds=1), end=NOW + timedelta(seconds=3))
    async with pool.acquire() as conn:
        stats = await storage.follower_stats(conn, within)
    assert stats.users == 2_000 and stats.minimum == 0 and stats.maximum == 9_000
    assert stats.median == 4_500
