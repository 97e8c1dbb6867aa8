"""Writer actors: COPY fetched bus messages into PostgreSQL and commit them in one transaction.

The gateway already encoded every event as the COPY line it becomes, so a writer only adds
each message's stream sequence and forwards the bytes.

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
from adfunnel.bus import Delivery, decode_lines
from adfunnel.errors import StorageUnavailable
from adfunnel.schema import dump_json, parse_timestamp
from adfunnel.settings import Settings
from adfunnel.storage import (
    MessageTrace,
    RejectedRow,
    copy_event_id,
    copy_payload_text,
    create_pool,
    current_lines,
    insert_copy,
    insert_rejected,
    is_copy_line,
)

log = structlog.get_logger(component="writer")

# The SQLSTATE classes that belong to one row's data: a data exception (22: a value out of
# range, text PostgreSQL cannot store) and an integrity violation (23). Any other error from
# PostgreSQL would meet the next event just the same (read-only during a failover, a revoked
# privilege, a missing table, a full disk, a class not known here): an outage, which must
# never turn a valid event into a poison one.
_ROW_DATA_CLASSES = ("22", "23")
_CONFLICT_RETRIES = 3
# Can this session write what the writers write? `SELECT 1` answers during a failover's
# read-only spell and without the INSERT privilege.
_WRITABLE = (
    "SELECT NOT pg_is_in_recovery() AND current_setting('transaction_read_only') = 'off'"
    " AND has_table_privilege('events', 'INSERT') AND has_table_privilege('events', 'UPDATE')"
    " AND has_table_privilege('rejected_events', 'INSERT')"
)


def is_transient(error: BaseException) -> bool:
    """True when the error is not about the data written: retrying later may succeed."""
    if isinstance(error, asyncpg.PostgresError):
        state = getattr(error, "sqlstate", None) or ""
        return state[:2] not in _ROW_DATA_CLASSES
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
    """A delivery made ready to write: COPY lines of events (what the gateway encoded, in
    this code's layout) and their message's trace, or rows of the rejected store."""

    lines: bytes
    count: int
    rejected: list[RejectedRow]
    lane: str
    msg_id: str
    trace: MessageTrace


def _received(delivery: Delivery) -> datetime:
    return parse_timestamp(delivery.received_at)


def _poison(delivery: Delivery, index: int, line: bytes, reason: str) -> RejectedRow:
    events = delivery.lane != "rejected"
    return RejectedRow(
        dedup_key=f"{delivery.msg_id}:{index}",
        event_id=copy_event_id(line) if events and is_copy_line(line) else None,
        source=delivery.lane if events else None,
        reason=reason,
        batch_index=None,
        payload=None,
        # An event line keeps the event's JSON; anything else is kept as it came.
        raw=copy_payload_text(line) if events else line.decode("utf-8", errors="replace"),
        correlation_id=delivery.correlation_id,
        received_at=_received(delivery),
    )


def decode(delivery: Delivery) -> Decoded:
    """What one delivery writes: its events' COPY lines, or its rejections' rows."""
    received_at = _received(delivery)
    trace = MessageTrace(received_at, delivery.stream_seq, delivery.correlation_id)
    out = Decoded(b"", 0, [], delivery.lane, delivery.msg_id, trace)
    if delivery.lane != "rejected":
        out.lines = current_lines(delivery.body)
        out.count = delivery.body.count(b"\n")
        return out
    for index, line in enumerate(decode_lines(delivery.body)):
        try:
            item: Any = orjson.loads(line)
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
        """True when the writer can reach PostgreSQL and write there."""
        try:
            pool = await self._connection_pool()
            return bool(await pool.fetchval(_WRITABLE))
        except Exception:  # noqa: BLE001  # a health probe answers, it never raises
            return False

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
        chunks = [one.lines for one in decoded if one.count]
        traces = [one.trace for one in decoded if one.count]
        events = sum(one.count for one in decoded)
        rejected = [row for one in decoded for row in one.rejected]
        async with pool.acquire() as conn:
            try:
                async with conn.transaction():
                    stored = await insert_copy(conn, chunks, traces) if chunks else 0
                    await insert_rejected(conn, rejected)
            except Exception as error:
                # A backend that died mid-query can surface as a client-internal error;
                # a closed connection means an outage, never bad data.
                if conn.is_closed():
                    raise StorageUnavailable(f"connection lost: {error!r}") from error
                raise
        return WriteResult(stored, events - stored, len(rejected))

    async def _write_isolated(self, pool: asyncpg.Pool, decoded: Decoded) -> WriteResult:
        try:
            return await self._write_all(pool, [decoded])
        except Exception as error:
            if is_transient(error):
                raise StorageUnavailable(f"write failed: {error!r}") from error
        result = WriteResult()
        for index, line in enumerate(decoded.lines.splitlines(keepends=True)):
            one = replace(decoded, lines=line, count=1, rejected=[])
            try:
                result.add(await self._write_all(pool, [one]))
            except Exception as error:
                if is_transient(error):
                    raise StorageUnavailable(f"write failed: {error!r}") from error
                sent = line.rstrip(b"\n")
                event_id = copy_event_id(sent) if is_copy_line(sent) else None
                row = RejectedRow(
                    # One key per event (or per line of a message, for a broken line), so a
                    # redelivery finds the rejection already stored.
                    dedup_key=f"poison:{event_id}" if event_id else f"{decoded.msg_id}:{index}",
                    event_id=event_id,
                    source=decoded.lane,
                    reason=f"storage: {error.__class__.__name__}: {error}"[:500],
                    batch_index=None,
                    payload=None,
                    raw=copy_payload_text(sent),
                    correlation_id=decoded.trace.correlation_id,
                    received_at=decoded.trace.received_at,
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
