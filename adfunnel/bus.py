"""The JetStream bus: stream and consumer layout, message encoding, publishing.

One message carries many events of one subject (`<prefix>.<source>.<stage>.<type>`), as the
lines the writers COPY into PostgreSQL. Its `Nats-Msg-Id` is a digest of the event ids it
carries, so a re-sent identical batch is recognised by JetStream inside the duplicate
window; the database's unique `event_id` makes storage exactly-once forever. Rejected
events travel on `<prefix>.rejected` so that they reach the rejected table through the same
durable path.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError

from adfunnel.errors import BusUnavailable
from adfunnel.schema import Accepted, Rejected, dump_json
from adfunnel.settings import Settings
from adfunnel.storage import copy_row

LANES = ("facebook", "tiktok", "rejected")
HEADER_CORRELATION = "X-Correlation-Id"
HEADER_RECEIVED_AT = "X-Received-At"
HEADER_COUNT = "X-Event-Count"
HEADER_MSG_ID = "Nats-Msg-Id"


def lane_filter(settings: Settings, lane: str) -> str:
    """The subject filter of a lane's durable consumer."""
    if lane == "rejected":
        return f"{settings.nats_subject_prefix}.rejected"
    return f"{settings.nats_subject_prefix}.{lane}.>"


def event_subject(settings: Settings, source: str, funnel_stage: str, event_type: str) -> str:
    """The subject an accepted event travels on, e.g. `events.facebook.top.ad.view`."""
    return f"{settings.nats_subject_prefix}.{source}.{funnel_stage}.{event_type}"


def stream_config(settings: Settings) -> StreamConfig:
    """File-backed work queue: acked messages leave the stream, the backlog is bounded."""
    return StreamConfig(
        name=settings.nats_stream,
        subjects=[f"{settings.nats_subject_prefix}.>"],
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        discard=DiscardPolicy.NEW,
        max_bytes=settings.stream_max_bytes,
        duplicate_window=settings.duplicate_window_s,
        max_msg_size=settings.max_message_bytes + 64 * 1024,
        num_replicas=settings.stream_replicas,
    )


def consumer_config(settings: Settings, lane: str) -> ConsumerConfig:
    """Durable pull consumer of one lane, shared by all consumer actors of that lane."""
    return ConsumerConfig(
        durable_name=settings.durable_name(lane),
        filter_subject=lane_filter(settings, lane),
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        max_deliver=max(settings.max_deliver, settings.outage_max_deliver),
        ack_wait=settings.ack_wait_s,
        max_ack_pending=10_000,
        max_waiting=512,
    )


async def connect(url: str, *, name: str) -> NATS:
    """Connect with endless reconnects: an outage is answered with 503, not a restart."""
    return await nats.connect(
        servers=[url],
        name=name,
        connect_timeout=2,
        reconnect_time_wait=0.5,
        max_reconnect_attempts=-1,
        allow_reconnect=True,
    )


async def ensure_topology(js: JetStreamContext, settings: Settings) -> None:
    """Create or update the stream and every lane's durable consumer; safe to repeat."""
    config = stream_config(settings)
    try:
        await js.add_stream(config)
    except BadRequestError:
        await js.update_stream(config)
    for lane in LANES:
        await js.add_consumer(settings.nats_stream, consumer_config(settings, lane))


@dataclass(slots=True)
class Chunk:
    """One bus message to publish: its subject, body, headers and how many events it holds."""

    subject: str
    body: bytes
    headers: dict[str, str]
    count: int


def _chunks(
    items: Sequence[tuple[str, bytes]], max_items: int, max_bytes: int
) -> Iterator[list[tuple[str, bytes]]]:
    current: list[tuple[str, bytes]] = []
    size = 0
    for item in items:
        if current and (len(current) >= max_items or size + len(item[1]) + 1 > max_bytes):
            yield current
            current, size = [], 0
        current.append(item)
        size += len(item[1]) + 1
    if current:
        yield current


