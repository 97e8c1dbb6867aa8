"""Unit tests of the event schema (SPEC §3) and of the generator the other tests build on.

No Ray, no servers: `validate_event` and `event_row` are pure functions.
"""

from __future__ import annotations

import json
import re
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adfunnel import schema
from adfunnel.schema import (
    Accepted,
    EventRow,
    Rejected,
    event_row,
    validate_event,
    validate_json,
)
from adfunnel.tools.generator import (
    AGE_BUCKETS,
    CAMPAIGN_IDS,
    CORRUPTION_KINDS,
    COUNTRIES,
    EVENT_TYPES,
    FOLLOWER_BUCKETS,
    Generator,
    isoformat,
)

NOW = datetime(2026, 11, 27, 10, 0, 0, 123000, tzinfo=UTC)

ALL_TYPES = [
    (source, stage, event_type)
    for source, stages in EVENT_TYPES.items()
    for stage, types in stages.items()
    for event_type in types
]
TYPE_IDS = [f"{source}:{event_type}" for source, _, event_type in ALL_TYPES]

# The field each corruption of the real publisher must be blamed on: the reason starts with
# exactly this path and a colon. Written out here, not derived, so the tests pin the contract.
CORRUPTION_FIELD = {
    "invalid_timestamp": "timestamp",
    "missing_eventId": "eventId",
    "missing_user": "data.user",
    "missing_name": "data.user.name",
    "missing_adId": "data.engagement.adId",
    "invalid_funnelStage": "funnelStage",
    "invalid_eventType": "eventType",
    "negative_actionTime": "data.engagement.actionTime",
    "negative_watchTime": "data.engagement.watchTime",
    "invalid_gender": "data.user.gender",
    "invalid_followers": "data.user.followers",
}
_GONE = object()
# What the publisher puts there (SPEC §3); _GONE for a missing field.
CORRUPTION_VALUE: dict[str, Any] = {
    "missing_eventId": _GONE,
    "missing_user": _GONE,
    "missing_name": _GONE,
    "missing_adId": _GONE,
    "invalid_funnelStage": "invalid-stage",
    "invalid_eventType": ["unknown", "event"],
    "negative_actionTime": -1,
    "negative_watchTime": -1,
    "invalid_gender": "alien",
    "invalid_followers": "not-a-number",
}


def fixed_generator(seed: int = 0) -> Generator:
    return Generator(seed, clock=lambda: NOW)


def make(source: str, event_type: str, seed: int = 0) -> dict[str, Any]:
    gen = fixed_generator(seed)
    return gen.facebook(event_type) if source == "facebook" else gen.tiktok(event_type)


def as_json(obj: Any) -> bytes | None:
    """The JSON bytes of a decoded value, or None when JSON cannot spell it (NaN, infinity)."""
    try:
        return json.dumps(obj, allow_nan=False).encode()
    except ValueError:
        return None


def accepted(obj: Any) -> Accepted:
    """`validate_event`'s answer, once `validate_json` has given the same for the bytes."""
    result = validate_event(obj)
    assert isinstance(result, Accepted), result
    assert type(result.row) is EventRow
    assert result.row == event_row(obj)
    assert json.loads(result.payload) == obj
    raw = as_json(obj)
    if raw is not None:
        from_json = validate_json(raw)
        assert isinstance(from_json, Accepted), from_json
        assert from_json.payload is raw  # the event's own bytes, not a re-encoding
        assert from_json.row == result.row and type(from_json.row) is EventRow
        keys = ("event_id", "source", "funnel_stage", "event_type")
        assert [getattr(from_json, key) for key in keys] == [getattr(result, key) for key in keys]
    return result


def rejected(obj: Any) -> Rejected:
    """`validate_event`'s answer, once `validate_json` has given the same for the bytes."""
    result = validate_event(obj)
    assert isinstance(result, Rejected), f"accepted: {obj!r}"
    raw = as_json(obj)
    if raw is not None:
        assert validate_json(raw) == Rejected(result.event_id, result.reason, obj)
    return result


def names(reason: str, field: str) -> bool:
    return reason.startswith(f"{field}: ")


def lookup(event: dict[str, Any], path: str) -> Any:
    node: Any = event
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            return _GONE
        node = node[key]
    return node


