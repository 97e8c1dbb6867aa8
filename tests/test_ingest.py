"""Unit tests of the gateway's request contract before the bus (SPEC §4 gateway).

`parse_body`, `triage`, `verify_signature` and `error_entries` are pure functions: no Ray,
no servers, no HTTP.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any

import orjson
import pytest

from adfunnel.bus import encode_batch
from adfunnel.errors import BadSignature, InvalidBody, PayloadTooLarge
from adfunnel.ingest import (
    error_entries,
    may_be_unstorable,
    parse_body,
    triage,
    verify_signature,
)
from adfunnel.schema import Accepted, Rejected
from adfunnel.settings import Settings
from adfunnel.tools.generator import Generator

NOW = datetime(2026, 11, 27, 10, 0, 0, 123000, tzinfo=UTC)


def gen(seed: int = 0) -> Generator:
    return Generator(seed, clock=lambda: NOW)


def body_of(value: Any) -> bytes:
    return json.dumps(value).encode()


def decoded(items: list[Any]) -> list[Any]:
    """`parse_body`'s items as values: each event's bytes decoded (exactly, by the stdlib)."""
    return [json.loads(item) if isinstance(item, bytes) else item for item in items]


def payloads(accepted: list[Accepted]) -> list[Any]:
    return [json.loads(item.payload) for item in accepted]


# -- parse_body ----------------------------------------------------------------------------


def test_an_object_becomes_a_one_item_list() -> None:
    event = gen().facebook("ad.view")
    assert decoded(parse_body(body_of(event), 10)) == [event]


def test_an_array_is_returned_in_order() -> None:
    events = gen().batch(25)
    assert decoded(parse_body(body_of(events), 25)) == events


def test_items_are_each_events_own_bytes() -> None:
    events = gen().batch(3)
    parts = [json.dumps(event, indent=1).encode() for event in events]
    body = b" \n[ " + b" ,\n".join(parts) + b"\t]\r\n"
    assert parse_body(body, 10) == parts
    assert parse_body(b"\n " + parts[0] + b" \n", 10) == [parts[0]]
    sorted_out = triage(parse_body(body, 10))
    assert [item.payload for item in sorted_out.accepted] == parts  # the sender's own bytes


def test_an_empty_array_is_an_empty_list() -> None:
    assert parse_body(b"[]", 10) == []


@pytest.mark.parametrize("body", [b"", b"   ", b"\n\t\r\n"], ids=["empty", "spaces", "newlines"])
def test_an_empty_body_is_invalid(body: bytes) -> None:
    with pytest.raises(InvalidBody, match="empty"):
        parse_body(body, 10)


@pytest.mark.parametrize(
    "body",
    [
        b"{",
        b"[{}",
        b"not json",
        b'{"eventId": "fb-1",}',
        b"[1, 2,]",
        b"{'eventId': 'fb-1'}",
        b'{"a": 1} {"b": 2}',
        b"\xff\xfe\x00[",
        b'{"a": "\xff"}',
    ],
    ids=[
        "unclosed-object",
        "unclosed-array",
        "words",
        "trailing-comma",
        "trailing-comma-array",
        "single-quotes",
        "two-documents",
        "binary",
        "invalid-utf8",
    ],
)
def test_a_body_that_is_not_json_is_invalid(body: bytes) -> None:
    with pytest.raises(InvalidBody, match="not valid JSON"):
        parse_body(body, 10)


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        (b"42", "int"),
        (b"-1.5", "float"),
        (b'"an event"', "str"),
        (b"true", "bool"),
        (b"null", "NoneType"),
    ],
)
def test_a_scalar_or_string_at_the_top_level_is_invalid(body: bytes, kind: str) -> None:
    with pytest.raises(InvalidBody) as caught:
        parse_body(body, 10)
    assert caught.value.message.endswith(f"not {kind}")
    assert "object or an array" in caught.value.message


@pytest.mark.parametrize(
    "body",
    [
        b"NaN",
        b"[NaN]",
        b'{"eventId": "fb-1", "x": NaN}',
        b'[{"x": Infinity}]',
        b'[{"x": -Infinity}]',
        b'[{"x": [1, 2, NaN]}]',
        # The stdlib fallback (taken for big integers) must refuse the constants too.
        b'[{"big": 123456789012345678901234567890, "x": NaN}]',
        b'[{"big": 123456789012345678901234567890, "x": Infinity}]',
    ],
)
def test_nan_and_infinity_are_refused(body: bytes) -> None:
    with pytest.raises(InvalidBody):
        parse_body(body, 10)


def test_an_integer_at_the_edge_of_64_bits_is_exact() -> None:
    items = parse_body(b'[{"max": 18446744073709551615, "min": -9223372036854775808}]', 10)
    assert items == [b'{"max": 18446744073709551615, "min": -9223372036854775808}']
    assert decoded(items) == [{"max": 2**64 - 1, "min": -(2**63)}]
    assert all(isinstance(value, int) for value in decoded(items)[0].values())


@pytest.mark.parametrize(
    "value",
    [2**64, 123456789012345678901234567890, -(2**63) - 1, -(10**40)],
    ids=["2**64", "30-digits", "-2**63-1", "-10**40"],
)
def test_an_integer_beyond_64_bits_is_kept_exactly(value: int) -> None:
    event = gen().facebook("ad.view")
    event["extraCounter"] = value
    items = decoded(parse_body(body_of([event]), 10))
    assert items == [event]
    assert type(items[0]["extraCounter"]) is int
    assert items[0]["extraCounter"] == value


def test_an_event_with_a_big_integer_extra_field_is_still_a_valid_event() -> None:
    event = gen().tiktok("like")
    event["extraCounter"] = 123456789012345678901234567890
    sorted_out = triage(parse_body(body_of([event]), 10))
    assert [a.event_id for a in sorted_out.accepted] == [event["eventId"]]
    assert sorted_out.rejected == []
    assert str(event["extraCounter"]).encode() in sorted_out.accepted[0].payload
    assert payloads(sorted_out.accepted) == [event]


def test_a_deeply_nested_body_is_invalid_not_a_crash() -> None:
    with pytest.raises(InvalidBody):
        parse_body(b"[" * 100_000, 10)


@pytest.mark.parametrize(
    "body",
    [
        b'[{"a": "\xff"}]',
        b'[{"eventId": "fb-1"}, {"b": {"c": ["ok", "\xc3\x28"]}}]',
        b'[{"\xed\xa0\x80": 1}]',  # a surrogate, UTF-8 encoded: not UTF-8
    ],
    ids=["array", "nested-extra", "key"],
)
def test_invalid_utf8_anywhere_in_an_array_is_invalid(body: bytes) -> None:
    with pytest.raises(InvalidBody, match="not valid JSON"):
        parse_body(body, 10)


def test_non_ascii_text_is_valid() -> None:
    event = gen().facebook("ad.view")
    event["data"]["user"]["name"] = "Zoë Ørsted 李 😀"
    event["note"] = "naïve"
    body = json.dumps([event], ensure_ascii=False).encode()
    sorted_out = triage(parse_body(body, 10))
    assert payloads(sorted_out.accepted) == [event]


def _at_depth(frames: int, call: Callable[[], Any]) -> Any:
    return call() if frames == 0 else _at_depth(frames - 1, call)


@pytest.mark.parametrize("extra", [b"", b',"n":"\\u0000"', b',"n":"\\ud800"', b',"source":"x"'])
def test_nesting_at_the_limit_is_never_a_crash(extra: bytes) -> None:
    # The deeper the stack, the shallower the JSON Python can decode. An event that only
    # just passed `parse_body` may be too deep to decode when `triage` runs a few frames
    # further down: it must still get an answer there, never raise.
    event = orjson.dumps(gen().tiktok("like"))[:-1]

    def split(depth: int) -> list[Any] | None:
        try:
            return parse_body(
                b"[" + event + b',"deep":' + b"[" * depth + b"]" * depth + extra + b"}]", 10
            )
        except InvalidBody:
            return None

    deepest = max(depth for depth in range(1000) if split(depth) is not None)
    items = split(deepest)
    assert items is not None
    for frames in range(30):
        sorted_out = _at_depth(frames, partial(triage, items))
        assert len(sorted_out.accepted) + len(sorted_out.rejected) == 1


def test_max_events_is_allowed() -> None:
    events = gen().batch(5)
    assert len(parse_body(body_of(events), 5)) == 5


def test_over_max_events_is_payload_too_large_naming_the_counts() -> None:
    events = gen().batch(7)
    with pytest.raises(PayloadTooLarge) as caught:
        parse_body(body_of(events), 6)
    error = caught.value
    assert error.status_code == 413
    assert "7" in error.message and "6" in error.message
    assert error.details == [{"limit": 6, "events": 7}]


# -- triage --------------------------------------------------------------------------------

# `triage` takes what `parse_body` returns, each event's bytes, and decoded values too.
FORMS = ["bytes", "values"]


def items_of(events: list[Any], form: str) -> list[Any]:
    return parse_body(body_of(events), len(events)) if form == "bytes" else events


def same(payload: Any, event: Any, form: str) -> bool:
    """A rejection keeps the decoded value itself, or an equal one decoded from its bytes."""
    return payload is event if form == "values" else payload == event


@pytest.mark.parametrize("form", FORMS)
def test_valid_events_are_accepted_in_order(form: str) -> None:
    events = gen().batch(40)
    sorted_out = triage(items_of(events, form))
    assert [a.event_id for a in sorted_out.accepted] == [e["eventId"] for e in events]
    assert payloads(sorted_out.accepted) == events
    assert sorted_out.rejected == []
    assert sorted_out.repeated == 0
    assert sorted_out.accepted_count == 40


@pytest.mark.parametrize("form", FORMS)
def test_the_first_copy_of_an_event_id_wins_and_later_copies_are_repeated(form: str) -> None:
    g = gen()
    first, other = g.facebook("ad.click"), g.tiktok("purchase")
    second = json.loads(json.dumps(first))
    second["data"]["user"]["age"] = 99  # a different, still valid copy of the same eventId
    third = json.loads(json.dumps(first))
    items = [first, other, second, third, json.loads(json.dumps(other))]
    sorted_out = triage(items_of(items, form))
    assert [a.event_id for a in sorted_out.accepted] == [first["eventId"], other["eventId"]]
    assert payloads(sorted_out.accepted)[0] == first
    assert payloads(sorted_out.accepted)[0]["data"]["user"]["age"] != 99
    assert sorted_out.repeated == 3
    assert sorted_out.accepted_count == 5
    assert sorted_out.rejected == []


@pytest.mark.parametrize("form", FORMS)
def test_generated_duplicates_are_counted_as_repeated(form: str) -> None:
    events = gen(3).batch(200, duplicate_share=0.1, invalid_share=0.05)
    sorted_out = triage(items_of(events, form))
    assert sorted_out.repeated == 20
    assert len(sorted_out.rejected) == 10
    assert len(sorted_out.accepted) == 170
    assert len({a.event_id for a in sorted_out.accepted}) == 170
    assert sorted_out.accepted_count == 190


@pytest.mark.parametrize("form", FORMS)
def test_rejected_events_keep_their_index(form: str) -> None:
    g = gen(5)
    events = [g.event() for _ in range(8)]
    bad_at = [0, 3, 7]
    for index in bad_at:
        events[index] = g.corrupt(events[index])
    events.insert(5, "not an event")  # type: ignore[arg-type]
    sorted_out = triage(items_of(events, form))
    assert [index for index, _ in sorted_out.rejected] == [0, 3, 5, 8]
    assert len(sorted_out.accepted) == 5
    for index, item in sorted_out.rejected:
        assert isinstance(item, Rejected)
        assert same(item.payload, events[index], form)
        assert item.reason


@pytest.mark.parametrize("form", FORMS)
def test_a_rejected_copy_does_not_hide_a_later_valid_copy(form: str) -> None:
    good = gen().facebook("comment")
    bad = json.loads(json.dumps(good))
    bad["funnelStage"] = "invalid-stage"
    sorted_out = triage(items_of([bad, good], form))
    assert [index for index, _ in sorted_out.rejected] == [0]
    assert [a.event_id for a in sorted_out.accepted] == [good["eventId"]]
    assert sorted_out.repeated == 0


def _with_nul(where: str) -> dict[str, Any]:
    event = gen(11).facebook("ad.click")
    if where == "typed-field":
        event["data"]["user"]["name"] = "Ana\x00Silva"
    elif where == "extra-field":
        event["note"] = "a\x00b"
    elif where == "nested-extra":
        event["data"]["engagement"]["tags"] = ["ok", {"deep": ["x", "\x00"]}]
    elif where == "extra-key":
        event["data"]["user"]["k\x00ey"] = 1
    else:  # pragma: no cover
        raise AssertionError(where)
    return event


NUL_PLACES = ["typed-field", "extra-field", "nested-extra", "extra-key"]


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("where", NUL_PLACES)
def test_a_nul_character_anywhere_rejects_the_event(where: str, form: str) -> None:
    g = gen(12)
    before, after = g.tiktok("share"), g.facebook("page.like")
    event = _with_nul(where)
    sorted_out = triage(items_of([before, event, after], form))
    assert [a.event_id for a in sorted_out.accepted] == [before["eventId"], after["eventId"]]
    assert len(sorted_out.rejected) == 1
    index, item = sorted_out.rejected[0]
    assert index == 1
    assert item.event_id == event["eventId"]
    assert "NUL" in item.reason
    assert same(item.payload, event, form)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("where", ["extra-field", "nested-extra", "extra-key"])
def test_check_storable_false_skips_the_walk(where: str, form: str) -> None:
    event = _with_nul(where)
    sorted_out = triage(items_of([event], form), check_storable=False)
    assert [a.event_id for a in sorted_out.accepted] == [event["eventId"]]
    assert sorted_out.rejected == []


def test_a_nul_found_in_a_parsed_body_rejects_only_that_event() -> None:
    g = gen(13)
    events = [g.event() for _ in range(4)]
    events[2]["extra"] = {"comment": "hello\x00world"}
    body = orjson.dumps(events)
    assert b"\\u0000" in body
    sorted_out = triage(parse_body(body, 10), check_storable=may_be_unstorable(body))
    assert [index for index, _ in sorted_out.rejected] == [2]
    assert len(sorted_out.accepted) == 3


@pytest.mark.parametrize(
    ("field", "number"),
    [
        ("followers", b"18446744073709551616"),
        ("followers", b"123456789012345678901234567890"),
        ("followers", b"-123456789012345678901234567890"),
        ("followers", b"9223372036854775808"),
        ("watchTime", b"1e999"),
    ],
)
def test_a_number_no_column_can_hold_is_a_rejection_naming_it(field: str, number: bytes) -> None:
    good, event = gen(15).tiktok("like"), gen(16).tiktok("share")
    raw = orjson.dumps(event)
    value = orjson.dumps(event["data"]["engagement" if field == "watchTime" else "user"][field])
    raw = raw.replace(b'"%s":%s' % (field.encode(), value), b'"%s":%s' % (field.encode(), number))
    assert number in raw
    body = b"[" + orjson.dumps(good) + b"," + raw + b"]"
    sorted_out = triage(parse_body(body, 10), check_storable=may_be_unstorable(body))
    assert [a.event_id for a in sorted_out.accepted] == [good["eventId"]]
    [(index, item)] = sorted_out.rejected
    part = "engagement" if field == "watchTime" else "user"
    assert (index, item.event_id) == (1, event["eventId"])
    assert item.reason.startswith(f"data.{part}.{field}: "), item.reason
    if field == "followers":
        assert item.payload["data"]["user"]["followers"] == int(number)  # exact, not a float


def test_a_body_only_the_stdlib_reads_is_validated_as_values() -> None:
    g = gen(17)
    events = [g.facebook("ad.view"), g.tiktok("like")]
    body = orjson.dumps(events)[:-1] + b',{"note":"\\udc00"}]'
    items = parse_body(body, 10)
    assert items[:2] == events  # decoded, as msgspec refuses the lone surrogate
    sorted_out = triage(items, check_storable=may_be_unstorable(body))
    assert payloads(sorted_out.accepted) == events
    assert [index for index, _ in sorted_out.rejected] == [2]


def test_a_lone_surrogate_does_not_sink_the_request() -> None:
    g = gen(14)
    good, poisoned = g.facebook("ad.view"), g.tiktok("like")
    body = (
        b"["
        + orjson.dumps(good)
        + b","
        + orjson.dumps(poisoned)[:-1]
        + b',"note":"\\ud800"}'
        + b"]"
    )
    try:
        items = parse_body(body, 10)
    except InvalidBody:
        return  # refusing the whole body with a 400 is an acceptable answer too
    sorted_out = triage(items, check_storable=may_be_unstorable(body))
    chunks = encode_batch(
        Settings(), sorted_out.accepted, sorted_out.rejected, correlation_id="c", received_at=NOW
    )
    assert [a.event_id for a in sorted_out.accepted] == [good["eventId"]]
    assert sum(chunk.count for chunk in chunks) == 2


# -- verify_signature ----------------------------------------------------------------------

SECRET = "s3cr3t-shared"
BODY = b'[{"eventId":"fb-1"}]'


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def test_the_right_signature_passes() -> None:
    verify_signature(SECRET, BODY, sign(SECRET, BODY))


def test_a_signature_over_an_empty_body_passes() -> None:
    verify_signature(SECRET, b"", sign(SECRET, b""))


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "sha1=" + sign(SECRET, BODY).removeprefix("sha256="),
        "md5=" + sign(SECRET, BODY).removeprefix("sha256="),
        sign(SECRET, BODY).removeprefix("sha256="),
        "sha256=",
        "sha256=" + "0" * 64,
        "sha256=zz" + sign(SECRET, BODY)[9:],
        sign(SECRET, BODY)[:-1],
        sign(SECRET, BODY) + "0",
        sign(SECRET, BODY + b" "),
        sign("other-secret", BODY),
    ],
    ids=[
        "missing",
        "empty",
        "sha1-scheme",
        "md5-scheme",
        "no-scheme",
        "no-hex",
        "zero-hex",
        "not-hex",
        "truncated",
        "too-long",
        "other-body",
        "other-secret",
    ],
)
def test_a_missing_or_wrong_signature_is_refused(header: str | None) -> None:
    with pytest.raises(BadSignature) as caught:
        verify_signature(SECRET, BODY, header)
    assert caught.value.status_code == 401


def test_a_signature_of_another_body_is_refused() -> None:
    other = BODY.replace(b"fb-1", b"fb-2")
    with pytest.raises(BadSignature, match="does not match"):
        verify_signature(SECRET, other, sign(SECRET, BODY))


def test_a_missing_signature_says_so() -> None:
    with pytest.raises(BadSignature, match="missing"):
        verify_signature(SECRET, BODY, None)


def test_a_non_ascii_signature_is_refused_not_a_crash() -> None:
    with pytest.raises(BadSignature):
        verify_signature(SECRET, BODY, "sha256=\u00e9" + "0" * 63)


# -- error_entries -------------------------------------------------------------------------


def test_error_entries_shape() -> None:
    g = gen(20)
    valid = g.facebook("ad.view")
    no_id = g.corrupt(g.tiktok("like"), "missing_eventId")
    bad_stage = g.corrupt(g.facebook("ad.click"), "invalid_funnelStage")
    sorted_out = triage([valid, no_id, bad_stage, 7])
    entries = error_entries(sorted_out.rejected)
    assert [set(entry) for entry in entries] == [{"index", "eventId", "reason"}] * 3
    assert [entry["index"] for entry in entries] == [1, 2, 3]
    assert [entry["eventId"] for entry in entries] == [None, bad_stage["eventId"], None]
    assert entries[0]["reason"].startswith("eventId")
    assert entries[1]["reason"].startswith("funnelStage")
    assert entries[2]["reason"].startswith("event")
    assert all(isinstance(entry["reason"], str) and entry["reason"] for entry in entries)
    # The answer is JSON.
    assert json.loads(json.dumps(entries)) == entries


def test_error_entries_of_nothing_is_empty() -> None:
    assert error_entries([]) == []


def test_an_event_older_than_the_retention_window_is_rejected_naming_timestamp() -> None:
    now = datetime(2026, 12, 5, 12, tzinfo=UTC)
    settings = Settings(retention_days=5)
    oldest = settings.retention_cutoff(now)
    assert oldest == datetime(2026, 11, 30, 12, tzinfo=UTC)
    generator = Generator(seed=31)
    old = generator.event(at=datetime(2026, 11, 25, tzinfo=UTC))
    edge = generator.event(at=oldest)
    recent = generator.event(at=now)
    items = parse_body(orjson.dumps([old, edge, recent]), 10)
    out = triage(items, oldest=oldest)
    assert [item.event_id for item in out.accepted] == [edge["eventId"], recent["eventId"]]
    ((index, rejected),) = out.rejected
    assert (index, rejected.event_id) == (0, old["eventId"])
    assert rejected.reason.startswith("timestamp: ")
    assert "retention window" in rejected.reason
    assert rejected.payload == old
    # Decoded items (a body only the stdlib reads) meet the same rule.
    assert [i for i, _ in triage([old, recent], oldest=oldest).rejected] == [0]
    # Without a window nothing is too old.
    assert triage(items).rejected == []
    assert Settings().retention_cutoff(now) is None
