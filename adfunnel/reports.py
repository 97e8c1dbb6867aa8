"""Report parameters and answers (SPEC §4 reporter), kept apart from HTTP and SQL."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Context, Decimal, localcontext
from fractions import Fraction
from typing import Any, Protocol

from adfunnel.errors import InvalidParameter
from adfunnel.schema import EVENT_TYPES, SOURCES, parse_timestamp
from adfunnel.storage import AGE_BUCKETS, FOLLOWER_BUCKETS, EventFilters, FollowerStats

INTERVALS = ("minute", "hour", "day")


class Row(Protocol):
    """A result row (asyncpg's Record, or a dict in tests)."""

    def __getitem__(self, key: str) -> Any: ...


def parse_bound(name: str, value: str | None) -> datetime | None:
    """A time bound given as ISO-8601 (no offset: UTC); InvalidParameter naming `name`."""
    if value is None:
        return None
    try:
        return parse_timestamp(value)
    except ValueError as error:
        raise InvalidParameter(
            f"{name}: {error}", [{"parameter": name, "message": str(error)}]
        ) from None


def _bad(name: str, message: str) -> InvalidParameter:
    return InvalidParameter(f"{name}: {message}", [{"parameter": name, "message": message}])


def event_filters(
    start: str | None,
    end: str | None,
    source: str | None,
    funnel_stage: str | None,
    event_type: str | None,
) -> EventFilters:
    """Validated filters; every problem names its query parameter."""
    filters = EventFilters(
        parse_bound("from", start), parse_bound("to", end), source, funnel_stage, event_type
    )
    if source is not None and source not in SOURCES:
        raise _bad("source", f"{source!r} is not one of {', '.join(SOURCES)}")
    if funnel_stage is not None and funnel_stage not in ("top", "bottom"):
        raise _bad("funnelStage", f"{funnel_stage!r} is not one of top, bottom")
    if event_type is not None:
        sources = [source] if source else list(SOURCES)
        known = {t for s in sources for stage in EVENT_TYPES[s].values() for t in stage}
        if event_type not in known:
            of = f"a {source} event type" if source else "an event type of any source"
            raise _bad("eventType", f"{event_type!r} is not {of}")
        if funnel_stage is not None and not any(
            event_type in EVENT_TYPES[s][funnel_stage] for s in sources
        ):
            raise _bad("eventType", f"{event_type!r} is not a {funnel_stage}-funnel event type")
    if filters.start and filters.end and filters.start >= filters.end:
        raise _bad("from", "must be earlier than 'to'")
    return filters


def revenue_filters(
    start: str | None, end: str | None, source: str | None, campaign_id: str | None
) -> EventFilters:
    """Validated revenue filters; `campaignId` narrows to Facebook (TikTok has no campaigns)."""
    base = event_filters(start, end, source, None, None)
    if campaign_id is not None and not 0 < len(campaign_id) <= 512:
        raise _bad("campaignId", "must be 1 to 512 characters")
    if campaign_id is not None and "\x00" in campaign_id:
        # PostgreSQL text cannot hold NUL: no stored campaign has one.
        raise _bad("campaignId", "must not contain NUL characters")
    return EventFilters(base.start, base.end, base.source, campaign_id=campaign_id)


def interval_param(value: str | None) -> str | None:
    """The series interval, or None for no series."""
    if value is not None and value not in INTERVALS:
        raise _bad("interval", f"{value!r} is not one of {', '.join(INTERVALS)}")
    return value


def filters_echo(filters: EventFilters, interval: str | None = None) -> dict[str, Any]:
    """The `filters` object of an answer: what was applied, in the request's names."""
    echo: dict[str, Any] = {
        "from": filters.start.isoformat() if filters.start else None,
        "to": filters.end.isoformat() if filters.end else None,
        "source": filters.source,
        "funnelStage": filters.funnel_stage,
        "eventType": filters.event_type,
    }
    if interval is not None:
        echo["interval"] = interval
    return echo


def iso_utc(value: datetime) -> str:
    """ISO-8601 with a Z, like the publisher's timestamps."""
    return value.isoformat().replace("+00:00", "Z")


def replay_state(row: Row) -> dict[str, Any] | None:
    """A rejected row's last replay (`adfunnel replay`), or None when it was never replayed."""
    if row["replayed_at"] is None:
        return None
    return {
        "replayedAt": iso_utc(row["replayed_at"]),
        "correlationId": row["replay_correlation_id"],
        "outcome": row["replay_outcome"],
    }


_CENT = Decimal("0.01")


def money(value: Decimal | None) -> str:
    """Exact amount as a two-decimal string; half-up, as money is rounded."""
    return str((value or Decimal(0)).quantize(_CENT, rounding=ROUND_HALF_UP))


def revenue_answer(
    filters: EventFilters,
    groups: Sequence[Row],
    series: Sequence[Row] | None,
    interval: str | None,
) -> dict[str, Any]:
    """The `/reports/revenue` body from per-(source, campaign) groups and an optional series."""
    with localcontext(Context(prec=100)):  # sums of 30-digit amounts stay exact
        return _revenue_answer(filters, groups, series, interval)


def _revenue_answer(
    filters: EventFilters,
    groups: Sequence[Row],
    series: Sequence[Row] | None,
    interval: str | None,
) -> dict[str, Any]:
    by_source: dict[str, list[Any]] = {}
    by_campaign: dict[str, list[Any]] = {}
    for group in groups:
        for key, table in ((group["source"], by_source), (group["campaign_id"], by_campaign)):
            if key is None:
                continue
            entry = table.setdefault(key, [Decimal(0), 0])
            entry[0] += group["revenue"]
            entry[1] += group["transactions"]
    sources = [filters.source] if filters.source else list(SOURCES)
    for source in sources:
        by_source.setdefault(source, [Decimal(0), 0])

    def listing(table: dict[str, list[Any]], name: str) -> list[dict[str, Any]]:
        ordered = sorted(table.items(), key=lambda kv: (-kv[1][0], kv[0]))
        return [
            {name: key, "revenue": money(revenue), "transactions": count}
            for key, (revenue, count) in ordered
        ]

    total = sum((v[0] for v in by_source.values()), Decimal(0))
    echo = filters_echo(filters, interval)
    for name in ("funnelStage", "eventType"):
        echo.pop(name)
    echo["campaignId"] = filters.campaign_id
    answer: dict[str, Any] = {
        "filters": echo,
        "total": money(total),
        "transactions": sum(v[1] for v in by_source.values()),
        "bySource": listing(by_source, "source"),
        "byCampaign": listing(by_campaign, "campaignId"),
    }
    if series is not None:
        answer["series"] = [
            {
                "bucket": iso_utc(row["bucket"].replace(tzinfo=UTC)),
                "revenue": money(row["revenue"]),
                "transactions": row["transactions"],
            }
            for row in series
        ]
    return answer


def _ranked(counts: dict[Any, int], name: str | tuple[str, ...]) -> list[dict[str, Any]]:
    names = (name,) if isinstance(name, str) else name
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], tuple(str(k) for k in kv[0])))
    return [{**dict(zip(names, key, strict=True)), "users": users} for key, users in ordered]


