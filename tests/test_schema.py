"""Unit tests of the event schema (SPEC §3) and of the generator the other tests build on.

No Ray, no servers: `validate_event` and `event_row` are pure functions.
"""

from __future__ import annotations

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
from adfunnel.generator import (
    AGE_BUCKETS,
    CAMPAIGN_IDS,
    CORRUPTION_KINDS,
    COUNTRIES,
    EVENT_TYPES,
    FOLLOWER_BUCKETS,
    Generator,
    isoformat,
)
from adfunnel.schema import Accepted, EventRow, Rejected, event_row, validate_event

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


def accepted(obj: Any) -> Accepted:
    result = validate_event(obj)
    assert isinstance(result, Accepted), result
    return result


def rejected(obj: Any) -> Rejected:
    result = validate_event(obj)
    assert isinstance(result, Rejected), f"accepted: {obj!r}"
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
    assert result.payload == event


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
    assert lookup(result.payload, path) == {"anything": [1, "two", None]}
    event_row(result.payload)  # the typed columns ignore it


@pytest.mark.parametrize(
    ("amount", "expected"),
    [("123.45", Decimal("123.45")), ("0", Decimal(0)), ("0.10", Decimal("0.10")), (None, None)],
)
def test_amounts_are_exact_decimals_or_null(amount: str | None, expected: Decimal | None) -> None:
    for source, event_type in (("facebook", "checkout.complete"), ("tiktok", "purchase")):
        event = make(source, event_type)
        event["data"]["engagement"]["purchaseAmount"] = amount
        row = event_row(accepted(event).payload)
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
    assert event_row(accepted(event).payload) == EventRow(
        event_id=event["eventId"],
        event_time=datetime(2026, 11, 27, 10, 0, 0, 123000, tzinfo=UTC),
        source="facebook",
        funnel_stage="bottom",
        event_type="checkout.complete",
        user_id="u-1",
        purchase_amount=Decimal("1999.99"),
        campaign_id="cmp-spring-sale",
        ad_id="ad-7",
        age=34,
        gender="female",
        country="Ukraine",
        city="Lviv",
        followers=None,
        device="mobile",
        action_time=None,
    )


def test_event_row_of_a_facebook_top_event() -> None:
    event = make("facebook", "video.view")
    event["data"]["engagement"]["actionTime"] = "2026-11-27T09:59:00.000Z"
    row = event_row(accepted(event).payload)
    user = event["data"]["user"]
    assert (row.age, row.gender) == (user["age"], user["gender"])
    assert (row.country, row.city) == (user["location"]["country"], user["location"]["city"])
    assert row.action_time == datetime(2026, 11, 27, 9, 59, tzinfo=UTC)
    assert (row.purchase_amount, row.campaign_id, row.ad_id, row.device) == (None,) * 4
    assert row.followers is None


def test_event_row_of_tiktok_events() -> None:
    top = make("tiktok", "share")
    row = event_row(accepted(top).payload)
    assert row.followers == top["data"]["user"]["followers"]
    assert row.user_id == top["data"]["user"]["userId"]
    assert row.country == top["data"]["engagement"]["country"]
    assert row.device == top["data"]["engagement"]["device"]
    assert (row.age, row.gender, row.city, row.action_time, row.purchase_amount) == (None,) * 5

    bottom = make("tiktok", "purchase")
    bottom["data"]["engagement"]["purchaseAmount"] = "15.00"
    bottom["data"]["engagement"]["actionTime"] = "2026-11-27T09:00:00Z"
    row = event_row(accepted(bottom).payload)
    assert row.purchase_amount == Decimal("15.00")
    assert row.action_time == datetime(2026, 11, 27, 9, tzinfo=UTC)
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
        row = event_row(accepted(event).payload)
        for moment in (row.event_time, row.action_time):
            assert moment == expected
            assert moment is not None and moment.tzinfo is UTC


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
    assert event_row(accepted(event).payload) == event_row(clean)


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
        row = event_row(result.payload)
        assert row.event_id == event["eventId"]
        assert row.event_time <= expected_time
        if row.action_time is not None:
            assert row.action_time <= row.event_time
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
