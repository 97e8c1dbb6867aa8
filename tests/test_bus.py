"""Unit tests of the bus layout and message encoding (SPEC §5); no NATS needed."""

from __future__ import annotations

import itertools
import json
import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from nats.js.api import AckPolicy, DiscardPolicy, RetentionPolicy, StorageType

from adfunnel import storage
from adfunnel.bus import (
    HEADER_CORRELATION,
    HEADER_COUNT,
    HEADER_MSG_ID,
    HEADER_RECEIVED_AT,
    LANES,
    Chunk,
    consumer_config,
    decode_lines,
    encode_batch,
    lane_filter,
    stream_config,
)
from adfunnel.ingest import triage
from adfunnel.schema import Accepted, Rejected, dump_json, validate_event
from adfunnel.settings import Settings
from adfunnel.tools.generator import Generator

NOW = datetime(2026, 11, 27, 10, 0, 0, 123000, tzinfo=UTC)
PREFIX = "acme.ads"


def make_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "nats_url": "nats://127.0.0.1:4222",
        "database_url": "postgresql://localhost/x",
        "nats_stream": "ADS_TEST",
        "nats_subject_prefix": PREFIX,
        "events_per_message": 1_000,
        "max_message_bytes": 768 * 1024,
        "stream_max_bytes": 123 * 1024 * 1024,
        "duplicate_window_s": 90.0,
        "max_deliver": 7,
        "outage_max_deliver": 500,
        "ack_wait_s": 45.0,
    }
    values.update(overrides)
    return Settings(**values)


def gen(seed: int = 0) -> Generator:
    return Generator(seed, clock=lambda: NOW)


def accepted_of(events: list[dict[str, Any]]) -> list[Accepted]:
    out = []
    for event in events:
        result = validate_event(event)
        assert isinstance(result, Accepted), result
        out.append(result)
    return out


def encode(
    settings: Settings,
    accepted: list[Accepted],
    rejected: list[tuple[int, Rejected]] | None = None,
    *,
    correlation_id: str = "corr-1",
    received_at: datetime = NOW,
) -> list[Chunk]:
    return encode_batch(
        settings,
        accepted,
        rejected or [],
        correlation_id=correlation_id,
        received_at=received_at,
    )


def lines_of(chunk: Chunk) -> list[Any]:
    """The JSON of every event (or rejection) a message carries."""
    if chunk.subject == f"{PREFIX}.rejected":
        return [orjson.loads(line) for line in decode_lines(chunk.body)]
    return [json.loads(storage.copy_payload_text(line)) for line in decode_lines(chunk.body)]


def event_chunks(chunks: list[Chunk]) -> list[Chunk]:
    return [c for c in chunks if c.subject != f"{PREFIX}.rejected"]


# -- subjects and lanes --------------------------------------------------------------------


def test_lane_filters() -> None:
    settings = make_settings()
    assert lane_filter(settings, "facebook") == f"{PREFIX}.facebook.>"
    assert lane_filter(settings, "tiktok") == f"{PREFIX}.tiktok.>"
    assert lane_filter(settings, "rejected") == f"{PREFIX}.rejected"
    assert LANES == ("facebook", "tiktok", "rejected")


def test_lane_filters_follow_the_prefix() -> None:
    settings = make_settings(nats_subject_prefix="other")
    assert lane_filter(settings, "facebook") == "other.facebook.>"
    assert lane_filter(settings, "rejected") == "other.rejected"


def test_events_are_grouped_by_subject() -> None:
    events = gen(1).batch(400, out_of_order_share=0.2)
    chunks = encode(make_settings(), accepted_of(events))
    expected = Counter(
        f"{PREFIX}.{e['source']}.{e['funnelStage']}.{e['eventType']}" for e in events
    )
    by_subject: Counter[str] = Counter()
    for chunk in chunks:
        for line in lines_of(chunk):
            assert chunk.subject == (
                f"{PREFIX}.{line['source']}.{line['funnelStage']}.{line['eventType']}"
            )
            by_subject[chunk.subject] += 1
    assert by_subject == expected
    # One message per subject when nothing needs cutting; no empty rejected message.
    assert sorted(c.subject for c in chunks) == sorted(expected)
    assert len(expected) == 14


def test_every_subject_is_under_its_lane_filter() -> None:
    settings = make_settings()
    chunks = encode(settings, accepted_of(gen(2).batch(300)))
    for chunk in chunks:
        source = chunk.subject.split(".")[2]
        assert chunk.subject.startswith(lane_filter(settings, source).removesuffix(">"))


