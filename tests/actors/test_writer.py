"""The writer on a real PostgreSQL, without Ray: deliveries in, rows and rejections out."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
import pytest

from actors.writer import Writer, is_transient
from adfunnel import storage
from adfunnel.bus import Delivery
from adfunnel.errors import StorageUnavailable
from adfunnel.schema import Rejected, dump_json, event_row, validate_event
from adfunnel.settings import Settings
from adfunnel.testing import fetch_rows
from adfunnel.tools.generator import Generator

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 27, 10, 0, 0, 123000, tzinfo=UTC)
RECEIVED = "2026-11-27T10:00:01.500000+00:00"
UNREACHABLE = "postgresql://postgres@127.0.0.1:1/nowhere"


def make_settings() -> Settings:
    return Settings(
        nats_url="nats://127.0.0.1:4222",
        database_url=None,
        writer_connections=2,
        max_deliver=10,
        log_level="WARNING",
    )


def gen(seed: int) -> Generator:
    return Generator(seed, clock=lambda: NOW)


def lines(items: list[Any]) -> bytes:
    """A rejected-lane body: JSON lines."""
    return b"\n".join(orjson.dumps(item) for item in items)


def event_lines(events: list[dict[str, Any]]) -> bytes:
    """An event-lane body, as the gateway encodes it: one COPY line per event."""
    return b"".join(storage.copy_row(event_row(e), dump_json(e)) for e in events)


def delivery(
    lane: str,
    body: bytes,
    msg_id: str,
    *,
    stream_seq: int = 1,
    correlation_id: str | None = "corr-w",
    num_delivered: int = 1,
) -> Delivery:
    return Delivery(
        lane=lane,
        body=body,
        msg_id=msg_id,
        correlation_id=correlation_id,
        received_at=RECEIVED,
        stream_seq=stream_seq,
        num_delivered=num_delivered,
    )


def rejected_line(index: int, event: Any) -> dict[str, Any]:
    result = validate_event(event)
    assert isinstance(result, Rejected), event
    return {"index": index, "eventId": result.event_id, "reason": result.reason, "payload": event}


@pytest.fixture
async def database_migrated(database: str) -> str:
    conn = await asyncpg.connect(database)
    try:
        await storage.migrate(conn)
    finally:
        await conn.close()
    return database


@pytest.fixture
async def writer(database_migrated: str) -> AsyncIterator[Writer]:
    w = Writer(make_settings(), database_migrated, 0)
    yield w
    await w.close()


async def event_ids(database: str) -> set[str]:
    return {r["event_id"] for r in await fetch_rows(database, "SELECT event_id FROM events")}


async def rejected_rows(database: str) -> list[asyncpg.Record]:
    return await fetch_rows(
        database,
        "SELECT dedup_key, event_id, source, reason, batch_index, payload::text AS payload, raw,"
        " correlation_id, received_at FROM rejected_events ORDER BY dedup_key",
    )


async def snapshot(database: str) -> tuple[list[Any], list[Any]]:
    events = await fetch_rows(
        database,
        "SELECT event_id, payload::text, received_at, stored_at, stream_seq, correlation_id"
        " FROM event_traces ORDER BY event_id",
    )
    rejected = await fetch_rows(database, "SELECT * FROM rejected_events ORDER BY id")
    return [tuple(r) for r in events], [tuple(r) for r in rejected]


# -- counts --------------------------------------------------------------------------------


async def test_stored_duplicate_and_rejected_counts(writer: Writer, database_migrated: str) -> None:
    g = gen(1)
    facebook = [g.facebook() for _ in range(30)]
    tiktok = [g.tiktok() for _ in range(25)]
    # A copy of an event already in this write, in another message of the same lane.
    again = [tiktok[3], g.tiktok("like")]
    bad = [g.corrupt(g.facebook(), "invalid_gender"), g.corrupt(g.tiktok(), "missing_eventId"), 5]
    result = await writer.write(
        [
            delivery("facebook", event_lines(facebook), "m-fb", stream_seq=1),
            delivery("tiktok", event_lines(tiktok), "m-tt", stream_seq=2),
            delivery("tiktok", event_lines(again), "m-tt2", stream_seq=3),
            delivery(
                "rejected",
                lines([rejected_line(i, item) for i, item in enumerate(bad)]),
                "m-rej",
                stream_seq=4,
            ),
        ]
    )
    assert (result.stored, result.duplicates, result.rejected) == (56, 1, 3)
    expected = {e["eventId"] for e in facebook + tiktok + again}
    assert await event_ids(database_migrated) == expected
    rows = await rejected_rows(database_migrated)
    assert [r["dedup_key"] for r in rows] == ["m-rej:0", "m-rej:1", "m-rej:2"]
    assert [r["batch_index"] for r in rows] == [0, 1, 2]
    assert rows[0]["event_id"] == bad[0]["eventId"]  # type: ignore[index]
    assert rows[0]["reason"].startswith("data.user.gender")
    assert rows[0]["source"] == "facebook"
    assert rows[1]["event_id"] is None and rows[1]["reason"].startswith("eventId")
    assert rows[1]["source"] == "tiktok"
    assert rows[2]["source"] is None and orjson.loads(rows[2]["payload"]) == 5
    assert orjson.loads(rows[0]["payload"]) == bad[0]
    assert {r["correlation_id"] for r in rows} == {"corr-w"}


async def test_rows_carry_the_delivery_metadata(writer: Writer, database_migrated: str) -> None:
    event = gen(2).facebook("checkout.complete")
    await writer.write(
        [delivery("facebook", event_lines([event]), "m-1", stream_seq=77, correlation_id="trace-1")]
    )
    (row,) = await fetch_rows(
        database_migrated,
        "SELECT event_id, user_id, event_time, payload, payload_json, correlation_id, received_at,"
        " stream_seq, stored_at FROM event_traces",
    )
    assert orjson.loads(storage.event_json(row)) == event
    assert row["correlation_id"] == "trace-1"
    assert row["received_at"] == datetime.fromisoformat(RECEIVED)
    assert row["stream_seq"] == 77
    assert row["stored_at"] > row["received_at"]


async def test_a_gateways_own_correlation_id_is_kept_once_per_message_as_a_uuid(
    writer: Writer, database_migrated: str
) -> None:
    cid = str(uuid.uuid4())
    events = [gen(3).facebook("ad.click"), gen(4).tiktok("like")]
    await writer.write([delivery("facebook", event_lines(events), "m-u", correlation_id=cid)])
    rows = await fetch_rows(
        database_migrated, "SELECT correlation_uuid::text AS u, correlation_id FROM deliveries"
    )
    assert [(r["u"], r["correlation_id"]) for r in rows] == [(cid, None)]
    (row,) = await fetch_rows(
        database_migrated,
        "SELECT count(*) AS n FROM events"
        " WHERE correlation_uuid IS NULL AND correlation_id IS NULL AND stored_at IS NULL",
    )
    assert row["n"] == 2  # nothing of the trace in the event rows themselves
    conn = await asyncpg.connect(database_migrated)
    try:
        stored = await storage.fetch_event(conn, events[0]["eventId"])
    finally:
        await conn.close()
    assert stored is not None and stored["correlation_id"] == cid


def _iso_time_fields(event: dict[str, Any]) -> list[bytes]:
    """A line's fields as gateways before microseconds encoded them: the event time in ISO."""
    fields = storage.copy_row(event_row(event), dump_json(event)).rstrip(b"\n").split(b"\t")
    fields[1] = event_row(event).event_time.isoformat().encode()
    return fields


