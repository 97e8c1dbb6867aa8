"""Unit tests of the gateway's request contract before the bus (SPEC §4 gateway).

`parse_body`, `triage`, `verify_signature` and `error_entries` are pure functions: no Ray,
no servers, no HTTP.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from adfunnel.bus import encode_batch
from adfunnel.errors import BadSignature, InvalidBody, PayloadTooLarge
from adfunnel.generator import Generator
from adfunnel.ingest import (
    error_entries,
    may_be_unstorable,
    parse_body,
    triage,
    verify_signature,
)
from adfunnel.schema import Rejected
from adfunnel.settings import Settings

NOW = datetime(2026, 11, 27, 10, 0, 0, 123000, tzinfo=UTC)


def gen(seed: int = 0) -> Generator:
    return Generator(seed, clock=lambda: NOW)


def body_of(value: Any) -> bytes:
    return json.dumps(value).encode()


# -- parse_body ----------------------------------------------------------------------------


def test_an_object_becomes_a_one_item_list() -> None:
    event = gen().facebook("ad.view")
    assert parse_body(body_of(event), 10) == [event]


def test_an_array_is_returned_in_order() -> None:
    events = gen().batch(25)
    assert parse_body(body_of(events), 25) == events


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
    assert items == [{"max": 2**64 - 1, "min": -(2**63)}]
    assert all(isinstance(value, int) for value in items[0].values())


@pytest.mark.parametrize(
    "value",
    [2**64, 123456789012345678901234567890, -(2**63) - 1, -(10**40)],
    ids=["2**64", "30-digits", "-2**63-1", "-10**40"],
)
def test_an_integer_beyond_64_bits_is_kept_exactly(value: int) -> None:
    event = gen().facebook("ad.view")
    event["extraCounter"] = value
    items = parse_body(body_of([event]), 10)
    assert items == [event]
    assert type(items[0]["extraCounter"]) is int
    assert items[0]["extraCounter"] == value


def test_an_event_with_a_big_integer_extra_field_is_still_a_valid_event() -> None:
    event = gen().tiktok("like")
    event["extraCounter"] = 123456789012345678901234567890
    sorted_out = triage(parse_body(body_of([event]), 10))
    assert [a.event_id for a in sorted_out.accepted] == [event["eventId"]]
    assert sorted_out.rejected == []


def test_a_deeply_nested_body_is_invalid_not_a_crash() -> None:
    with pytest.raises(InvalidBody):
        parse_body(b"[" * 100_000, 10)


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


def test_valid_events_are_accepted_in_order() -> None:
    events = gen().batch(40)
    sorted_out = triage(events)
    assert [a.event_id for a in sorted_out.accepted] == [e["eventId"] for e in events]
    assert [a.payload for a in sorted_out.accepted] == events
    assert sorted_out.rejected == []
    assert sorted_out.repeated == 0
    assert sorted_out.accepted_count == 40


def test_the_first_copy_of_an_event_id_wins_and_later_copies_are_repeated() -> None:
    g = gen()
    first, other = g.facebook("ad.click"), g.tiktok("purchase")
    second = json.loads(json.dumps(first))
    second["data"]["user"]["age"] = 99  # a different, still valid copy of the same eventId
    third = json.loads(json.dumps(first))
    items = [first, other, second, third, json.loads(json.dumps(other))]
    sorted_out = triage(items)
    assert [a.event_id for a in sorted_out.accepted] == [first["eventId"], other["eventId"]]
    assert sorted_out.accepted[0].payload is first
    assert sorted_out.accepted[0].payload["data"]["user"]["age"] != 99
    assert sorted_out.repeated == 3
    assert sorted_out.accepted_count == 5
    assert sorted_out.rejected == []


def test_generated_duplicates_are_counted_as_repeated() -> None:
    events = gen(3).batch(200, duplicate_share=0.1, invalid_share=0.05)
    sorted_out = triage(events)
    assert sorted_out.repeated == 20
    assert len(sorted_out.rejected) == 10
    assert len(sorted_out.accepted) == 170
    assert len({a.event_id for a in sorted_out.accepted}) == 170
    assert sorted_out.accepted_count == 190


def test_rejected_events_keep_their_index() -> None:
    g = gen(5)
    events = [g.event() for _ in range(8)]
    bad_at = [0, 3, 7]
    for index in bad_at:
        events[index] = g.corrupt(events[index])
    events.insert(5, "not an event")  # type: ignore[arg-type]
    sorted_out = triage(events)
    assert [index for index, _ in sorted_out.rejected] == [0, 3, 5, 8]
    assert len(sorted_out.accepted) == 5
    for index, item in sorted_out.rejected:
        assert isinstance(item, Rejected)
        assert item.payload is events[index]
        assert item.reason


def test_a_rejected_copy_does_not_hide_a_later_valid_copy() -> None:
    good = gen().facebook("comment")
    bad = json.loads(json.dumps(good))
    bad["funnelStage"] = "invalid-stage"
    sorted_out = triage([bad, good])
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


@pytest.mark.parametrize("where", NUL_PLACES)
def test_a_nul_character_anywhere_rejects_the_event(where: str) -> None:
    g = gen(12)
    before, after = g.tiktok("share"), g.facebook("page.like")
    event = _with_nul(where)
    sorted_out = triage([before, event, after])
    assert [a.event_id for a in sorted_out.accepted] == [before["eventId"], after["eventId"]]
    assert len(sorted_out.rejected) == 1
    index, item = sorted_out.rejected[0]
    assert index == 1
    assert item.event_id == event["eventId"]
    assert "NUL" in item.reason
    assert item.payload is event


@pytest.mark.parametrize("where", ["extra-field", "nested-extra", "extra-key"])
def test_check_storable_false_skips_the_walk(where: str) -> None:
    event = _with_nul(where)
    sorted_out = triage([event], check_storable=False)
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