def put(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A mutation setting a dotted path; `_GONE` deletes it."""

    def mutate(event: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = event
        for key in parents:
            node = node[key]
        if value is _GONE:
            del node[last]
        else:
            node[last] = value

    return mutate


# -- valid events --------------------------------------------------------------------------


def test_schema_knows_exactly_the_publishers_event_types() -> None:
    # Two independent copies of the publisher's documentation must agree.
    assert schema.EVENT_TYPES == EVENT_TYPES
    assert len(ALL_TYPES) == 14


@pytest.mark.parametrize(("source", "stage", "event_type"), ALL_TYPES, ids=TYPE_IDS)
def test_every_event_type_is_accepted(source: str, stage: str, event_type: str) -> None:
    event = make(source, event_type)
    result = accepted(event)
    assert result.event_id == event["eventId"]
    assert result.source == source
    assert result.funnel_stage == stage
    assert result.event_type == event_type
    assert json.loads(result.payload) == event


@pytest.mark.parametrize(
    "path",
    ["extra", "data.extra", "data.user.extra", "data.engagement.extra", "data.user.location.x"],
)
@pytest.mark.parametrize(("source", "event_type"), [("facebook", "ad.click"), ("tiktok", "like")])
def test_unknown_extra_fields_are_kept(source: str, event_type: str, path: str) -> None:
    event = make(source, event_type)
    if path.startswith("data.user.location") and source == "tiktok":
        path = "data.user.extra"  # TikTok users have no location
    put(path, {"anything": [1, "two", None]})(event)
    result = accepted(event)
    assert lookup(json.loads(result.payload), path) == {"anything": [1, "two", None]}
    event_row(json.loads(result.payload))  # the typed columns ignore it


@pytest.mark.parametrize(
    ("amount", "expected"),
    [("123.45", Decimal("123.45")), ("0", Decimal(0)), ("0.10", Decimal("0.10")), (None, None)],
)
def test_amounts_are_exact_decimals_or_null(amount: str | None, expected: Decimal | None) -> None:
    for source, event_type in (("facebook", "checkout.complete"), ("tiktok", "purchase")):
        event = make(source, event_type)
        event["data"]["engagement"]["purchaseAmount"] = amount
        row = accepted(event).row
        assert row.purchase_amount == expected
        if amount is not None:
            assert isinstance(row.purchase_amount, Decimal)
            assert str(row.purchase_amount) == amount  # scale kept: no float on the way


def test_event_row_of_a_facebook_checkout() -> None:
    event = make("facebook", "checkout.complete")
    event["timestamp"] = "2026-11-27T10:00:00.123Z"
    event["data"] = {
        "user": {
            "userId": "u-1",
            "name": "Olena Kovalenko",
            "age": 34,
            "gender": "female",
            "location": {"country": "Ukraine", "city": "Lviv"},
        },
        "engagement": {
            "adId": "ad-7",
            "campaignId": "cmp-spring-sale",
            "clickPosition": "center",
            "device": "mobile",
            "browser": "Safari",
            "purchaseAmount": "1999.99",
        },
    }
    assert accepted(event).row == EventRow(
        event_id=event["eventId"],
        event_time=datetime(2026, 11, 27, 10, 0, 0, 123000, tzinfo=UTC),
        source="facebook",
        funnel_stage="bottom",
        event_type="checkout.complete",
        user_id="u-1",
        purchase_amount=Decimal("1999.99"),
        campaign_id="cmp-spring-sale",
        age=34,
        gender="female",
        country="Ukraine",
        city="Lviv",
        followers=None,
        device="mobile",
    )


def test_event_row_of_a_facebook_top_event() -> None:
    event = make("facebook", "video.view")
    event["data"]["engagement"]["actionTime"] = "2026-11-27T09:59:00.000Z"
    row = accepted(event).row
    user = event["data"]["user"]
    assert (row.age, row.gender) == (user["age"], user["gender"])
    assert (row.country, row.city) == (user["location"]["country"], user["location"]["city"])
    assert (row.purchase_amount, row.campaign_id, row.device) == (None,) * 3
    assert row.followers is None


def test_event_row_of_tiktok_events() -> None:
    top = make("tiktok", "share")
    row = accepted(top).row
    assert row.followers == top["data"]["user"]["followers"]
    assert row.user_id == top["data"]["user"]["userId"]
    assert row.country == top["data"]["engagement"]["country"]
    assert row.device == top["data"]["engagement"]["device"]
    assert (row.age, row.gender, row.city, row.purchase_amount) == (None,) * 4

    bottom = make("tiktok", "purchase")
    bottom["data"]["engagement"]["purchaseAmount"] = "15.00"
    bottom["data"]["engagement"]["actionTime"] = "2026-11-27T09:00:00Z"
    row = accepted(bottom).row
    assert row.purchase_amount == Decimal("15.00")
    assert (row.country, row.device, row.campaign_id) == (None,) * 3


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-27T10:00:00.123Z", datetime(2026, 11, 27, 10, 0, 0, 123000, tzinfo=UTC)),
        ("2026-11-27T10:00:00", datetime(2026, 11, 27, 10, tzinfo=UTC)),  # no offset: UTC
        ("2026-11-27T10:00:00.5", datetime(2026, 11, 27, 10, 0, 0, 500000, tzinfo=UTC)),
        ("2026-11-27T12:00:00+02:00", datetime(2026, 11, 27, 10, tzinfo=UTC)),
        ("2026-11-27T05:30:00-04:30", datetime(2026, 11, 27, 10, tzinfo=UTC)),
        ("2026-11-28T00:30:00+14:30", datetime(2026, 11, 27, 10, tzinfo=UTC)),
        ("2026-11-27T10:00:00.123456+00:00", datetime(2026, 11, 27, 10, 0, 0, 123456, tzinfo=UTC)),
    ],
)
def test_timestamps_become_utc(text: str, expected: datetime) -> None:
    for source, event_type in (("facebook", "comment"), ("tiktok", "follow")):
        event = make(source, event_type)
        event["timestamp"] = text
        event["data"]["engagement"]["actionTime"] = text
        moment = accepted(event).row.event_time
        assert moment == expected
        assert moment.tzinfo is UTC


# -- rejected events -----------------------------------------------------------------------


def test_every_publisher_corruption_has_a_field() -> None:
    assert set(CORRUPTION_FIELD) == set(CORRUPTION_KINDS)
    assert len(CORRUPTION_KINDS) == 11


@pytest.mark.parametrize("kind", CORRUPTION_KINDS)
@pytest.mark.parametrize(("source", "stage", "event_type"), ALL_TYPES, ids=TYPE_IDS)
def test_publisher_corruptions_are_rejected_naming_the_field(
    kind: str, source: str, stage: str, event_type: str
) -> None:
    event = make(source, event_type)
    before = repr(event)
    bad = fixed_generator(1).corrupt(event, kind)
    assert repr(event) == before  # corrupt works on a copy
    result = rejected(bad)
    assert names(result.reason, CORRUPTION_FIELD[kind]), result.reason
    assert result.payload is bad
    assert result.event_id == (None if kind == "missing_eventId" else bad["eventId"])


@pytest.mark.parametrize("seed", range(40))
def test_random_corruptions_are_rejected(seed: int) -> None:
    gen = fixed_generator(seed)
    for _ in range(10):
        result = rejected(gen.corrupt(gen.event()))
        assert any(names(result.reason, field) for field in CORRUPTION_FIELD.values()), result


# (id, source, event_type, mutation, field the reason must start with)
BAD_EVENTS: list[tuple[str, str, str, Callable[[dict[str, Any]], None], str]] = [
    ("fb-bottom-type-as-top", "facebook", "ad.click", put("funnelStage", "top"), "eventType"),
    ("fb-top-type-as-bottom", "facebook", "ad.view", put("funnelStage", "bottom"), "eventType"),
    ("ttk-top-type-as-bottom", "tiktok", "like", put("funnelStage", "bottom"), "eventType"),
    ("ttk-bottom-type-as-top", "tiktok", "follow", put("funnelStage", "top"), "eventType"),
    (
        "fb-with-ttk-type",
        "facebook",
        "checkout.complete",
        put("eventType", "purchase"),
        "eventType",
    ),
    ("fb-with-ttk-top-type", "facebook", "ad.view", put("eventType", "share"), "eventType"),
    ("ttk-with-fb-type", "tiktok", "like", put("eventType", "ad.view"), "eventType"),
    ("ttk-with-fb-bottom", "tiktok", "purchase", put("eventType", "ad.click"), "eventType"),
    ("event-type-null", "tiktok", "like", put("eventType", None), "eventType"),
    ("event-type-missing", "facebook", "comment", put("eventType", _GONE), "eventType"),
    ("unknown-source", "facebook", "comment", put("source", "snapchat"), "source"),
    ("source-missing", "tiktok", "like", put("source", _GONE), "source"),
    ("stage-missing", "tiktok", "like", put("funnelStage", _GONE), "funnelStage"),
    ("stage-upper-case", "tiktok", "like", put("funnelStage", "TOP"), "funnelStage"),
    ("event-id-empty", "facebook", "comment", put("eventId", ""), "eventId"),
    ("event-id-number", "facebook", "comment", put("eventId", 12345), "eventId"),
    ("timestamp-epoch-ms", "tiktok", "like", put("timestamp", 1795773600123), "timestamp"),
    ("timestamp-missing", "tiktok", "like", put("timestamp", _GONE), "timestamp"),
    ("timestamp-garbage", "tiktok", "like", put("timestamp", "yesterday"), "timestamp"),
    (
        "action-time-garbage",
        "facebook",
        "page.like",
        put("data.engagement.actionTime", "2026-13-01T00:00:00Z"),
        "data.engagement.actionTime",
    ),
    ("data-missing", "facebook", "comment", put("data", _GONE), "data"),
    ("data-list", "tiktok", "like", put("data", []), "data"),
    ("engagement-missing", "tiktok", "like", put("data.engagement", _GONE), "data.engagement"),
    (
        "location-missing",
        "facebook",
        "comment",
        put("data.user.location", _GONE),
        "data.user.location",
    ),
    (
        "country-empty",
        "facebook",
        "comment",
        put("data.user.location.country", ""),
        "data.user.location.country",
    ),
    (
        "percentage-101",
        "tiktok",
        "video.view",
        put("data.engagement.percentageWatched", 101),
        "data.engagement.percentageWatched",
    ),
    (
        "percentage-negative",
        "tiktok",
        "video.view",
        put("data.engagement.percentageWatched", -0.5),
        "data.engagement.percentageWatched",
    ),
    (
        "watch-time-string",
        "tiktok",
        "video.view",
        put("data.engagement.watchTime", "12"),
        "data.engagement.watchTime",
    ),
    ("age-negative", "facebook", "comment", put("data.user.age", -1), "data.user.age"),
    ("age-fraction", "facebook", "comment", put("data.user.age", 30.5), "data.user.age"),
    ("age-string", "facebook", "comment", put("data.user.age", "30"), "data.user.age"),
    ("followers-negative", "tiktok", "like", put("data.user.followers", -5), "data.user.followers"),
    ("age-bool", "facebook", "comment", put("data.user.age", True), "data.user.age"),
    ("followers-bool", "tiktok", "like", put("data.user.followers", False), "data.user.followers"),
    (
        "watch-time-bool",
        "tiktok",
        "share",
        put("data.engagement.watchTime", True),
        "data.engagement.watchTime",
    ),
    (
        "percentage-bool",
        "tiktok",
        "share",
        put("data.engagement.percentageWatched", True),
        "data.engagement.percentageWatched",
    ),
    (
        "gender-capitalised",
        "facebook",
        "ad.view",
        put("data.user.gender", "Male"),
        "data.user.gender",
    ),
    (
        "fb-device-of-tiktok",
        "facebook",
        "ad.click",
        put("data.engagement.device", "Android"),
        "data.engagement.device",
    ),
    (
        "ttk-video-null",
        "tiktok",
        "video.view",
        put("data.engagement.videoId", None),
        "data.engagement.videoId",
    ),
    ("name-null", "facebook", "comment", put("data.user.name", None), "data.user.name"),
    ("user-id-number", "tiktok", "like", put("data.user.userId", 42), "data.user.userId"),
]
for _source, _event_type in (("facebook", "checkout.complete"), ("tiktok", "purchase")):
    for _amount in (12.5, 1250, True, "1e5", "-1.00", "", "12,50", " 1.00", "NaN", "1.2.3", "$5"):
        BAD_EVENTS.append(
            (
                f"{_source}-amount-{_amount!r}",
                _source,
                _event_type,
                put("data.engagement.purchaseAmount", _amount),
                "data.engagement.purchaseAmount",
            )
        )


@pytest.mark.parametrize(
    ("source", "event_type", "mutate", "field"),
    [case[1:] for case in BAD_EVENTS],
    ids=[case[0] for case in BAD_EVENTS],
)
def test_invalid_events_are_rejected_naming_the_field(
    source: str, event_type: str, mutate: Callable[[dict[str, Any]], None], field: str
) -> None:
    event = make(source, event_type)
    mutate(event)
    result = rejected(event)
    assert names(result.reason, field), result.reason
    assert result.payload is event
    event_id = event.get("eventId")
    assert result.event_id == (event_id if isinstance(event_id, str) and event_id else None)


@pytest.mark.parametrize(
    ("source", "event_type", "other_type"),
    [
        ("facebook", "ad.view", "ad.click"),
        ("facebook", "checkout.complete", "comment"),
        ("tiktok", "like", "purchase"),
        ("tiktok", "profile.visit", "share"),
    ],
)
def test_engagement_of_the_other_stage_is_rejected(
    source: str, event_type: str, other_type: str
) -> None:
    event = make(source, event_type)
    event["data"]["engagement"] = make(source, other_type, seed=5)["data"]["engagement"]
    assert rejected(event).reason.startswith("data.engagement.")


@pytest.mark.parametrize("obj", [42, 4.2, "event", None, True, [], [{"eventId": "fb-1"}]], ids=repr)
def test_non_objects_are_rejected(obj: Any) -> None:
    result = rejected(obj)
    assert names(result.reason, "event"), result.reason
    assert result.event_id is None
    assert result.payload is obj


def test_a_list_of_events_is_not_an_event() -> None:
    result = rejected([make("facebook", "ad.view")])
    assert result.reason == "event: must be a JSON object, not list"


@pytest.mark.parametrize("text", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_out_of_range_timestamps_are_rejected_not_raised(text: str) -> None:
    event = make("facebook", "ad.view")
    event["timestamp"] = text
    assert names(rejected(event).reason, "timestamp")


@pytest.mark.parametrize(
    ("source", "event_type", "key", "value"),
    [
        ("facebook", "ad.view", "purchaseAmount", 5),
        ("facebook", "ad.view", "device", 7),
        ("tiktok", "like", "campaignId", {"not": "text"}),
        ("tiktok", "like", "actionTime", "garbage"),
    ],
)
def test_extra_fields_do_not_reach_the_typed_columns(
    source: str, event_type: str, key: str, value: Any
) -> None:
    event = make(source, event_type)
    event["data"]["engagement"][key] = value
    clean = make(source, event_type)
    assert accepted(event).row == event_row(clean)


def reference_row(event: dict[str, Any]) -> EventRow:
    """The typed columns as SPEC §3 lays them out, read from the decoded event, by keyword."""
    source, stage = event["source"], event["funnelStage"]
    user, engagement = event["data"]["user"], event["data"]["engagement"]
    facebook, top = source == "facebook", stage == "top"
    amount = None if top else engagement["purchaseAmount"]
    return EventRow(
        event_id=event["eventId"],
        event_time=schema.parse_timestamp(event["timestamp"]),
        source=source,
        funnel_stage=stage,
        event_type=event["eventType"],
        user_id=user["userId"],
        purchase_amount=None if amount is None else Decimal(amount),
        campaign_id=engagement["campaignId"] if facebook and not top else None,
        age=user["age"] if facebook else None,
        gender=user["gender"] if facebook else None,
        country=user["location"]["country"] if facebook else engagement["country"] if top else None,
        city=user["location"]["city"] if facebook else None,
        followers=None if facebook else user["followers"],
        device=engagement["device"] if facebook != top else None,
    )


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize(("source", "stage", "event_type"), ALL_TYPES, ids=TYPE_IDS)
def test_every_models_row_is_its_columns_in_order(
    source: str, stage: str, event_type: str, seed: int
) -> None:
    event = make(source, event_type, seed)
    if event_type in schema.REVENUE_EVENT_TYPES.values():
        event["data"]["engagement"]["purchaseAmount"] = "12.30"
    row = accepted(event).row
    assert row == reference_row(event)
    assert row._asdict() == reference_row(event)._asdict()


@pytest.mark.parametrize(
    ("source", "event_type", "path", "value"),
    [
        ("facebook", "ad.view", "data.user.age", 2**31),
        ("facebook", "ad.view", "data.user.age", 2**64),
        ("tiktok", "like", "data.user.followers", 2**63),
        ("tiktok", "like", "data.user.followers", 2**64),
        ("tiktok", "like", "data.user.followers", 10**30),
        ("tiktok", "like", "data.user.followers", -(10**30)),
        ("tiktok", "share", "data.engagement.watchTime", float("inf")),
        ("tiktok", "share", "data.engagement.watchTime", float("nan")),
        ("tiktok", "share", "data.engagement.percentageWatched", float("nan")),
        ("tiktok", "share", "data.engagement.percentageWatched", float("-inf")),
        ("facebook", "ad.view", "data.user.name", "x" * 513),
        ("facebook", "ad.view", "eventId", "x" * 257),
    ],
)
def test_out_of_range_values_are_rejected_naming_the_field(
    source: str, event_type: str, path: str, value: Any
) -> None:
    event = make(source, event_type)
    put(path, value)(event)
    assert names(rejected(event).reason, path)


@pytest.mark.parametrize(
    ("path", "value"),
    [("data.user.age", 2**31 - 1), ("data.user.name", "é" * 512), ("eventId", "😀" * 256)],
)
def test_values_at_the_bounds_are_accepted(path: str, value: Any) -> None:
    event = make("facebook", "ad.view")
    put(path, value)(event)
    accepted(event)


@pytest.mark.parametrize(
    ("number", "field", "decoded"),
    [
        (b"1e999", "data.engagement.watchTime", float("inf")),
        (b"123456789012345678901234567890", "data.user.followers", 123456789012345678901234567890),
        (b"-18446744073709551617", "data.user.followers", -18446744073709551617),
    ],
)
def test_numbers_past_a_double_or_64_bits_in_the_bytes_are_rejected(
    number: bytes, field: str, decoded: Any
) -> None:
    event = make("tiktok", "share")
    raw = json.dumps(event).encode()
    key = field.rpartition(".")[2].encode()
    old = json.dumps(lookup(event, field)).encode()
    raw = raw.replace(b'"%s": %s' % (key, old), b'"%s": %s' % (key, number), 1)
    assert number in raw
    result = validate_json(raw)
    assert isinstance(result, Rejected)
    assert names(result.reason, field), result.reason
    assert lookup(result.payload, field) == decoded  # the stdlib reads what msgspec cannot


def test_a_float_field_takes_a_big_integer_as_a_number() -> None:
    event = make("tiktok", "share")
    event["data"]["engagement"]["watchTime"] = 2**64
    assert accepted(event).row == event_row(event)


def test_an_extra_field_past_a_double_is_kept_as_written() -> None:
    event = make("tiktok", "share")
    raw = json.dumps(event).encode()[:-1] + b', "huge": 1e999, "exact": 123456789012345678901}'
    result = validate_json(raw)
    assert isinstance(result, Accepted)
    assert result.payload is raw
    assert result.row == event_row(event)


def test_an_enum_reason_lists_the_allowed_values_not_the_senders() -> None:
    event = make("facebook", "ad.view")
    event["data"]["user"]["gender"] = "x - at `$.eventId` " * 1000
    reason = rejected(event).reason
    assert reason == "data.user.gender: Input should be 'male', 'female' or 'non-binary'"


def test_the_reason_names_the_first_problem_only() -> None:
    event = make("facebook", "ad.click")
    del event["data"]["user"]["name"]
    event["data"]["engagement"]["device"] = "Android"
    assert rejected(event).reason in {
        "data.user.name: Field required",
        "data.engagement.device: Input should be 'mobile' or 'desktop'",
    }


def test_event_row_of_an_invalid_event_names_the_field() -> None:
    event = make("tiktok", "like")
    event["data"]["user"]["followers"] = "not-a-number"
    with pytest.raises(ValueError, match=r"^data\.user\.followers: "):
        event_row(event)


def test_remembered_timestamps_are_each_their_own() -> None:
    # A body's events share their timestamps, which are remembered by text: never wrongly,
    # and a text refused once is refused again.
    texts = ["2026-11-27T10:00:00Z", "2026-11-27T10:00:00Z", "2026-11-27T12:00:00+02:00"]
    texts += ["2026-11-27T10:00:00.001Z", "yesterday", "2026-11-27T10:00:00.001Z", ""]
    texts += ["yesterday", "2026-11-27T10:00:00Z"]
    for source, event_type in (("facebook", "ad.click"), ("tiktok", "purchase")):
        for text in texts:
            event = make(source, event_type)
            event["timestamp"] = text
            if text in ("yesterday", ""):
                assert names(rejected(event).reason, "timestamp")
            else:
                assert accepted(event).row.event_time == schema.parse_timestamp(text)
                assert accepted(event).row.event_time.tzinfo is UTC


def test_events_with_one_timestamp_text_share_its_datetime() -> None:
    # One object per text: its hash, which the writers' line cache looks it up by, is
    # computed once, not once per event.
    first, other, again = (make("tiktok", "like", seed) for seed in (1, 2, 3))
    first["timestamp"] = again["timestamp"] = "2026-11-27T10:00:00.007Z"
    other["timestamp"] = "2026-11-27T10:00:00.008Z"
    times = [accepted(event).row.event_time for event in (first, other, again)]
    assert times[0] is times[2] and times[0] != times[1]


@pytest.mark.parametrize(
    "raw",
    [b"42", b'"event"', b"null", b"[]", b'[{"eventId": "fb-1"}]', b"{}", b'{"eventId": 1e999}'],
)
def test_validate_json_of_what_is_not_an_event(raw: bytes) -> None:
    result = validate_json(raw)
    assert isinstance(result, Rejected)
    assert result.event_id is None
    assert result.reason.split(":")[0] in {"event", "source"}
    assert result == validate_event(schema.decode_json(raw))


# What JSON can say, with integers within 64 bits: past them msgspec words a type error on the
# bytes "got `float`" where the decoded value gets "got `int`" (same path, which
# test_numbers_past_a_double_or_64_bits_in_the_bytes_are_rejected pins).
JSON_INTEGERS = st.integers(min_value=-(2**63), max_value=2**64 - 1)
JSON_FLOATS = st.floats(allow_nan=False, allow_infinity=False)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | JSON_INTEGERS | JSON_FLOATS | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=6,
)
FIELDS = sorted(
    {
        path
        for source, _, event_type in ALL_TYPES
        for path in CORRUPTION_FIELD.values()
        if lookup(make(source, event_type), path) is not _GONE
    }
    | {
        "data.engagement.purchaseAmount",
        "data.engagement.percentageWatched",
        "data.engagement.videoId",
        "data.engagement.profileId",
        "data.user.location.city",
        "data.user.username",
        "data.user.age",
        "source",
        "eventType",
        "extra",
    }
)


@settings(max_examples=300, deadline=None)
@given(
    kind=st.sampled_from(ALL_TYPES),
    seed=st.integers(min_value=0, max_value=1000),
    changes=st.lists(
        st.tuples(st.sampled_from(FIELDS), st.just(_GONE) | JSON_VALUES), min_size=1, max_size=3
    ),
)
def test_bytes_and_values_get_the_same_answer(
    kind: tuple[str, str, str], seed: int, changes: list[tuple[str, Any]]
) -> None:
    source, _, event_type = kind
    event = make(source, event_type, seed)
    for path, value in changes:
        parent = path.rpartition(".")[0]
        settable = not parent or isinstance(lookup(event, parent), dict)
        if settable and (value is not _GONE or lookup(event, path) is not _GONE):
            put(path, value)(event)
    # `accepted` and `rejected` check that validate_json agrees with validate_event.
    if isinstance(validate_event(event), Accepted):
        accepted(event)
    else:
        rejected(event)


# -- property ------------------------------------------------------------------------------

OFFSETS = [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]


@settings(max_examples=150, deadline=None)
@given(
    seed=st.integers(min_value=0, max_value=2**64),
    at=st.datetimes(
        min_value=datetime(2000, 1, 2),
        max_value=datetime(2099, 12, 30),
        timezones=st.sampled_from(OFFSETS),
    ),
)
def test_generated_events_are_accepted(seed: int, at: datetime) -> None:
    gen = Generator(seed, clock=lambda: at)
    expected_time = at.astimezone(UTC).replace(microsecond=at.microsecond // 1000 * 1000)
    for event in gen.batch(30, duplicate_share=0.1, out_of_order_share=0.1):
        result = accepted(event)
        row = result.row
        assert row.event_id == event["eventId"]
        assert row.event_time <= expected_time
    assert event_row(gen.event(at)).event_time == expected_time


# -- the generator -------------------------------------------------------------------------

TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
AMOUNT = re.compile(r"[0-9]+\.[0-9]{2}")


def test_isoformat_is_javascripts_to_iso_string() -> None:
    assert isoformat(datetime(2026, 11, 27, 10, 0, 0, 123999, tzinfo=UTC)) == (
        "2026-11-27T10:00:00.123Z"
    )
    assert isoformat(datetime(2026, 11, 27, 10)) == "2026-11-27T10:00:00.000Z"
    plus_two = timezone(timedelta(hours=2))
    assert isoformat(datetime(2026, 11, 27, 12, tzinfo=plus_two)) == "2026-11-27T10:00:00.000Z"


def test_a_seed_reproduces_events() -> None:
    def run(seed: int) -> list[dict[str, Any]]:
        gen = fixed_generator(seed)
        return [
            gen.event(),
            gen.facebook("comment"),
            gen.tiktok(),
            *gen.batch(300, duplicate_share=0.1, out_of_order_share=0.1, invalid_share=0.1),
            gen.corrupt(gen.event()),
        ]

    assert run(7) == run(7)
    assert run(7) != run(8)
    # Without a fixed clock only the timestamps may differ; the ids are from the seed.
    assert Generator(3).event()["eventId"] == Generator(3).event()["eventId"]


def test_ids_and_timestamps_have_the_publishers_format() -> None:
    gen = Generator(11)
    for event in gen.batch(500, out_of_order_share=0.2):
        prefix, _, rest = event["eventId"].partition("-")
        assert prefix == {"facebook": "fb", "tiktok": "ttk"}[event["source"]]
        assert uuid.UUID(rest).version == 4 and str(uuid.UUID(rest)) == rest
        assert TIMESTAMP.fullmatch(event["timestamp"])
        action_time = event["data"]["engagement"].get("actionTime")
        assert action_time is None or TIMESTAMP.fullmatch(action_time)


def test_generated_events_look_like_a_real_audience() -> None:
    events = fixed_generator(2026).batch(4000)
    facebook = [e for e in events if e["source"] == "facebook"]
    tiktok = [e for e in events if e["source"] == "tiktok"]
    fb_users = [e["data"]["user"] for e in facebook]
    ttk_users = [e["data"]["user"] for e in tiktok]
    fb_engagements = [e["data"]["engagement"] for e in facebook]
    ttk_engagements = [e["data"]["engagement"] for e in tiktok]

    assert {(e["source"], e["funnelStage"], e["eventType"]) for e in events} == set(ALL_TYPES)
    assert {u["gender"] for u in fb_users} == {"male", "female", "non-binary"}
    ages = [u["age"] for u in fb_users]
    assert min(ages) >= 13 and max(ages) <= 80
    assert {low for low, high in AGE_BUCKETS for age in ages if low <= age <= high} == {
        low for low, _ in AGE_BUCKETS
    }
    followers = [u["followers"] for u in ttk_users]
    assert min(followers) >= 0 and max(followers) <= 5_100_000
    assert {low for low, high in FOLLOWER_BUCKETS for f in followers if low <= f <= high} == {
        low for low, _ in FOLLOWER_BUCKETS
    }
    for user in fb_users:
        assert user["location"]["city"] in COUNTRIES[user["location"]["country"]]
    tops = [g for g in ttk_engagements if "watchTime" in g]
    assert {g["country"] for g in tops} <= set(COUNTRIES)
    assert {g["device"] for g in tops} == {"Android", "iOS", "Desktop"}
    assert all(0 <= g["percentageWatched"] <= 100 and g["watchTime"] >= 0 for g in tops)
    values = Counter(
        (key, g[key])
        for g in fb_engagements
        for key in ("referrer", "clickPosition", "device", "browser")
        if key in g
    )
    assert {key for key, _ in values} == {"referrer", "clickPosition", "device", "browser"}
    assert len(values) == 3 + 3 + 2 + 3
    campaigns = {g["campaignId"] for g in fb_engagements if "campaignId" in g}
    assert campaigns == set(CAMPAIGN_IDS) and len(campaigns) <= 10

    user_ids = [u["userId"] for u in fb_users + ttk_users]
    assert 0.95 * len(user_ids) <= len(set(user_ids)) < len(user_ids)  # a few return

    revenue_amounts = []
    for event in events:
        amount = event["data"]["engagement"].get("purchaseAmount", _GONE)
        if event["eventType"] in ("checkout.complete", "purchase"):
            revenue_amounts.append(amount)
        elif event["funnelStage"] == "bottom":
            assert amount is None
        else:
            assert amount is _GONE
    set_amounts = [a for a in revenue_amounts if a is not None]
    assert all(isinstance(a, str) and AMOUNT.fullmatch(a) for a in set_amounts)
    assert 0 < revenue_amounts.count(None) < len(set_amounts)


@pytest.mark.parametrize(
    ("n", "duplicate_share", "out_of_order_share", "invalid_share"),
    [
        (1000, 0.1, 0.2, 0.05),
        (200, 0.0, 0.0, 0.0),
        (10, 0.5, 0.0, 0.0),
        (10, 0.3, 0.3, 0.3),
        (1, 0.0, 0.0, 1.0),
        (1, 0.0, 1.0, 0.0),
        (7, 0.1, 0.1, 0.1),  # round(0.7) == 1 of each
        (0, 0.5, 0.5, 0.5),
    ],
)
def test_batch_has_exactly_the_asked_anomalies(
    n: int, duplicate_share: float, out_of_order_share: float, invalid_share: float
) -> None:
    events = fixed_generator(n).batch(
        n,
        duplicate_share=duplicate_share,
        out_of_order_share=out_of_order_share,
        invalid_share=invalid_share,
    )
    assert len(events) == n
    first_copy: dict[str, dict[str, Any]] = {}
    duplicates = late = invalid = 0
    for event in events:
        if isinstance(validate_event(event), Rejected):
            invalid += 1
            continue
        original = first_copy.get(event["eventId"])
        if original is not None:
            duplicates += 1
            assert event == original and event is not original
            continue
        first_copy[event["eventId"]] = event
        age = NOW - datetime.fromisoformat(event["timestamp"])
        if age >= timedelta(minutes=1):
            late += 1
            assert age <= timedelta(hours=12, seconds=1)
        else:
            assert timedelta(0) <= age < timedelta(seconds=1)
    assert duplicates == round(n * duplicate_share)
    assert late == round(n * out_of_order_share)
    assert invalid == round(n * invalid_share)


@pytest.mark.parametrize(
    ("n", "shares"),
    [
        (10, {"duplicate_share": 1.0}),  # nothing to duplicate
        (10, {"duplicate_share": 0.5, "invalid_share": 0.5}),
        (10, {"out_of_order_share": 0.6, "invalid_share": 0.5}),
        (10, {"invalid_share": 1.5}),
        (10, {"duplicate_share": -0.1}),
        (-1, {}),
    ],
)
def test_batch_refuses_impossible_shares(n: int, shares: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Generator(0).batch(n, **shares)


def test_wrong_event_types_and_kinds_are_refused() -> None:
    gen = Generator(0)
    with pytest.raises(ValueError):
        gen.facebook("purchase")
    with pytest.raises(ValueError):
        gen.tiktok("ad.view")
    with pytest.raises(ValueError):
        gen.corrupt(gen.event(), "missing_everything")


@pytest.mark.parametrize("kind", CORRUPTION_KINDS)
def test_corrupt_sends_what_the_publisher_sends(kind: str) -> None:
    gen = fixed_generator(9)
    for event in (gen.facebook("ad.view"), gen.tiktok("like")):
        bad = gen.corrupt(event, kind)
        if kind in CORRUPTION_VALUE:
            assert lookup(bad, CORRUPTION_FIELD[kind]) == CORRUPTION_VALUE[kind]
        else:
            assert lookup(bad, "timestamp") != lookup(event, "timestamp")


def test_corrupt_replaces_an_unfitting_event_by_a_close_one() -> None:
    gen = fixed_generator(4)
    top = gen.facebook("ad.view", at=NOW - timedelta(hours=1))
    bad = gen.corrupt(top, "missing_adId")
    assert (bad["source"], bad["funnelStage"]) == ("facebook", "bottom")
    assert bad["timestamp"] == top["timestamp"]
    assert bad["eventId"] != top["eventId"]

    assert gen.corrupt(gen.tiktok("share"), "missing_name")["source"] == "facebook"
    assert gen.corrupt(gen.facebook("comment"), "invalid_followers")["source"] == "tiktok"
    assert gen.corrupt(gen.tiktok("share"), "negative_actionTime")["funnelStage"] == "bottom"

    # A fitting event is kept: same id, only the corrupted field differs.
    event = gen.facebook("checkout.complete")
    bad = gen.corrupt(event, "missing_adId")
    assert bad["eventId"] == event["eventId"]
    del event["data"]["engagement"]["adId"]
    assert bad == event