def _keyless_fields(event: dict[str, Any]) -> list[bytes]:
    """A line's fields as gateways before migration 0016 encoded them: without the key."""
    return _iso_time_fields(event)[:-1]


def _legacy_line(event: dict[str, Any], correlation_id: str) -> bytes:
    """A line as gateways before migration 0013 encoded it: `ad_id` and `action_time` among
    the typed columns, the correlation id and received time after the payload."""
    fields = _keyless_fields(event)
    engagement = event["data"]["engagement"]
    fields.insert(8, engagement.get("adId", "").encode())
    fields.insert(15, engagement.get("actionTime", "").encode())
    return b"\t".join([*fields, correlation_id.encode(), RECEIVED.encode()]) + b"\n"


@pytest.mark.parametrize("layout", ["before 0013", "before 0016", "ISO event time"])
async def test_lines_of_earlier_layouts_are_stored_as_they_were_meant(
    writer: Writer, database_migrated: str, layout: str
) -> None:
    g = gen(6)
    events = [g.facebook("ad.click"), g.facebook("video.view"), g.tiktok("purchase")]
    # An id with a tab, escaped in the line: its key is the key of the id, not of the escape.
    events[0]["eventId"] = "fb-tab\there"
    if layout == "before 0013":
        body = b"".join(_legacy_line(e, "old-gw") for e in events)
    elif layout == "before 0016":
        body = b"".join(b"\t".join(_keyless_fields(e)) + b"\n" for e in events)
    else:
        body = b"".join(b"\t".join(_iso_time_fields(e)) + b"\n" for e in events)
    message = delivery("facebook", body, "m-old", stream_seq=9, correlation_id="old-gw")
    assert (await writer.write([message])).stored == 3
    rows = await fetch_rows(
        database_migrated,
        "SELECT event_id, event_time, user_id, device, campaign_id, payload, payload_json,"
        " correlation_id, received_at, stream_seq, event_key::text AS key FROM event_traces"
        " ORDER BY event_id",
    )
    for event, row in zip(sorted(events, key=lambda e: e["eventId"]), rows, strict=True):
        assert row["event_id"] == event["eventId"]
        assert row["key"].replace("-", "") == storage.event_key(event["eventId"])
        assert orjson.loads(storage.event_json(row)) == event
        assert row["event_time"] == event_row(event).event_time
        assert row["device"] == event_row(event).device
        assert row["campaign_id"] == event_row(event).campaign_id
        assert (row["correlation_id"], row["stream_seq"]) == ("old-gw", 9)
        assert row["received_at"] == datetime.fromisoformat(RECEIVED)