def test_messages_are_cut_at_events_per_message() -> None:
    g = gen(3)
    events = [g.facebook("ad.view") for _ in range(10)]
    chunks = encode(make_settings(events_per_message=3), accepted_of(events))
    assert [c.count for c in chunks] == [3, 3, 3, 1]
    assert [len(decode_lines(c.body)) for c in chunks] == [3, 3, 3, 1]
    assert [int(c.headers[HEADER_COUNT]) for c in chunks] == [3, 3, 3, 1]
    ids = [line["eventId"] for c in chunks for line in lines_of(c)]
    assert ids == [e["eventId"] for e in events]


def test_messages_are_cut_at_max_message_bytes() -> None:
    g = gen(4)
    events = [g.tiktok("purchase") for _ in range(50)]
    (whole,) = encode(make_settings(), accepted_of(events))
    line_sizes = [len(line) for line in decode_lines(whole.body)]
    limit = max(line_sizes) * 4
    chunks = encode(make_settings(max_message_bytes=limit), accepted_of(events))
    assert len(chunks) > 1
    for chunk in chunks:
        assert len(chunk.body) <= limit
        assert 1 <= chunk.count <= 4
    ids = [line["eventId"] for c in chunks for line in lines_of(c)]
    assert ids == [e["eventId"] for e in events]
    # Cut only when the next event would not fit: a chunk plus the next line exceeds the limit.
    for chunk, following in itertools.pairwise(chunks):
        next_line = decode_lines(following.body)[0]
        assert len(chunk.body) + len(next_line) + 1 > limit


def test_an_event_larger_than_the_limit_travels_alone() -> None:
    g = gen(5)
    events = [g.facebook("comment") for _ in range(3)]
    # Random hex: payloads travel compressed, and this one stays large.
    events[1]["blob"] = random.Random(5).randbytes(3000).hex()
    chunks = encode(make_settings(max_message_bytes=3000), accepted_of(events))
    assert [c.count for c in chunks] == [1, 1, 1]
    assert lines_of(chunks[1])[0]["eventId"] == events[1]["eventId"]


@pytest.mark.parametrize(
    ("per_message", "max_bytes"), [(1, 10**6), (7, 10**6), (1000, 4000), (13, 9000)]
)
def test_every_accepted_event_appears_exactly_once(per_message: int, max_bytes: int) -> None:
    events = gen(6).batch(500, duplicate_share=0.1, invalid_share=0.05, out_of_order_share=0.1)
    sorted_out = triage(events)
    settings = make_settings(events_per_message=per_message, max_message_bytes=max_bytes)
    chunks = encode(settings, sorted_out.accepted, sorted_out.rejected)
    carried = Counter(line["eventId"] for chunk in event_chunks(chunks) for line in lines_of(chunk))
    assert carried == Counter(a.event_id for a in sorted_out.accepted)
    assert set(carried.values()) == {1}
    assert sum(c.count for c in event_chunks(chunks)) == len(sorted_out.accepted)
    for chunk in chunks:
        assert chunk.count <= per_message
        assert chunk.count == len(decode_lines(chunk.body)) == int(chunk.headers[HEADER_COUNT])
        # Every line ends where the writer appends the stream sequence.
        assert chunk.body.endswith(b"\n") and chunk.body.count(b"\n") == chunk.count


def test_the_payload_is_carried_unchanged_with_extra_fields() -> None:
    event = gen(7).tiktok("share")
    event["extra"] = {"nested": [1, "two", None, 3.5], "ünïcode": "Kraków"}
    (chunk,) = encode(make_settings(), accepted_of([event]))
    assert lines_of(chunk) == [event]


# -- message ids ---------------------------------------------------------------------------


def test_the_same_input_gives_the_same_message_ids() -> None:
    events = gen(8).batch(300)
    settings = make_settings(events_per_message=40)
    first = encode(settings, accepted_of(events))
    # A retry carries another correlation id and arrives later: still the same messages.
    again = encode(
        settings,
        accepted_of(json.loads(json.dumps(events))),
        correlation_id="corr-2",
        received_at=NOW + timedelta(seconds=5),
    )
    assert [c.headers[HEADER_MSG_ID] for c in first] == [c.headers[HEADER_MSG_ID] for c in again]
    # The same events; only the request's own columns (correlation id, receipt) differ.
    assert [lines_of(c) for c in first] == [lines_of(c) for c in again]


