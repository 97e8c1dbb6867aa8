"""Report parameters and answers (SPEC §4 reporter), kept apart from HTTP and SQL."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from adfunnel.errors import InvalidParameter
from adfunnel.schema import EVENT_TYPES, SOURCES, parse_timestamp
from adfunnel.storage import EventFilters

INTERVALS = ("minute", "hour", "day")


def _time(name: str, value: str | None) -> datetime | None:
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
    filters = EventFilters(_time("from", start), _time("to", end), source, funnel_stage, event_type)
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