async def test_an_event_already_stored_by_an_earlier_write_is_a_duplicate(
    writer: Writer, database_migrated: str
) -> None:
    g = gen(3)
    first = [g.event() for _ in range(10)]
    second = first[5:] + [g.event() for _ in range(4)]
    r1 = await writer.write([delivery("facebook", event_lines(first), "m-a", stream_seq=1)])
    r2 = await writer.write([delivery("facebook", event_lines(second), "m-b", stream_seq=2)])
    assert (r1.stored, r1.duplicates) == (10, 0)
    assert (r2.stored, r2.duplicates) == (4, 5)
    assert len(await event_ids(database_migrated)) == 14


async def test_a_redelivered_message_changes_nothing(
    writer: Writer, database_migrated: str
) -> None:
    g = gen(4)
    deliveries = [
        delivery("facebook", event_lines([g.facebook() for _ in range(12)]), "m-fb", stream_seq=10),
        delivery("tiktok", event_lines([g.tiktok() for _ in range(8)]), "m-tt", stream_seq=11),
        delivery(
            "rejected",
            lines([rejected_line(0, g.corrupt(g.tiktok(), "negative_watchTime"))]),
            "m-rej",
            stream_seq=12,
        ),
        delivery("tiktok", b"{not json\n", "m-bad", stream_seq=13),
    ]
    first = await writer.write(deliveries)
    assert (first.stored, first.duplicates, first.rejected) == (20, 0, 2)
    before = await snapshot(database_migrated)
    again = await writer.write([replace(d, num_delivered=2) for d in deliveries])
    assert (again.stored, again.duplicates) == (0, 20)
    assert await snapshot(database_migrated) == before


