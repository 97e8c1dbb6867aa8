"""Report filters as SQL conditions, and a time range cut into rollup buckets and raw edges."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any


@dataclass(frozen=True, slots=True)
class EventFilters:
    """Report filters; `start` inclusive, `end` exclusive, on event time."""

    start: datetime | None = None
    end: datetime | None = None
    source: str | None = None
    funnel_stage: str | None = None
    event_type: str | None = None
    campaign_id: str | None = None


# Revenue = purchaseAmount of Facebook checkout.complete and TikTok purchase (SPEC §4);
# migration 0002 spells the same rule in its rollup statement.
REVENUE_TYPES = (
    "((source = 'facebook' AND event_type = 'checkout.complete')"
    " OR (source = 'tiktok' AND event_type = 'purchase'))"
)
REVENUE_CONDITION = f"{REVENUE_TYPES} AND purchase_amount IS NOT NULL"


def where_clause(
    filters: EventFilters, *extra: str, time_column: str = "event_time"
) -> tuple[str, list[Any]]:
    """A parameterized WHERE clause for the filters, plus fixed `extra` conditions."""
    params = Params()
    conditions = [*extra, *range_conditions(filters, params, time_column)]
    conditions += filter_conditions(filters, params)
    return (" WHERE " + " AND ".join(conditions) if conditions else ""), params.values


def range_conditions(
    filters: EventFilters, params: Params, time_column: str = "event_time"
) -> list[str]:
    """`start` (inclusive) and `end` (exclusive) as conditions on `time_column`."""
    conditions = []
    if filters.start is not None:
        conditions.append(f"{time_column} >= {params.add(filters.start)}")
    if filters.end is not None:
        conditions.append(f"{time_column} < {params.add(filters.end)}")
    return conditions


class Params:
    """Numbered query parameters ($1, $2, …) collected while a statement is built."""

    def __init__(self) -> None:
        self.values: list[Any] = []

    def add(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


def filter_conditions(filters: EventFilters, params: Params) -> list[str]:
    """Equality filters other than time, shared by raw and rollup queries."""
    conditions = []
    for column, value in (
        ("source", filters.source),
        ("funnel_stage", filters.funnel_stage),
        ("event_type", filters.event_type),
        ("campaign_id", filters.campaign_id),
    ):
        if value is not None:
            conditions.append(f"{column} = {params.add(value)}")
    return conditions


GRAINS = ("day", "hour", "minute")
STEP = {"day": timedelta(days=1), "hour": timedelta(hours=1), "minute": timedelta(minutes=1)}
Segment = tuple[datetime | None, datetime | None]


def floor_to(moment: datetime, grain: str) -> datetime:
    moment = moment.astimezone(UTC)
    if grain == "day":
        return moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if grain == "hour":
        return moment.replace(minute=0, second=0, microsecond=0)
    return moment.replace(second=0, microsecond=0)


def ceil_to(moment: datetime, grain: str) -> datetime:
    floor = floor_to(moment, grain)
    return floor if floor == moment else floor + STEP[grain]


def plan_segments(
    start: datetime | None, end: datetime | None, grains: Sequence[str] = GRAINS
) -> dict[str, list[Segment]]:
    """Cover [start, end) with whole buckets of the coarsest grains that fit, finer grains
    towards the edges, and raw rows (key "raw") for what is left of a minute at each end."""
    plan: dict[str, list[Segment]] = {grain: [] for grain in (*grains, "raw")}

    def cover(lo: datetime | None, hi: datetime | None, level: int) -> None:
        if lo is not None and hi is not None and lo >= hi:
            return
        if level == len(grains):
            plan["raw"].append((lo, hi))
            return
        grain = grains[level]
        a = ceil_to(lo, grain) if lo is not None else None
        b = floor_to(hi, grain) if hi is not None else None
        if a is not None and b is not None and a >= b:
            cover(lo, hi, level + 1)
            return
        plan[grain].append((a, b))
        if lo is not None and a is not None:
            cover(lo, a, level + 1)
        if hi is not None and b is not None:
            cover(b, hi, level + 1)

    cover(start, end, 0)
    return plan


def grains_for(interval: str | None) -> tuple[str, ...]:
    # A series bucket must never be coarser than the rollup rows it is built from.
    return GRAINS if interval is None else GRAINS[GRAINS.index(interval) :]


def segment_condition(column: str, segments: list[Segment], params: Params) -> str:
    parts = []
    for lo, hi in segments:
        bounds = []
        if lo is not None:
            bounds.append(f"{column} >= {params.add(lo)}")
        if hi is not None:
            bounds.append(f"{column} < {params.add(hi)}")
        parts.append("(" + " AND ".join(bounds) + ")" if bounds else "TRUE")
    return "(" + " OR ".join(parts) + ")"