def test_different_inputs_give_different_message_ids() -> None:
    settings = make_settings(events_per_message=25)
    first = encode(settings, accepted_of(gen(9).batch(300)))
    second = encode(settings, accepted_of(gen(10).batch(300)))
    ids = [c.headers[HEADER_MSG_ID] for c in first + second]
    assert len(ids) == len(set(ids))


def test_one_more_event_changes_the_message_id() -> None:
    g = gen(11)
    events = [g.facebook("ad.view") for _ in range(5)]
    settings = make_settings()
    (five,) = encode(settings, accepted_of(events))
    (four,) = encode(settings, accepted_of(events[:4]))
    assert five.headers[HEADER_MSG_ID] != four.headers[HEADER_MSG_ID]


def test_the_message_id_is_a_hex_digest() -> None:
    (chunk,) = encode(make_settings(), accepted_of([gen(12).facebook("ad.view")]))
    msg_id = chunk.headers[HEADER_MSG_ID]
    assert len(msg_id) == 40
    int(msg_id, 16)


def test_ambiguous_event_id_lists_do_not_share_a_message_id() -> None:
    g = gen(13)
    a, b, joined = g.facebook("ad.view"), g.facebook("ad.view"), g.facebook("ad.view")
    a["eventId"], b["eventId"], joined["eventId"] = "fb-a", "fb-b", "fb-a\nfb-b"
    settings = make_settings()
    (pair,) = encode(settings, accepted_of([a, b]))
    (single,) = encode(settings, accepted_of([joined]))
    assert pair.headers[HEADER_MSG_ID] != single.headers[HEADER_MSG_ID]


# -- headers -------------------------------------------------------------------------------


def test_headers_carry_correlation_id_received_at_and_count() -> None:
    received = datetime(2026, 11, 27, 9, 59, 58, 5000, tzinfo=UTC)
    events = gen(14).batch(120)
    sorted_out = triage(events)
    chunks = encode(
        make_settings(events_per_message=10),
        sorted_out.accepted,
        [(3, Rejected(None, "eventId: Field required", {"x": 1}))],
        correlation_id="req-77",
        received_at=received,
    )
    for chunk in chunks:
        assert set(chunk.headers) == {
            HEADER_CORRELATION,
            HEADER_RECEIVED_AT,
            HEADER_MSG_ID,
            HEADER_COUNT,
        }
        assert chunk.headers[HEADER_CORRELATION] == "req-77"
        assert datetime.fromisoformat(chunk.headers[HEADER_RECEIVED_AT]) == received
        assert int(chunk.headers[HEADER_COUNT]) == chunk.count


# -- rejected events -----------------------------------------------------------------------


def test_rejected_events_go_to_the_rejected_subject() -> None:
    g = gen(15)
    events = [g.event() for _ in range(6)]
    events[1] = g.corrupt(events[1], "invalid_timestamp")
    events[4] = g.corrupt(events[4], "missing_eventId")
    sorted_out = triage(events)
    chunks = encode(make_settings(), sorted_out.accepted, sorted_out.rejected)
    rejected_chunks = [c for c in chunks if c.subject == f"{PREFIX}.rejected"]
    assert len(rejected_chunks) == 1
    lines = lines_of(rejected_chunks[0])
    assert [set(line) for line in lines] == [{"index", "eventId", "reason", "payload"}] * 2
    assert [line["index"] for line in lines] == [1, 4]
    assert [line["eventId"] for line in lines] == [events[1]["eventId"], None]
    assert lines[0]["reason"].startswith("timestamp")
    assert lines[1]["reason"].startswith("eventId")
    assert [line["payload"] for line in lines] == [events[1], events[4]]
    assert sum(c.count for c in event_chunks(chunks)) == 4


def test_rejected_events_are_cut_like_the_others() -> None:
    rejected = [(i, Rejected(f"fb-{i}", "source: 'x' is not one of", {"i": i})) for i in range(7)]
    chunks = encode(make_settings(events_per_message=3), [], rejected)
    assert [c.subject for c in chunks] == [f"{PREFIX}.rejected"] * 3
    assert [c.count for c in chunks] == [3, 3, 1]
    assert [line["index"] for c in chunks for line in lines_of(c)] == list(range(7))


def test_rejected_messages_get_fresh_ids_every_time() -> None:
    rejected = [(0, Rejected("fb-1", "timestamp: bad", {"eventId": "fb-1"}))]
    settings = make_settings()
    ids = [encode(settings, [], rejected)[0].headers[HEADER_MSG_ID] for _ in range(5)]
    assert len(set(ids)) == 5