# -- lines PostgreSQL cannot load ----------------------------------------------------------


def _bad_timestamp_line() -> bytes:
    line = event_lines([gen(14).facebook("ad.view")])
    fields = line.split(b"\t")
    fields[1] = b"not-a-time"
    return b"\t".join(fields)


@pytest.mark.parametrize(
    "bad_line",
    [b"not a copy line\n", b"too\tfew\tcolumns\n", _bad_timestamp_line()],
    ids=["not-copy", "few-columns", "bad-timestamp"],
)
async def test_a_line_postgresql_cannot_load_is_rejected_and_the_rest_stored(
    writer: Writer, database_migrated: str, bad_line: bytes
) -> None:
    g = gen(5)
    good = [g.facebook() for _ in range(4)]
    body = event_lines(good[:2]) + bad_line + event_lines(good[2:])
    result = await writer.write([delivery("facebook", body, "m-u", correlation_id="c-u")])
    assert (result.stored, result.duplicates, result.rejected) == (4, 0, 1)
    assert await event_ids(database_migrated) == {e["eventId"] for e in good}
    (row,) = await rejected_rows(database_migrated)
    assert row["reason"].startswith("storage")
    assert row["payload"] is None
    assert row["source"] == "facebook"
    assert row["correlation_id"] == "c-u"
    if storage.is_copy_line(bad_line):
        # A whole event line keeps the event's JSON and is keyed by its eventId.
        assert row["event_id"] == storage.copy_event_id(bad_line)
        assert row["dedup_key"] == f"poison:{row['event_id']}"
        assert orjson.loads(row["raw"])["eventId"] == row["event_id"]
    else:
        assert row["raw"] == bad_line.decode().rstrip("\n")
        assert row["dedup_key"] == "m-u:2"


async def test_an_undecodable_rejected_lane_line_is_kept(
    writer: Writer, database_migrated: str
) -> None:
    good = rejected_line(0, gen(6).corrupt(gen(6).facebook(), "invalid_timestamp"))
    body = lines([good]) + b"\n" + b'{"index": 1, "eventId": null}' + b"\n" + b"garbage"
    result = await writer.write([delivery("rejected", body, "m-r")])
    assert result.rejected == 3
    rows = await rejected_rows(database_migrated)
    assert [r["dedup_key"] for r in rows] == ["m-r:0", "m-r:1", "m-r:2"]
    assert rows[0]["reason"].startswith("timestamp")
    assert rows[1]["reason"].startswith("undecodable")
    assert rows[2]["reason"].startswith("undecodable") and rows[2]["raw"] == "garbage"


# -- poison isolation ----------------------------------------------------------------------


def _poisoned(where: str) -> dict[str, Any]:
    event = gen(7).facebook("ad.click")
    if where == "extra-field":
        event["note"] = "before\x00after"
    elif where == "nested-extra":
        event["data"]["engagement"]["tags"] = [{"k": "\x00"}]
    elif where == "typed-column":
        event["data"]["user"]["location"]["city"] = "Kra\x00ków"
    else:  # pragma: no cover
        raise AssertionError(where)
    return event


async def test_a_nul_in_a_typed_column_is_isolated(writer: Writer, database_migrated: str) -> None:
    g = gen(8)
    facebook = [g.facebook() for _ in range(10)]
    poison = _poisoned("typed-column")
    facebook.insert(6, poison)
    tiktok = [g.tiktok() for _ in range(7)]
    result = await writer.write(
        [
            delivery("tiktok", event_lines(tiktok), "m-tt", stream_seq=1),
            delivery("facebook", event_lines(facebook), "m-fb", stream_seq=2),
            delivery("rejected", lines([rejected_line(4, {"x": 1})]), "m-rej", stream_seq=3),
        ]
    )
    assert (result.stored, result.duplicates, result.rejected) == (17, 0, 2)
    expected = {e["eventId"] for e in facebook + tiktok} - {poison["eventId"]}
    assert await event_ids(database_migrated) == expected
    rows = {r["event_id"]: r for r in await rejected_rows(database_migrated)}
    row = rows[poison["eventId"]]
    assert row["payload"] is None
    assert row["raw"] is not None and orjson.loads(row["raw"]) == poison
    assert row["source"] == "facebook"
    assert row["reason"].startswith("storage")
    assert row["correlation_id"] == "corr-w"
    # The validation rejection of the same write is stored too.
    assert sum(1 for r in rows.values() if r["dedup_key"] == "m-rej:0") == 1