def _by_dim(rows: Sequence[Row]) -> dict[str, dict[Any, int]]:
    groups: dict[str, dict[Any, int]] = {}
    for row in rows:
        key = (row["key1"],) if row["dim"] != "city" else (row["key1"], row["key2"])
        groups.setdefault(row["dim"], {})[key] = int(row["users"])
    return groups


def facebook_section(rows: Sequence[Row]) -> dict[str, Any]:
    """The `facebook` part of `/reports/demographics` from (dim, key1, key2, users) rows."""
    groups = _by_dim(rows)
    found = groups.get("age", {})
    ages = {bucket: found.get((bucket,), 0) for bucket in AGE_BUCKETS}
    if not ages["0-12"]:
        del ages["0-12"]  # the publisher's audience starts at 13; show the bucket only if used
    return {
        # Every event has exactly one age bucket: their sum is the number of users.
        "users": sum(found.values()),
        "age": [{"bucket": bucket, "users": count} for bucket, count in ages.items()],
        "gender": _ranked(groups.get("gender", {}), "gender"),
        "countries": _ranked(groups.get("country", {}), "country"),
        "cities": _ranked(groups.get("city", {}), ("country", "city")),
    }


def _number(value: Any) -> float | int | None:
    if value is None:
        return None
    number = float(value)
    return int(number) if number.is_integer() else round(number, 2)


def tiktok_section(followers: FollowerStats, engagement: Sequence[Row]) -> dict[str, Any]:
    """The `tiktok` part of `/reports/demographics`."""
    groups = _by_dim(engagement)
    average = Fraction(followers.total) / followers.counted if followers.counted else None
    return {
        "users": followers.users,
        "followers": {
            # min and max are counts: exact integers; avg and median are statistics.
            "min": followers.minimum,
            "max": followers.maximum,
            "avg": _number(average),
            "median": _number(followers.median),
        },
        "followerBuckets": [
            {"bucket": b, "users": followers.buckets.get(b, 0)} for b in FOLLOWER_BUCKETS
        ],
        "devices": _ranked(groups.get("device", {}), "device"),
        "countries": _ranked(groups.get("country", {}), "country"),
    }
