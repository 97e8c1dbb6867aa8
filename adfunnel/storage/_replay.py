"""Replay of rejected events (SPEC §11): which rows to send again, and what became of them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import asyncpg

from adfunnel.storage._events import stored_traces
from adfunnel.storage._filters import EventFilters, Params, filter_conditions, range_conditions

if TYPE_CHECKING:
    from adfunnel.storage._database import Conn


@dataclass(frozen=True, slots=True)
class ReplaySelection:
    """Which rejected rows a replay takes: received in [start, end), from `source`, with a
    reason containing `reason`; rows already stored or found duplicate by an earlier replay
    only with `again`."""

    start: datetime | None = None
    end: datetime | None = None
    source: str | None = None
    reason: str | None = None
    again: bool = False


def _conditions(selection: ReplaySelection, params: Params) -> list[str]:
    received = EventFilters(selection.start, selection.end, selection.source)
    conditions = [
        *range_conditions(received, params, "received_at"),
        *filter_conditions(received, params),
    ]
    if selection.reason:
        conditions.append(f"strpos(reason, {params.add(selection.reason)}) > 0")
    if not selection.again:
        # A row whose events were stored (or found stored) needs no second trip; one that
        # was rejected again may be replayed with other edits.
        conditions.append("(replay_outcome IS NULL OR replay_outcome LIKE 'rejected%')")
    return conditions


async def count_replayable(conn: Conn, selection: ReplaySelection) -> int:
    """How many rows the selection takes."""
    params = Params()
    where = " AND ".join(_conditions(selection, params)) or "TRUE"
    statement = f"SELECT count(*) FROM rejected_events WHERE {where}"
    return int(await conn.fetchval(statement, *params.values))


async def replayable(
    conn: Conn, selection: ReplaySelection, *, after_id: int, limit: int
) -> list[asyncpg.Record]:
    """The next `limit` rows of the selection after `after_id`, in id order: each row's id,
    eventId, reason and its event as JSON text (the payload, or the raw text kept when it
    was not JSON)."""
    params = Params()
    conditions = [f"id > {params.add(after_id)}", *_conditions(selection, params)]
    return list(
        await conn.fetch(
            "SELECT id, event_id, reason, coalesce(payload::text, raw) AS event"
            f" FROM rejected_events WHERE {' AND '.join(conditions)}"
            f" ORDER BY id LIMIT {params.add(limit)}",
            *params.values,
        )
    )


async def record_replays(
    conn: Conn, ids: Sequence[int], correlation_id: str, outcomes: Sequence[str]
) -> None:
    """Mark rows replayed now, under `correlation_id`, each with its outcome."""
    await conn.execute(
        "UPDATE rejected_events r SET replayed_at = now(), replay_correlation_id = $3,"
        " replay_outcome = o.outcome"
        " FROM unnest($1::bigint[], $2::text[]) AS o (id, outcome) WHERE r.id = o.id",
        list(ids),
        list(outcomes),
        correlation_id,
    )


async def stored_under(conn: Conn, event_ids: Sequence[str]) -> dict[str, str | None]:
    """eventId → the correlation id it is stored under, for those of `event_ids` stored."""
    rows = await stored_traces(conn, event_ids)
    return {row["event_id"]: row["correlation_id"] for row in rows}