@pytest.mark.parametrize("where", ["extra-field", "nested-extra"])
async def test_a_nul_escape_in_the_payload_is_stored_as_sent(
    writer: Writer, database_migrated: str, where: str
) -> None:
    # The payload is kept as bytes (compressed), so an escaped NUL that `jsonb` refused is
    # stored, and read back, like any other character.
    poison = _poisoned(where)
    result = await writer.write([delivery("facebook", event_lines([poison]), "m-nul")])
    assert (result.stored, result.rejected) == (1, 0)
    (row,) = await fetch_rows(
        database_migrated, "SELECT event_id, user_id, event_time, payload, payload_json FROM events"
    )
    assert orjson.loads(storage.event_json(row)) == poison


async def test_a_poison_event_redelivered_is_not_rejected_twice(
    writer: Writer, database_migrated: str
) -> None:
    g = gen(9)
    events = [g.facebook() for _ in range(3)] + [_poisoned("typed-column")]
    message = delivery("facebook", event_lines(events), "m-p")
    await writer.write([message])
    before = await snapshot(database_migrated)
    await writer.write([replace(message, num_delivered=2)])
    assert await snapshot(database_migrated) == before
    assert len(before[0]) == 3 and len(before[1]) == 1


async def test_a_rejected_payload_postgresql_refuses_is_kept_as_raw_text(
    writer: Writer, database_migrated: str
) -> None:
    g = gen(10)
    refused = g.corrupt(g.facebook(), "invalid_gender")
    refused["note"] = "nul\x00here"
    fine = g.corrupt(g.tiktok(), "invalid_followers")
    result = await writer.write(
        [
            delivery("rejected", lines([rejected_line(0, refused), rejected_line(1, fine)]), "m-r"),
            delivery("tiktok", event_lines([g.tiktok()]), "m-t", stream_seq=2),
        ]
    )
    assert (result.stored, result.rejected) == (1, 2)
    rows = await rejected_rows(database_migrated)
    assert [r["dedup_key"] for r in rows] == ["m-r:0", "m-r:1"]
    assert rows[0]["payload"] is None
    assert rows[0]["raw"] is not None and refused["eventId"] in rows[0]["raw"]
    assert rows[0]["reason"].startswith("data.user.gender")
    assert orjson.loads(rows[1]["payload"]) == fine


async def test_an_integer_beyond_64_bits_in_an_extra_field_is_stored_exactly(
    writer: Writer, database_migrated: str
) -> None:
    event = gen(11).facebook("ad.view")
    event["bigCounter"] = 123456789012345678901234567890
    result = await writer.write([delivery("facebook", event_lines([event]), "m-big")])
    assert (result.stored, result.rejected) == (1, 0)
    (row,) = await fetch_rows(
        database_migrated, "SELECT event_id, user_id, event_time, payload, payload_json FROM events"
    )
    assert b"123456789012345678901234567890" in storage.event_json(row)


# -- dead letters --------------------------------------------------------------------------


