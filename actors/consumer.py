"""Consumer actors: one per lane (a source, or the rejected lane) pulling its durable consumer.

Each actor runs one fetch loop per writer so that every writer can have a batch in flight.
A message is acked only after its writer committed; a failed batch is retried message by
message, a failed message is nak'ed with a growing delay, and a message on its last
allowed delivery goes to the rejected store instead of looping forever. More actors of a
lane bind the same durable consumer, so JetStream spreads the messages between them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Sequence
from typing import Any

import nats.errors
import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from adfunnel import logs, metrics
from adfunnel.bus import (
    HEADER_CORRELATION,
    HEADER_MSG_ID,
    HEADER_RECEIVED_AT,
    Delivery,
    connect,
    message_events,
)
from adfunnel.errors import StorageUnavailable
from adfunnel.settings import Settings

log = structlog.get_logger(component="consumer")

_IDLE_FETCH_TIMEOUT_S = 1.0
_LAG_PERIOD_S = 5.0


def backoff_s(num_delivered: int) -> float:
    """Redelivery delay after the n-th failed delivery: 0.5 s doubling, at most 30 s."""
    return float(min(30.0, 0.5 * 2 ** max(0, num_delivered - 1)))


def to_delivery(lane: str, msg: Msg) -> Delivery:
    """What a writer needs of one fetched message."""
    headers = msg.headers or {}
    metadata = msg.metadata
    return Delivery(
        lane=lane,
        body=msg.data,
        msg_id=headers.get(HEADER_MSG_ID, f"seq-{metadata.sequence.stream}"),
        correlation_id=headers.get(HEADER_CORRELATION),
        received_at=headers.get(HEADER_RECEIVED_AT, "1970-01-01T00:00:00+00:00"),
        stream_seq=metadata.sequence.stream,
        num_delivered=metadata.num_delivered,
    )


async def gather(
    sub: JetStreamContext.PullSubscription, msgs: list[Msg], settings: Settings
) -> list[Msg]:
    """`msgs` and what else arrives within `batch_linger_s`, until the batch holds
    `batch_target_events` or `fetch_batch_messages`: fewer, fuller batches for the writers."""
    most = settings.fetch_batch_messages
    deadline = time.monotonic() + settings.batch_linger_s
    events = sum(message_events(msg.headers) for msg in msgs)
    while len(msgs) < most and events < settings.batch_target_events:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            more = await sub.fetch(most - len(msgs), timeout=left)
        except (nats.errors.TimeoutError, TimeoutError):
            break
        except Exception as error:  # noqa: BLE001  # NATS away: write what is in hand
            log.warning("fetch failed", error=repr(error))
            break
        msgs += more
        events += sum(message_events(msg.headers) for msg in more)
    return msgs


class Consumer:
    """Pulls one lane's durable consumer and hands batches to the writer pool."""

    # Ray actors support `async def __init__`; type checkers expect `-> None` all the same.
    async def __init__(  # type: ignore[misc]
        self,
        settings: Settings,
        nats_url: str,
        lane: str,
        writers: Sequence[Any],
        index: int = 0,
    ) -> None:
        logs.configure(settings.log_level)
        metrics.configure(settings.nats_stream)
        self.settings = settings
        self.nats_url = nats_url
        self.lane = lane
        self.writers = list(writers)
        self.index = index
        self._nc: NATS | None = None
        self._js: JetStreamContext | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._lag_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._storage_ok = True
        self._counts = {"messages": 0, "stored": 0, "duplicates": 0, "rejected": 0}
        # Started by the constructor, not by the owner: when the process dies, Ray restarts
        # the actor by running the constructor again, and the loops must come back with it.
        self._started = asyncio.get_running_loop().create_task(self._start())

    async def start(self) -> None:
        """Returns once the fetch loops run (they start with the actor)."""
        await asyncio.shield(self._started)

    async def _start(self) -> None:
        while self._nc is None:
            try:
                self._nc = await connect(self.nats_url, name=f"consumer-{self.lane}-{self.index}")
            except Exception as error:  # noqa: BLE001  # NATS not up yet: keep trying
                log.warning("nats connect failed", lane=self.lane, error=repr(error))
                await asyncio.sleep(1.0)
        self._js = self._nc.jetstream()
        for slot, writer in enumerate(self.writers):
            sub = await self._js.pull_subscribe_bind(
                durable=self.settings.durable_name(self.lane), stream=self.settings.nats_stream
            )
            self._tasks.append(asyncio.create_task(self._loop(slot, sub, writer)))
        self._lag_task = asyncio.create_task(self._report_lag())
        log.info("consumer started", lane=self.lane, index=self.index, loops=len(self._tasks))

    async def _loop(self, slot: int, sub: JetStreamContext.PullSubscription, writer: Any) -> None:
        while not self._stopping:
            if not self._storage_ok:
                self._storage_ok = await writer.ping.remote()
                if not self._storage_ok:
                    await asyncio.sleep(1.0)
                    continue
            try:
                msgs = await sub.fetch(
                    self.settings.fetch_batch_messages, timeout=_IDLE_FETCH_TIMEOUT_S
                )
            except (nats.errors.TimeoutError, TimeoutError):
                continue
            except Exception as error:  # noqa: BLE001  # NATS away: the client reconnects
                log.warning("fetch failed", lane=self.lane, error=repr(error))
                await asyncio.sleep(0.5)
                continue
            if msgs:
                await self._handle(slot, await gather(sub, msgs, self.settings), writer)

    async def _handle(self, slot: int, msgs: list[Msg], writer: Any) -> None:
        started = time.perf_counter()
        deliveries = [to_delivery(self.lane, msg) for msg in msgs]
        try:
            result = await writer.write.remote(deliveries)
        except Exception as error:  # noqa: BLE001  # any failure: nothing committed, redeliver
            if len(msgs) > 1 and not isinstance(error, StorageUnavailable):
                # One message may fail every time (a writer that crashes on it): settle the
                # messages one by one, so the others are stored now and only that one is
                # redelivered, and dead-lettered alone when it runs out of deliveries.
                log.warning("batch failed, isolating", lane=self.lane, messages=len(msgs))
                for msg in msgs:
                    await self._handle(slot, [msg], writer)
                return
            await self._failed(msgs, deliveries, writer, error)
            return
        for msg in msgs:
            await msg.ack()
        if self.lane in metrics.COLLECTOR_PREFIX:
            metrics.collector_settled(self.lane, result.stored, result.duplicates, result.rejected)
        self._counts["messages"] += len(msgs)
        self._counts["stored"] += result.stored
        self._counts["duplicates"] += result.duplicates
        self._counts["rejected"] += result.rejected
        log.info(
            "batch acked",
            lane=self.lane,
            slot=slot,
            messages=len(msgs),
            events=result.stored + result.duplicates + result.rejected,
            stored=result.stored,
            correlation_ids=sorted({d.correlation_id for d in deliveries if d.correlation_id}),
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
        )

    async def _failed(
        self, msgs: list[Msg], deliveries: list[Delivery], writer: Any, error: BaseException
    ) -> None:
        # Ray re-raises a remote exception as a subclass of its cause, so isinstance works.
        storage_down = isinstance(error, StorageUnavailable)
        if storage_down:
            self._storage_ok = False
        log.warning("batch failed", lane=self.lane, messages=len(msgs), error=repr(error)[:300])
        for msg, delivery in zip(msgs, deliveries, strict=True):
            poisoned = delivery.num_delivered >= self.settings.max_deliver
            if poisoned and not storage_down:
                with contextlib.suppress(Exception):
                    moved = await writer.dead_letter.remote(delivery, repr(error)[:500])
                    await msg.ack()
                    if self.lane in metrics.COLLECTOR_PREFIX:
                        metrics.collector_failed(self.lane, "undeliverable", moved.rejected)
                    continue
            await msg.nak(delay=backoff_s(delivery.num_delivered))

    async def _report_lag(self) -> None:
        while not self._stopping:
            state = await self._backlog()
            if "pending" in state:
                metrics.consumer_lag(self.lane, state["pending"], state["ack_pending"])
            await asyncio.sleep(_LAG_PERIOD_S)

    async def _backlog(self) -> dict[str, int]:
        if self._js is None or self._nc is None or not self._nc.is_connected:
            return {}
        with contextlib.suppress(Exception):
            info = await self._js.consumer_info(
                self.settings.nats_stream, self.settings.durable_name(self.lane), timeout=2
            )
            return {"pending": info.num_pending, "ack_pending": info.num_ack_pending}
        return {}

    async def status(self) -> dict[str, Any]:
        """Liveness and counters of this actor, with the durable consumer's backlog."""
        state: dict[str, Any] = {
            "lane": self.lane,
            "index": self.index,
            "pid": os.getpid(),
            "connected": bool(self._nc and self._nc.is_connected),
            "loops": sum(1 for task in self._tasks if not task.done()),
            "storage_ok": self._storage_ok,
            **self._counts,
            **await self._backlog(),
        }
        return state

    async def drain(self) -> None:
        """Stop fetching, let in-flight batches commit and ack, then close the connection."""
        self._stopping = True
        if self._lag_task is not None:
            self._lag_task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._nc is not None and not self._nc.is_closed:
            # The loops are done and their acks written: flush them out, then close.
            with contextlib.suppress(Exception):
                await self._nc.flush(timeout=5)
            await self._nc.close()
        log.info("consumer drained", lane=self.lane, index=self.index, **self._counts)
