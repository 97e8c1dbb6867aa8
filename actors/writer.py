"""Writer actors: turn fetched bus messages into rows and commit them in one transaction.

A batch that PostgreSQL refuses for a reason that will not go away (bad data, not a lost
connection) is split: message by message, then event by event, so one poison event lands
in the rejected store with its reason and the rest of its batch is still stored.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import asyncpg
import orjson
import structlog

from adfunnel import logs, metrics
from adfunnel.bus import Delivery, decode_lines, dump_json
from adfunnel.errors import StorageUnavailable
from adfunnel.schema import event_row, parse_timestamp
from adfunnel.settings import Settings
from adfunnel.storage import RejectedRow, StagedEvent, create_pool, insert_events, insert_rejected

log = structlog.get_logger(component="writer")

# SQLSTATE classes that say "try again later" rather than "this data is bad":
# connection, resources, operator intervention, transaction rollback, system error.
_TRANSIENT_CLASSES = ("08", "53", "57", "40", "58", "XX")
_CONFLICT_RETRIES = 3


def is_transient(error: BaseException) -> bool:
    """True when retrying the same write later may succeed; anything else is bad data."""
    if isinstance(error, asyncpg.PostgresError):
        state = getattr(error, "sqlstate", None) or ""
        return state[:2] in _TRANSIENT_CLASSES
    return isinstance(error, OSError | TimeoutError | asyncpg.InterfaceError | StorageUnavailable)


@dataclass(slots=True)
class WriteResult:
    """What one `write` call did."""

    stored: int = 0
    duplicates: int = 0
    rejected: int = 0

    def add(self, other: WriteResult) -> None:
        self.stored += other.stored
        self.duplicates += other.duplicates
        self.rejected += other.rejected


@dataclass(slots=True)
class Decoded:
    """A delivery turned into rows; lines that cannot become rows are already rejections."""

    events: list[StagedEvent]
    rejected: list[RejectedRow]


def _received(delivery: Delivery) -> datetime:
    return parse_timestamp(delivery.received_at)


def _poison(delivery: Delivery, index: int, line: bytes, reason: str) -> RejectedRow:
    return RejectedRow(
        dedup_key=f"{delivery.msg_id}:{index}",
        event_id=None,
        source=delivery.lane if delivery.lane != "rejected" else None,
        reason=reason,
        batch_index=None,
        payload=None,
        raw=line.decode("utf-8", errors="replace"),
        correlation_id=delivery.correlation_id,
        received_at=_received(delivery),
    )


def decode(delivery: Delivery) -> Decoded:
    """Rows of one delivery: events for a source lane, rejections for the rejected lane."""
    out = Decoded([], [])
    received_at = _received(delivery)
    for index, line in enumerate(decode_lines(delivery.body)):
        try:
            item: Any = orjson.loads(line)
            if delivery.lane == "rejected":
                payload = item.get("payload")
                source = payload.get("source") if isinstance(payload, dict) else None
                out.rejected.append(
                    RejectedRow(
                        dedup_key=f"{delivery.msg_id}:{index}",
                        event_id=item.get("eventId"),
                        source=source if isinstance(source, str) else None,
                        reason=str(item["reason"]),
                        batch_index=item.get("index"),
                        payload=dump_json(payload).decode(),
                        raw=None,
                        correlation_id=delivery.correlation_id,
                        received_at=received_at,
                    )
                )
            else:
                out.events.append(
                    StagedEvent(
                        row=event_row(item),
                        payload=line.decode(),
                        correlation_id=delivery.correlation_id,
                        received_at=received_at,
                        stream_seq=delivery.stream_seq,
                    )
                )
        except Exception as error:  # noqa: BLE001  # any undecodable line is a poison event
            out.rejected.append(_poison(delivery, index, line, f"undecodable: {error!r}"[:500]))
    return out


class Writer:
    """One writer of the pool: a few connections, one transaction per batch."""

    def __init__(self, settings: Settings, database_url: str, index: int) -> None:
        logs.configure(settings.log_level)
        metrics.configure(settings.nats_stream)
        self.settings = settings
        self.database_url = database_url
        self.index = index
        self._pool: asyncpg.Pool | None = None

    async def _connection_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            try:
                self._pool = await create_pool(
                    self.database_url, size=self.settings.writer_connections
                )
            except (OSError, asyncpg.PostgresError) as error:
                raise StorageUnavailable(f"cannot connect to PostgreSQL: {error!r}") from error
        return self._pool

    async def pid(self) -> int:
        """The process id (for operators and fault tests)."""
        return os.getpid()

    async def ping(self) -> bool:
        """True when the writer can reach PostgreSQL."""
        try:
            pool = await self._connection_pool()
            await pool.fetchval("SELECT 1")
        except Exception:  # noqa: BLE001  # a health probe answers, it never raises
            return False
        return True

    async def write(self, deliveries: Sequence[Delivery]) -> WriteResult:
        """Commit every delivery's rows, or raise `StorageUnavailable` having committed none."""
        started = time.perf_counter()
        decoded = [decode(delivery) for delivery in deliveries]
        pool = await self._connection_pool()
        try:
            result = await self._write_retrying(pool, decoded)
        except Exception as error:
            if is_transient(error):
                raise StorageUnavailable(f"write failed: {error!r}") from error
            log.warning("batch refused, isolating", error=repr(error), messages=len(deliveries))
            result = WriteResult()
            for one in decoded:
                result.add(await self._write_isolated(pool, one))
        duration = time.perf_counter() - started
        metrics.writer_batch(
            deliveries[0].lane if deliveries else "none",
            result.stored + result.duplicates + result.rejected,
            duration,
        )
        log.info(
            "batch written",
            writer=self.index,
            messages=len(deliveries),
            stored=result.stored,
            duplicates=result.duplicates,
            rejected=result.rejected,
            correlation_ids=sorted({d.correlation_id for d in deliveries if d.correlation_id}),
            duration_ms=round(duration * 1000, 1),
        )
        return result

    async def _write_retrying(self, pool: asyncpg.Pool, decoded: Sequence[Decoded]) -> WriteResult:
        # A deadlock or serialization failure aborts one of two transactions; trying the
        # loser again at once is cheaper than a nak and a redelivery.
        for attempt in range(_CONFLICT_RETRIES):
            try:
                return await self._write_all(pool, decoded)
            except (asyncpg.DeadlockDetectedError, asyncpg.SerializationError):
                if attempt == _CONFLICT_RETRIES - 1:
                    raise
                await asyncio.sleep(0.05 * (attempt + 1))
        raise AssertionError("unreachable")

    async def _write_all(self, pool: asyncpg.Pool, decoded: Sequence[Decoded]) -> WriteResult:
        events = [event for one in decoded for event in one.events]
        rejected = [row for one in decoded for row in one.rejected]
        async with pool.acquire() as conn:
            try:
                async with conn.transaction():
                    stored = await insert_events(conn, events) if events else 0
                    await insert_rejected(conn, rejected)
            except Exception as error:
                # A backend that died mid-query can surface as a client-internal error;
                # a closed connection means an outage, never bad data.
                if conn.is_closed():
                    raise StorageUnavailable(f"connection lost: {error!r}") from error
                raise
        return WriteResult(stored, len(events) - stored, len(rejected))

    async def _write_isolated(self, pool: asyncpg.Pool, decoded: Decoded) -> WriteResult:
        try:
            return await self._write_all(pool, [decoded])
        except Exception as error:
            if is_transient(error):
                raise StorageUnavailable(f"write failed: {error!r}") from error
        result = WriteResult()
        for event in decoded.events:
            try:
                result.add(await self._write_all(pool, [Decoded([event], [])]))
            except Exception as error:
                if is_transient(error):
                    raise StorageUnavailable(f"write failed: {error!r}") from error
                row = RejectedRow(
                    dedup_key=f"poison:{event.row.event_id}",
                    event_id=event.row.event_id,
                    source=event.row.source,
                    reason=f"storage: {error.__class__.__name__}: {error}"[:500],
                    batch_index=None,
                    payload=None,
                    raw=event.payload,
                    correlation_id=event.correlation_id,
                    received_at=event.received_at,
                )
                result.add(await self._write_rejected_one(pool, row))
        for row in decoded.rejected:
            result.add(await self._write_rejected_one(pool, row))
        return result

    async def _write_rejected_one(self, pool: asyncpg.Pool, row: RejectedRow) -> WriteResult:
        async with pool.acquire() as conn:
            try:
                await insert_rejected(conn, [row])
            except Exception as error:
                if is_transient(error):
                    raise StorageUnavailable(f"write failed: {error!r}") from error
                # The payload itself is what PostgreSQL refuses (e.g. \u0000 in jsonb):
                # keep it as escaped text instead.
                text = row.raw if row.raw is not None else row.payload
                escaped = (text or "").encode("unicode_escape").decode("ascii")
                await insert_rejected(conn, [replace(row, payload=None, raw=escaped)])
        return WriteResult(rejected=1)

    async def dead_letter(self, delivery: Delivery, reason: str) -> WriteResult:
        """Move a message that can never be written to the rejected store, line by line."""
        why = f"undeliverable after {delivery.num_delivered} attempts: {reason}"[:500]
        rows = [
            _poison(delivery, index, line, why)
            for index, line in enumerate(decode_lines(delivery.body))
        ]
        pool = await self._connection_pool()
        result = WriteResult()
        for row in rows:
            result.add(await self._write_rejected_one(pool, row))
        log.warning("message dead-lettered", msg_id=delivery.msg_id, events=len(rows), reason=why)
        return result

    async def close(self) -> None:
        """Close the connections; in-flight writes finish first (pool.close waits)."""
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