async def test_dead_letter_rejects_every_line(writer: Writer, database_migrated: str) -> None:
    g = gen(12)
    events = [g.facebook() for _ in range(5)]
    body = event_lines(events[:3]) + b"not json\n" + event_lines(events[3:])
    message = delivery("facebook", body, "m-dead", num_delivered=10, correlation_id="c-dead")
    result = await writer.dead_letter(message, "PostgreSQL refused the batch")
    assert (result.stored, result.rejected) == (0, 6)
    rows = await rejected_rows(database_migrated)
    assert len(rows) == 6
    assert all(
        r["reason"].startswith("undeliverable after 10 attempts: PostgreSQL refused the batch")
        for r in rows
    )
    assert {r["raw"] for r in rows} == {orjson.dumps(e).decode() for e in events} | {"not json"}
    assert {r["correlation_id"] for r in rows} == {"c-dead"}
    assert await event_ids(database_migrated) == set()
    # Dead-lettering the same message again adds nothing.
    await writer.dead_letter(message, "PostgreSQL refused the batch")
    assert len(await rejected_rows(database_migrated)) == 6


async def test_dead_letter_of_a_line_postgresql_refuses(
    writer: Writer, database_migrated: str
) -> None:
    message = delivery("tiktok", event_lines([_poisoned("typed-column")]), "m-d2", num_delivered=3)
    result = await writer.dead_letter(message, "boom")
    assert result.rejected == 1
    (row,) = await rejected_rows(database_migrated)
    assert row["reason"].startswith("undeliverable after 3 attempts")
    assert row["raw"] is not None


# -- health and error classes --------------------------------------------------------------


async def test_ping_is_true_with_a_database(writer: Writer) -> None:
    assert await writer.ping() is True


async def test_ping_is_false_without_a_database() -> None:
    w = Writer(make_settings(), UNREACHABLE, 1)
    try:
        assert await w.ping() is False
    finally:
        await w.close()


async def test_write_without_a_database_raises_storage_unavailable() -> None:
    w = Writer(make_settings(), UNREACHABLE, 2)
    try:
        with pytest.raises(StorageUnavailable):
            await w.write([delivery("facebook", event_lines([gen(13).facebook()]), "m-x")])
    finally:
        await w.close()


async def _admin(database: str, sql: str) -> None:
    # A session of its own settings: the database's own default may be read-only.
    conn = await asyncpg.connect(database, server_settings={"default_transaction_read_only": "off"})
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def test_a_read_only_database_is_an_outage_never_poison(database_migrated: str) -> None:
    """A failover's read-only spell (SPEC §5): no valid event may land in the rejected store,
    however many deliveries it lasts; once writable again the same deliveries are stored."""
    name = database_migrated.rsplit("/", 1)[1]
    g = gen(31)
    events = [g.facebook() for _ in range(3)]
    body = event_lines(events)
    await _admin(
        database_migrated, f'ALTER DATABASE "{name}" SET default_transaction_read_only = on'
    )
    w = Writer(make_settings(), database_migrated, 5)  # its sessions start read-only
    try:
        assert await w.ping() is False
        for attempt in range(1, 13):  # beyond max_deliver (10)
            with pytest.raises(StorageUnavailable):
                await w.write([delivery("facebook", body, "m-ro", num_delivered=attempt)])
        await w.close()
        await _admin(
            database_migrated, f'ALTER DATABASE "{name}" SET default_transaction_read_only = off'
        )
        assert await w.ping() is True  # new sessions are writable again
        result = await w.write([delivery("facebook", body, "m-ro", num_delivered=13)])
        assert (result.stored, result.rejected) == (3, 0)
    finally:
        await w.close()
    assert await event_ids(database_migrated) == {e["eventId"] for e in events}
    assert await rejected_rows(database_migrated) == []


