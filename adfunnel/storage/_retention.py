"""Retention: raw events and rejected rows past the window leave in bounded batches (SPEC §10).

Each batch is a transaction of its own, found through the time index, so a run never holds
locks or grows a transaction with the size of what expired, and writers go on between
batches. The events' count rollups are kept (migration 0009), so whole buckets of an
expired range keep their numbers; the demographics follow the events that remain.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import asyncpg

if TYPE_CHECKING:
    from adfunnel.storage._database import Conn

# Rows are removed a day after the gateway stops accepting events of their time: an event
# accepted at the window's edge can wait in JetStream (an outage) before it is written, and
# the copy stored before it must still be there then, or it would be stored and counted again.
GRACE = timedelta(days=1)
_BATCH = 5_000
_DEADLOCK_RETRIES = 5
_EXPIRED_EVENTS = (
    "DELETE FROM events WHERE ctid = ANY(ARRAY("
    "SELECT ctid FROM events WHERE event_time < $1 LIMIT $2))"
)
_EXPIRED_REJECTED = (
    "DELETE FROM rejected_events WHERE id = ANY(ARRAY("
    "SELECT id FROM rejected_events WHERE received_at < $1 LIMIT $2))"
)

# A message's trace goes once the latest of its events has.
_EXPIRED_DELIVERIES = (
    "DELETE FROM deliveries WHERE ctid = ANY(ARRAY("
    "SELECT ctid FROM deliveries WHERE last_event_time < $1 LIMIT $2))"
)


@dataclass(frozen=True, slots=True)
class Expired:
    """What a retention run removed, or would remove (a dry run)."""

    before: datetime
    events: int
    rejected: int


def removal_horizon(cutoff: datetime) -> datetime:
    """Rows older than this go, for a gateway that refuses events older than `cutoff`."""
    return cutoff - GRACE


async def _delete_batches(conn: Conn, statement: str, before: datetime, batch: int) -> int:
    removed = 0
    while True:
        for attempt in range(_DEADLOCK_RETRIES):
            try:
                async with conn.transaction():
                    # The count rollups keep what expires (migration 0009).
                    await conn.execute("SET LOCAL adfunnel.retention = 'on'")
                    status = await conn.execute(statement, before, batch)
                break
            except asyncpg.DeadlockDetectedError:
                # A writer held rows of this batch in the other order: it goes first.
                if attempt == _DEADLOCK_RETRIES - 1:
                    raise
                await asyncio.sleep(0.1 * (attempt + 1))
        done = int(status.rsplit(" ", 1)[1])
        removed += done
        if done < batch:
            return removed


async def expire(
    conn: Conn, cutoff: datetime, *, dry_run: bool = False, batch: int = _BATCH
) -> Expired:
    """Remove events whose time, and rejected rows whose receipt, is past the retention
    window (`cutoff`, plus the grace); a dry run only counts them."""
    before = removal_horizon(cutoff)
    if dry_run:
        events = await conn.fetchval("SELECT count(*) FROM events WHERE event_time < $1", before)
        rejected = await conn.fetchval(
            "SELECT count(*) FROM rejected_events WHERE received_at < $1", before
        )
        return Expired(before, int(events), int(rejected))
    events = await _delete_batches(conn, _EXPIRED_EVENTS, before, batch)
    rejected = await _delete_batches(conn, _EXPIRED_REJECTED, before, batch)
    await _delete_batches(conn, _EXPIRED_DELIVERIES, before, batch)
    return Expired(before, events, rejected)