def test_nothing_to_send_is_no_message() -> None:
    assert encode(make_settings(), [], []) == []


# -- dump_json -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        2**64,
        -(2**63) - 1,
        123456789012345678901234567890,
        {"n": 10**40, "list": [1, 2**70], "s": "Kraków"},
    ],
)
def test_dump_json_keeps_integers_beyond_64_bits(value: Any) -> None:
    text = dump_json(value)
    assert isinstance(text, bytes)
    assert json.loads(text) == value


def test_dump_json_is_compact_json() -> None:
    value = {"a": [1, 2, {"b": None}], "c": "ü"}
    assert dump_json(value) == orjson.dumps(value)
    assert json.loads(dump_json({"big": 2**65, "c": "ü"})) == {"big": 2**65, "c": "ü"}
    assert dump_json({"big": 2**65, "list": [1, 2]}) == b'{"big":36893488147419103232,"list":[1,2]}'
    # Non-ASCII text stays UTF-8 on the stdlib path too, as orjson writes it.
    assert dump_json({"big": 2**65, "city": "Kraków"}).endswith('"city":"Kraków"}'.encode())


def test_an_event_with_a_big_integer_extra_field_is_encoded_exactly() -> None:
    event = gen(16).facebook("ad.view")
    event["extraCounter"] = 2**70
    (chunk,) = encode(make_settings(), accepted_of([event]))
    (line,) = decode_lines(chunk.body)
    assert str(2**70) in storage.copy_payload_text(line)
    assert lines_of(chunk) == [event]


# -- stream and consumer configuration -----------------------------------------------------


def test_stream_config_carries_the_settings() -> None:
    settings = make_settings()
    config = stream_config(settings)
    assert config.name == "ADS_TEST"
    assert config.subjects == [f"{PREFIX}.>"]
    assert config.retention == RetentionPolicy.WORK_QUEUE
    assert config.storage == StorageType.FILE
    assert config.discard == DiscardPolicy.NEW
    assert config.max_bytes == 123 * 1024 * 1024
    assert config.duplicate_window == 90.0
    assert config.max_msg_size is not None
    assert config.max_msg_size >= settings.max_message_bytes


def test_every_lane_and_subject_is_inside_the_stream() -> None:
    settings = make_settings()
    (stream_subject,) = stream_config(settings).subjects or []
    root = stream_subject.removesuffix(">")
    for lane in LANES:
        assert lane_filter(settings, lane).startswith(root)


@pytest.mark.parametrize("lane", LANES)
def test_consumer_config_carries_the_settings(lane: str) -> None:
    settings = make_settings()
    config = consumer_config(settings, lane)
    assert config.durable_name == f"ADS_TEST-{lane}"
    assert config.durable_name == settings.durable_name(lane)
    assert config.filter_subject == lane_filter(settings, lane)
    assert config.ack_policy == AckPolicy.EXPLICIT
    # JetStream's bound is the outage one; the poison bound (max_deliver) is the consumers'.
    assert config.max_deliver == 500
    assert config.ack_wait == 45.0


def test_jetstream_never_gives_up_before_the_poison_bound() -> None:
    settings = make_settings(max_deliver=40, outage_max_deliver=20)
    assert consumer_config(settings, "facebook").max_deliver == 40


def test_lane_filters_do_not_overlap() -> None:
    # A work-queue stream refuses consumers with overlapping filters.
    settings = make_settings()
    filters = [lane_filter(settings, lane) for lane in LANES]
    assert filters == [consumer_config(settings, lane).filter_subject for lane in LANES]
    assert len(set(filters)) == len(LANES)
    chunks = encode(
        settings,
        accepted_of(gen(17).batch(200)),
        [(0, Rejected(None, "event: must be a JSON object, not int", 1))],
    )
    for chunk in chunks:
        matching = [f for f in filters if _matches(f, chunk.subject)]
        assert len(matching) == 1, (chunk.subject, matching)


def _matches(subject_filter: str, subject: str) -> bool:
    """NATS subject matching for the tokens used here (`>` as the last token)."""
    wanted, tokens = subject_filter.split("."), subject.split(".")
    if wanted[-1] == ">":
        return len(tokens) > len(wanted) - 1 and tokens[: len(wanted) - 1] == wanted[:-1]
    return wanted == tokens