async def test_a_revoked_insert_privilege_is_an_outage_never_poison(
    database_migrated: str,
) -> None:
    role = f"writer_{database_migrated.rsplit('/', 1)[1]}"[:63]
    await _admin(
        database_migrated,
        f'CREATE ROLE "{role}" LOGIN; GRANT ALL ON ALL TABLES IN SCHEMA public TO "{role}";'
        f' GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO "{role}";'
        f' GRANT CREATE, USAGE ON SCHEMA public TO "{role}"',
    )
    as_role = database_migrated.replace("://postgres@", f"://{role}@", 1)
    g = gen(32)
    events = [g.tiktok() for _ in range(3)]
    body = event_lines(events)
    w = Writer(make_settings(), as_role, 6)
    try:
        assert await w.ping() is True
        await _admin(database_migrated, f'REVOKE INSERT ON events FROM "{role}"')
        assert await w.ping() is False
        with pytest.raises(StorageUnavailable):
            await w.write([delivery("tiktok", body, "m-priv", num_delivered=11)])
        await _admin(database_migrated, f'GRANT INSERT ON events TO "{role}"')
        assert await w.ping() is True
        result = await w.write([delivery("tiktok", body, "m-priv", num_delivered=12)])
        assert (result.stored, result.rejected) == (3, 0)
    finally:
        await w.close()
        await _admin(
            database_migrated,
            f'REASSIGN OWNED BY "{role}" TO postgres; DROP OWNED BY "{role}"; DROP ROLE "{role}"',
        )
    assert await event_ids(database_migrated) == {e["eventId"] for e in events}
    assert await rejected_rows(database_migrated) == []


async def test_is_transient_on_real_errors(database_migrated: str) -> None:
    conn = await asyncpg.connect(database_migrated)
    other = await asyncpg.connect(database_migrated)
    try:
        with pytest.raises(asyncpg.DataError) as data_error:
            await conn.execute("""SELECT '{"a": "\\u0000"}'::jsonb""")
        assert not is_transient(data_error.value)
        with pytest.raises(asyncpg.PostgresError) as unique:
            await conn.execute("INSERT INTO schema_migrations (version, name) VALUES (1, 'again')")
        assert not is_transient(unique.value)
        # A connection lost mid-query (the server ends the backend while it works).
        pid = conn.get_server_pid()
        busy = asyncio.ensure_future(conn.execute("SELECT pg_sleep(60)"))
        for _ in range(500):
            state = await other.fetchval("SELECT state FROM pg_stat_activity WHERE pid = $1", pid)
            if state == "active":
                break
            await asyncio.sleep(0.01)
        assert await other.fetchval("SELECT pg_terminate_backend($1)", pid)
        with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, OSError)) as lost:
            await busy
        assert is_transient(lost.value)
    finally:
        await conn.close()
        await other.close()
    with pytest.raises(OSError) as refused:
        await asyncpg.connect(UNREACHABLE)
    assert is_transient(refused.value)


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (ConnectionRefusedError(), True),
        (ConnectionResetError(), True),
        (TimeoutError(), True),
        (asyncpg.exceptions.ConnectionDoesNotExistError("gone"), True),
        (asyncpg.exceptions.TooManyConnectionsError("too many"), True),
        (asyncpg.exceptions.AdminShutdownError("shutdown"), True),
        (asyncpg.exceptions.SerializationError("retry"), True),
        (asyncpg.exceptions.DeadlockDetectedError("deadlock"), True),
        (asyncpg.exceptions.DiskFullError("disk"), True),
        (StorageUnavailable("down"), True),
        # Errors every statement would meet: an outage, whatever the data.
        (asyncpg.exceptions.ReadOnlySQLTransactionError("read-only"), True),
        (asyncpg.exceptions.InsufficientPrivilegeError("permission denied"), True),
        (asyncpg.exceptions.UndefinedTableError("no events table"), True),
        (asyncpg.exceptions.FeatureNotSupportedError("a class not known here"), True),
        (asyncpg.exceptions.UntranslatableCharacterError("\\u0000"), False),
        (asyncpg.exceptions.InvalidTextRepresentationError("bad"), False),
        (asyncpg.exceptions.NumericValueOutOfRangeError("big"), False),
        (asyncpg.exceptions.UniqueViolationError("dup"), False),
        (asyncpg.exceptions.NotNullViolationError("null"), False),
        (ValueError("bad value"), False),
        (KeyError("eventId"), False),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else str(value),
)
def test_is_transient_classifies(error: BaseException, transient: bool) -> None:
    assert is_transient(error) is transient
