"""Unit tests of the reporter's parameter checks (SPEC §4 reporter) and the WHERE builder."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from adfunnel.errors import InvalidParameter
from adfunnel.reports import event_filters, filters_echo, interval_param, iso_utc, revenue_filters
from adfunnel.storage import EventFilters, where_clause

FACEBOOK_TOP = ("ad.view", "page.like", "comment", "video.view")
FACEBOOK_BOTTOM = ("ad.click", "form.submission", "checkout.complete")
TIKTOK_TOP = ("video.view", "like", "share", "comment")
TIKTOK_BOTTOM = ("profile.visit", "purchase", "follow")


def refused(name: str, *args: str | None) -> InvalidParameter:
    """The error of `event_filters(*args)`, checked to name parameter `name`."""
    start, end, source, stage, event_type = (list(args) + [None] * 5)[:5]
    with pytest.raises(InvalidParameter) as caught:
        event_filters(start, end, source, stage, event_type)
    error = caught.value
    assert error.message.startswith(f"{name}: "), error.message
    assert str(error).startswith(f"{name}: ")
    assert error.status_code == 400
    assert error.details and error.details[0] == {
        "parameter": name,
        "message": error.message.removeprefix(f"{name}: "),
    }
    return error


# -- times ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", ["yesterday", "", "2026-13-01", "2026-02-30T00:00:00Z", "12:00", "1700000000", "Z"]
)
def test_an_unparsable_from_is_refused(value: str) -> None:
    refused("from", value)


@pytest.mark.parametrize("value", ["tomorrow", "2026-11-27T25:00:00Z", "2026/11/27"])
def test_an_unparsable_to_is_refused(value: str) -> None:
    refused("to", None, value)


def test_from_is_checked_before_to() -> None:
    refused("from", "bad", "also bad")


@pytest.mark.parametrize(
    ("start", "end"),
    [
        ("2026-11-27T10:00:00Z", "2026-11-27T10:00:00Z"),
        ("2026-11-27T10:00:00Z", "2026-11-27T09:59:59.999Z"),
        ("2026-11-28", "2026-11-27"),
        # The same instant written in two offsets is not a range.
        ("2026-11-27T12:00:00+02:00", "2026-11-27T10:00:00Z"),
        # 09:30Z is after 10:00+01:00 (09:00Z).
        ("2026-11-27T09:30:00Z", "2026-11-27T10:00:00+01:00"),
    ],
)
def test_from_not_before_to_is_refused(start: str, end: str) -> None:
    error = refused("from", start, end)
    assert "to" in error.message


def test_times_are_parsed_to_utc_and_an_offset_less_time_is_utc() -> None:
    filters = event_filters("2026-11-27T12:00:00+02:00", "2026-11-27T11:00:00", None, None, None)
    assert filters.start == datetime(2026, 11, 27, 10, tzinfo=UTC)
    assert filters.end == datetime(2026, 11, 27, 11, tzinfo=UTC)
    assert filters.start is not None and filters.start.utcoffset() == timedelta(0)


def test_a_range_across_offsets_is_compared_in_utc() -> None:
    # 12:00+05:00 is 07:00Z, before 08:00Z, although "12" > "08".
    filters = event_filters("2026-11-27T12:00:00+05:00", "2026-11-27T08:00:00Z", None, None, None)
    assert filters.start == datetime(2026, 11, 27, 7, tzinfo=UTC)


def test_only_one_bound_is_fine() -> None:
    assert event_filters("2026-11-27T10:00:00Z", None, None, None, None).end is None
    assert event_filters(None, "2026-11-27T10:00:00Z", None, None, None).start is None


# -- source, funnel stage, event type ------------------------------------------------------


@pytest.mark.parametrize("value", ["instagram", "", "Facebook", "FACEBOOK", "tiktok "])
def test_an_unknown_source_is_refused(value: str) -> None:
    error = refused("source", None, None, value)
    assert "facebook" in error.message and "tiktok" in error.message


@pytest.mark.parametrize("value", ["middle", "", "Top", "invalid-stage"])
def test_an_unknown_funnel_stage_is_refused(value: str) -> None:
    refused("funnelStage", None, None, None, value)


@pytest.mark.parametrize("value", ["ad.views", "", "unknown", "AD.VIEW", "purchase.complete"])
def test_an_unknown_event_type_is_refused(value: str) -> None:
    refused("eventType", None, None, None, None, value)


@pytest.mark.parametrize(
    ("source", "event_type"),
    [
        ("tiktok", "ad.view"),
        ("tiktok", "checkout.complete"),
        ("tiktok", "page.like"),
        ("facebook", "purchase"),
        ("facebook", "like"),
        ("facebook", "share"),
        ("facebook", "follow"),
    ],
)
def test_an_event_type_of_the_other_source_is_refused(source: str, event_type: str) -> None:
    error = refused("eventType", None, None, source, None, event_type)
    assert source in error.message


@pytest.mark.parametrize(
    ("source", "stage", "event_type"),
    [
        ("facebook", "top", "ad.click"),
        ("facebook", "bottom", "ad.view"),
        ("facebook", "bottom", "comment"),
        ("tiktok", "top", "purchase"),
        ("tiktok", "bottom", "video.view"),
        (None, "top", "checkout.complete"),
        (None, "top", "follow"),
        (None, "bottom", "like"),
        (None, "bottom", "video.view"),
    ],
)
def test_an_event_type_of_the_wrong_stage_is_refused(
    source: str | None, stage: str, event_type: str
) -> None:
    error = refused("eventType", None, None, source, stage, event_type)
    assert stage in error.message


def test_the_source_is_checked_before_the_event_type() -> None:
    refused("source", None, None, "myspace", None, "ad.view")


@pytest.mark.parametrize(
    ("source", "stage", "event_type"),
    [
        (s, "top", t)
        for s, types in (("facebook", FACEBOOK_TOP), ("tiktok", TIKTOK_TOP))
        for t in types
    ]
    + [
        (s, "bottom", t)
        for s, types in (("facebook", FACEBOOK_BOTTOM), ("tiktok", TIKTOK_BOTTOM))
        for t in types
    ],
)
def test_every_valid_combination_passes(source: str, stage: str, event_type: str) -> None:
    for args in (
        (source, stage, event_type),
        (source, None, event_type),
        (None, stage, event_type),
        (None, None, event_type),
        (source, stage, None),
    ):
        filters = event_filters(
            "2026-11-27T00:00:00Z", "2026-11-28T00:00:00.000Z", args[0], args[1], args[2]
        )
        assert filters == EventFilters(
            datetime(2026, 11, 27, tzinfo=UTC),
            datetime(2026, 11, 28, tzinfo=UTC),
            args[0],
            args[1],
            args[2],
        )


def test_an_event_type_shared_by_both_sources_passes_without_a_source() -> None:
    for event_type in ("comment", "video.view"):
        assert event_filters(None, None, None, "top", event_type).event_type == event_type


def test_no_filters_at_all() -> None:
    assert event_filters(None, None, None, None, None) == EventFilters()


def test_filters_echo_uses_the_request_names() -> None:
    filters = event_filters(
        "2026-11-27T12:00:00+02:00", None, "facebook", "bottom", "checkout.complete"
    )
    assert filters_echo(filters, "hour") == {
        "from": "2026-11-27T10:00:00+00:00",
        "to": None,
        "source": "facebook",
        "funnelStage": "bottom",
        "eventType": "checkout.complete",
        "interval": "hour",
    }
    assert "interval" not in filters_echo(filters)
    assert iso_utc(datetime(2026, 11, 27, 10, tzinfo=UTC)) == "2026-11-27T10:00:00Z"
    assert iso_utc(datetime(2026, 11, 27, 12, tzinfo=timezone(timedelta(hours=2))))


# -- interval ------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["minute", "hour", "day", None])
def test_a_known_interval_passes(value: str | None) -> None:
    assert interval_param(value) == value


@pytest.mark.parametrize("value", ["week", "", "Hour", "DAY", "minutes", "1h", "second"])
def test_an_unknown_interval_is_refused(value: str) -> None:
    with pytest.raises(InvalidParameter) as caught:
        interval_param(value)
    assert caught.value.message.startswith("interval: ")
    assert caught.value.details == [
        {"parameter": "interval", "message": caught.value.message.removeprefix("interval: ")}
    ]


# -- where_clause --------------------------------------------------------------------------


def test_no_filters_is_no_where_clause() -> None:
    assert where_clause(EventFilters()) == ("", [])


def test_every_filter_is_a_numbered_parameter_in_order() -> None:
    start = datetime(2026, 11, 27, tzinfo=UTC)
    end = datetime(2026, 11, 28, tzinfo=UTC)
    where, params = where_clause(EventFilters(start, end, "tiktok", "bottom", "purchase"))
    assert where == (
        " WHERE event_time >= $1 AND event_time < $2 AND source = $3"
        " AND funnel_stage = $4 AND event_type = $5"
    )
    assert params == [start, end, "tiktok", "bottom", "purchase"]


@pytest.mark.parametrize(
    ("filters", "expected_where", "expected_params"),
    [
        (EventFilters(source="facebook"), " WHERE source = $1", ["facebook"]),
        (
            EventFilters(end=datetime(2026, 1, 1, tzinfo=UTC), event_type="like"),
            " WHERE event_time < $1 AND event_type = $2",
            [datetime(2026, 1, 1, tzinfo=UTC), "like"],
        ),
        (
            EventFilters(start=datetime(2026, 1, 1, tzinfo=UTC), funnel_stage="top"),
            " WHERE event_time >= $1 AND funnel_stage = $2",
            [datetime(2026, 1, 1, tzinfo=UTC), "top"],
        ),
        (
            EventFilters(source="tiktok", funnel_stage="top", event_type="share"),
            " WHERE source = $1 AND funnel_stage = $2 AND event_type = $3",
            ["tiktok", "top", "share"],
        ),
    ],
)
def test_some_filters_are_numbered_from_one(
    filters: EventFilters, expected_where: str, expected_params: list[object]
) -> None:
    assert where_clause(filters) == (expected_where, expected_params)


def test_values_never_appear_in_the_sql() -> None:
    where, params = where_clause(EventFilters(source="x'; DROP TABLE events; --"))
    assert "DROP" not in where
    assert params == ["x'; DROP TABLE events; --"]


@pytest.mark.parametrize("campaign_id", ["", "x" * 513, "cmp\x00"])
def test_a_campaign_id_that_cannot_be_stored_is_a_400_naming_it(campaign_id: str) -> None:
    with pytest.raises(InvalidParameter) as caught:
        revenue_filters(None, None, None, campaign_id)
    assert "campaignId" in caught.value.message