def encode_batch(
    settings: Settings,
    accepted: Iterable[Accepted],
    rejected: Iterable[tuple[int, Rejected]],
    *,
    correlation_id: str,
    received_at: datetime,
) -> list[Chunk]:
    """Group a request's events by subject and cut them into bounded messages.

    An event travels as the line the writers COPY (`storage.copy_row`): its typed columns,
    payload and key; what all its events share (received time and correlation id, in the
    message's headers, and the stream sequence JetStream gives it) travels once per message.
    A rejection travels as a JSON line with its reason, index and payload.
    """
    base = {HEADER_CORRELATION: correlation_id, HEADER_RECEIVED_AT: received_at.isoformat()}
    # Grouped by the routing keys, the models' own literals (their hashes are cached): a
    # subject is spelled once per kind of event, not once per event.
    by_kind: dict[tuple[str, str, str], list[tuple[str, bytes]]] = {}
    for event in accepted:
        line = copy_row(event.row, event.payload)
        kind = (event.source, event.funnel_stage, event.event_type)
        by_kind.setdefault(kind, []).append((event.event_id, line))
    by_subject = {event_subject(settings, *kind): lines for kind, lines in by_kind.items()}
    rejected_subject = lane_filter(settings, "rejected")
    by_subject[rejected_subject] = [
        # Rejections are never "the same message again": each message gets a fresh id.
        (
            uuid.uuid4().hex,
            dump_json(
                {
                    "index": index,
                    "eventId": item.event_id,
                    "reason": item.reason,
                    "payload": item.payload,
                }
            )
            + b"\n",
        )
        for index, item in rejected
    ]
    chunks: list[Chunk] = []
    for subject, lines in by_subject.items():
        for part in _chunks(lines, settings.events_per_message, settings.max_message_bytes):
            # Length-prefixed, so no two different id lists can hash alike.
            keyed = "".join(f"{len(key)}:{key}" for key, _ in part)
            digest = hashlib.sha256(keyed.encode("utf-8", "surrogatepass")).hexdigest()
            headers = {**base, HEADER_MSG_ID: digest[:40], HEADER_COUNT: str(len(part))}
            chunks.append(Chunk(subject, b"".join(line for _, line in part), headers, len(part)))
    return chunks


def message_events(headers: dict[str, str] | None) -> int:
    """How many events a fetched message says it carries (1 when it does not say)."""
    try:
        return max(1, int((headers or {}).get(HEADER_COUNT, 1)))
    except ValueError:
        return 1


def decode_lines(body: bytes) -> list[bytes]:
    """The lines of one bus message, without their line ends."""
    return [line for line in body.split(b"\n") if line]


@dataclass(frozen=True, slots=True)
class Delivery:
    """One fetched bus message as a writer sees it."""

    lane: str
    body: bytes
    msg_id: str
    correlation_id: str | None
    received_at: str
    stream_seq: int
    num_delivered: int


@dataclass(slots=True)
class PublishResult:
    """What JetStream acknowledged for one request."""

    events: int = 0
    duplicate_events: int = 0
    sequences: list[int] = field(default_factory=list)


async def publish(
    js: JetStreamContext, nc: NATS, settings: Settings, chunks: Sequence[Chunk]
) -> PublishResult:
    """Publish every chunk and wait for all acks; any failure means nothing is claimed."""
    if not nc.is_connected:
        raise BusUnavailable("not connected to NATS")

    async def one(chunk: Chunk) -> Any:
        return await js.publish(
            chunk.subject,
            chunk.body,
            timeout=settings.publish_timeout_s,
            stream=settings.nats_stream,
            headers=dict(chunk.headers),
        )

    results = await asyncio.gather(*(one(chunk) for chunk in chunks), return_exceptions=True)
    failures = [result for result in results if isinstance(result, BaseException)]
    if failures:
        raise BusUnavailable(f"JetStream did not acknowledge: {failures[0]!r}")
    outcome = PublishResult()
    acks: list[Any] = list(results)
    for chunk, ack in zip(chunks, acks, strict=True):
        outcome.events += chunk.count
        outcome.sequences.append(ack.seq)
        if ack.duplicate and chunk.subject != lane_filter(settings, "rejected"):
            outcome.duplicate_events += chunk.count
    return outcome
