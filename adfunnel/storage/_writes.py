"""The write path: events as COPY lines, one transaction per batch, and rejected rows.

Writes go through a per-connection temporary staging table: COPY is the fastest way in, and
`INSERT … SELECT DISTINCT ON … ON CONFLICT` then keeps one row per eventId: the earliest
received copy, inside the batch and against what is already stored.
"""

from __future__ import annotations

import binascii
import hashlib
import re
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import asyncpg
import zstandard

from adfunnel.schema import EventRow, parse_timestamp
from adfunnel.storage._payloads import compress, decompress, row_ids, time_text

if TYPE_CHECKING:
    from adfunnel.storage._database import Conn

EVENT_COLUMNS = EventRow._fields
# What a writer COPYs per event: the typed columns, the payload and the key the table is
# unique on (`event_key`), which the gateway encodes, its event time as microseconds since
# 1970 (a timestamp's text is the dearest field for PostgreSQL to read); then the
# number of its bus message in the batch, which `insert_copy` appends. What a message's
# events share, its received time and stream sequence (which order the copies of one
# eventId), correlation id and stored time, comes once per message: the first two are
# joined to its rows as they are stored, the rest is one `deliveries` row (migration 0015).
# Within one message, copies of an eventId keep the order of the COPY: the staging table's
# row order (`ctid`), since it is emptied by truncation at every commit, never vacuumed,
# and a COPY only appends to it. An identity column for that order cost PostgreSQL ~2,350
# instructions an event: a sequence step a row, and a column more to copy and sort.
LINE_COLUMNS = (*EVENT_COLUMNS, "payload", "event_key")
DELIVERY_COLUMNS = ("received_at", "stream_seq")
COPY_COLUMNS = (*LINE_COLUMNS, *DELIVERY_COLUMNS)
_STAGED_COLUMNS = (*("event_us" if c == "event_time" else c for c in LINE_COLUMNS), "message")
_STAGING_DDL = """
CREATE TEMP TABLE IF NOT EXISTS events_staging (
    event_id text COLLATE "C", event_us bigint, source text, funnel_stage text,
    event_type text, user_id text, purchase_amount numeric, campaign_id text, age integer,
    gender text, country text, city text, followers bigint, device text, payload bytea,
    event_key uuid, message integer
) ON COMMIT DELETE ROWS
"""


def _from_micros(column: str) -> str:
    """SQL of the time `column` holds in microseconds since 1970, exact over every year a
    timestamp may have: each product stays below 2^53."""
    return (
        f"timestamptz '1970-01-01 00:00:00+00' + ({column} / 1000000) * interval '1 second'"
        f" + ({column} % 1000000) * interval '1 microsecond'"
    )


# The batch's messages, numbered from 1 in the order of its chunks.
_MESSAGES = (
    "unnest($1::timestamptz[], $2::bigint[]) WITH ORDINALITY"
    " AS m (received_at, stream_seq, message)"
)
_DEADLOCK_RETRIES = 5
# The earliest received copy of an eventId wins, whatever order parallel writers commit in:
# a copy received later never replaces it, an earlier one that commits late does. Ordinary
# re-sends arrive later and change nothing. The table is unique on the eventId's key, and
# a stored row is replaced only by the same eventId: ids whose keys collide are never
# merged (the later is counted a duplicate). One statement, in key order, so a writer takes
# every event row it needs before its triggers take user and rollup rows: writers then
# always lock in the same order and never deadlock. Key order is also the primary key's:
# its pages are met one after another, not at random (in eventId order, PostgreSQL spent
# 2.4 us more per event).
# `xmax = 0` tells a new row from a replaced one.
_STORED_LIST = ", ".join(COPY_COLUMNS)
_STAGED_VALUES = ", ".join(
    (
        *(_from_micros("s.event_us") if c == "event_time" else f"s.{c}" for c in LINE_COLUMNS),
        *(f"m.{c}" for c in DELIVERY_COLUMNS),
    )
)
_UPSERT_STAGED = f"""
WITH written AS (
    INSERT INTO events AS e ({_STORED_LIST})
    SELECT DISTINCT ON (s.event_key)
        {_STAGED_VALUES}
    FROM events_staging s JOIN {_MESSAGES} ON m.message = s.message
    ORDER BY s.event_key, m.received_at, m.stream_seq, s.ctid
    ON CONFLICT (event_key) DO UPDATE
    SET ({_STORED_LIST}, stored_at, correlation_uuid, correlation_id, payload_json) = (
        {", ".join(f"EXCLUDED.{c}" for c in COPY_COLUMNS)}, NULL, NULL, NULL, NULL)
    WHERE (e.received_at, e.stream_seq) > (EXCLUDED.received_at, EXCLUDED.stream_seq)
        AND e.event_id = EXCLUDED.event_id
    RETURNING e.xmax = 0 AS new
)
SELECT count(*) FILTER (WHERE new) FROM written
"""
# One row per bus message of the batch, after its events: the stored time is then as late
# in the transaction as the events' own. A redelivered message keeps its first row.
_INSERT_DELIVERIES = f"""
INSERT INTO deliveries
    (received_at, stream_seq, correlation_uuid, correlation_id, last_event_time)
SELECT m.received_at, m.stream_seq, m.correlation_uuid, m.correlation_id,
    {_from_micros("s.last_us")}
FROM unnest($1::timestamptz[], $2::bigint[], $3::uuid[], $4::text[]) WITH ORDINALITY
    AS m (received_at, stream_seq, correlation_uuid, correlation_id, message)
JOIN (SELECT message, max(event_us) AS last_us FROM events_staging GROUP BY 1) s
    ON s.message = m.message
ON CONFLICT DO NOTHING
"""
_REJECTED_COLUMNS = (
    "dedup_key",
    "event_id",
    "source",
    "reason",
    "batch_index",
    "payload",
    "raw",
    "correlation_id",
    "received_at",
)
_INSERT_REJECTED = f"""
INSERT INTO rejected_events ({", ".join(_REJECTED_COLUMNS)})
SELECT * FROM unnest(
    $1::text[], $2::text[], $3::text[], $4::text[], $5::int[], $6::jsonb[], $7::text[],
    $8::text[], $9::timestamptz[]
)
ON CONFLICT (dedup_key) DO NOTHING
"""


@dataclass(frozen=True, slots=True)
class StagedEvent:
    """An accepted event ready to write: typed columns plus delivery metadata."""

    row: EventRow
    payload: str
    correlation_id: str | None
    received_at: datetime
    stream_seq: int | None


@dataclass(frozen=True, slots=True)
class MessageTrace:
    """What the events of one bus message share: kept once, as a `deliveries` row."""

    received_at: datetime
    stream_seq: int | None
    correlation_id: str | None


@dataclass(frozen=True, slots=True)
class RejectedRow:
    """One row of the rejected store; `dedup_key` makes redelivered rejections idempotent."""

    dedup_key: str
    event_id: str | None
    source: str | None
    reason: str
    batch_index: int | None
    payload: str | None
    raw: str | None
    correlation_id: str | None
    received_at: datetime


# NULL is the empty string in the writers' COPY: no column of an event may be empty (every
# text field has a minimum length of 1), and an empty field costs no escaping.
_NULL = ""
_COPY_SPECIAL = re.compile(r"[\\\t\n\r]")
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_COPY_FIELDS = len(EVENT_COLUMNS)  # the typed columns, before the payload
# Lines as earlier gateways encoded them, which may wait in JetStream across an upgrade:
# * before migration 0016, the typed columns and the payload, without the key;
# * before migration 0013, also `ad_id` (9th) and `action_time` (16th) among the typed
#   columns, and the correlation id and received time after the payload.
_KEYLESS_FIELDS = len(EVENT_COLUMNS) + 1
_LEGACY_FIELDS = 19
_LEGACY_DROPPED = (18, 17, 15, 8)  # from the end, so the earlier indexes stay valid


def _copy_text(value: str | None) -> str:
    if value is None:
        return _NULL
    return value.translate(_COPY_ESCAPES) if _COPY_SPECIAL.search(value) else value


def event_key(event_id: str) -> str:
    """The key `events` is unique on: the first 16 bytes of the eventId's SHA-256, in the
    hex text of a `uuid` (migration 0016's `adfunnel_event_key`)."""
    return hashlib.sha256(event_id.encode("utf-8", "surrogatepass")).hexdigest()[:32]


# An event's time goes into its line twice: as microseconds since 1970 (~0.3 us to convert,
# as much as the rest of a row's typed columns) and, to be cut out of its payload, as the
# publisher's text (~1.5 us to render). The events of one request share a few hundred
# timestamps at most (the publisher stamps a POST within a second, to the millisecond):
# both texts are remembered together. A datetime caches its hash, so a hit costs a dict
# lookup. Bounded, and dropped whole when full: any thread may clear it.
_TIME_TEXTS: dict[datetime, tuple[str, str]] = {}
_TIME_TEXTS_MAX = 8192
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def micros(moment: datetime) -> int:
    """An aware datetime as microseconds since 1970, as the writers' COPY carries it."""
    return (moment - _EPOCH) // _MICROSECOND


def _time_texts(moment: datetime) -> tuple[str, str]:
    """`moment` in microseconds since 1970, and as `time_text`."""
    texts = _TIME_TEXTS.get(moment)
    if texts is None:
        if len(_TIME_TEXTS) >= _TIME_TEXTS_MAX:
            _TIME_TEXTS.clear()
        texts = _TIME_TEXTS[moment] = (str(micros(moment)), time_text(moment))
    return texts


def _typed_fields(row: EventRow, micros_text: str) -> tuple[str, ...]:
    (eid, _, source, stage, kind, user, amount, campaign, age, gender) = row[:10]
    (country, city, followers, device) = row[10:]
    return (
        eid,
        micros_text,
        source,
        stage,
        kind,
        user,
        "" if amount is None else str(amount),
        campaign or "",
        "" if age is None else str(age),
        gender or "",
        country or "",
        city or "",
        "" if followers is None else str(followers),
        device or "",
    )


def copy_row(row: EventRow, payload: bytes) -> bytes:
    """One event as the start of a line of COPY text (what the writers load): its typed
    columns (the event time in microseconds), payload and key; `insert_copy` appends the
    number of its bus message in the batch."""
    micros_text, time = _time_texts(row[1])
    text = "\t".join(_typed_fields(row, micros_text))
    # Nearly every value is plain text: a count of the tabs and a search for each other
    # special character tell whether any value needs escaping, and only then is each one
    # escaped. Searching for one character is a memchr; a regular expression's character
    # class cost 7,500 instructions a line.
    if text.count("\t") != _COPY_FIELDS - 1 or "\\" in text or "\n" in text or "\r" in text:
        text = "\t".join(map(_copy_text, _typed_fields(row, micros_text)))
    event_id = row[0]
    # The payload as bytea in hex (`\x` and two digits a byte, the backslash doubled for
    # COPY). The line is built as one text and encoded once: joining encoded parts copied
    # every byte twice more.
    blob = compress(payload, row_ids(event_id, row[5], time)).hex()
    return f"{text}\t\\\\x{blob}\t{event_key(event_id)}\n".encode()


def _correlation_columns(correlation_id: str | None) -> tuple[str | None, str | None]:
    # 16 bytes in a uuid column instead of 37 in text.
    if correlation_id is not None and len(correlation_id) == 36:
        try:
            if str(uuid.UUID(correlation_id)) == correlation_id:
                return correlation_id, None
        except ValueError:
            pass
    return None, correlation_id


def _iso_to_micros(field: bytes) -> bytes:
    try:
        return str(micros(parse_timestamp(field.decode()))).encode()
    except (UnicodeDecodeError, ValueError):
        return field  # PostgreSQL refuses the line, and the writer keeps it as poison


def current_lines(lines: bytes) -> bytes:
    """Lines of `copy_row`, or of an earlier gateway's layout made into them."""
    first = lines[: lines.find(b"\n")]
    # Earlier gateways sent the event time as ISO text; microseconds have no colon.
    parts = first.split(b"\t", 2)
    iso_time = len(parts) > 1 and b":" in parts[1]
    if not iso_time and first.count(b"\t") + 1 not in (_KEYLESS_FIELDS, _LEGACY_FIELDS):
        return lines
    current = []
    for line in lines.split(b"\n"):
        fields = line.split(b"\t")
        if len(fields) == _LEGACY_FIELDS:
            for index in _LEGACY_DROPPED:
                del fields[index]
        if len(fields) == _KEYLESS_FIELDS:
            fields.append(event_key(_unescaped(fields[0])).encode())
        if len(fields) > 1 and b":" in fields[1]:
            fields[1] = _iso_to_micros(fields[1])
        if line:
            current.append(b"\t".join(fields) + b"\n")
    return b"".join(current)


_COPY_UNESCAPE = re.compile(r"\\(.)")
_COPY_UNESCAPES = {"t": "\t", "n": "\n", "r": "\r"}


def _unescaped(field: bytes) -> str:
    text = field.decode("utf-8", errors="replace")
    return _COPY_UNESCAPE.sub(lambda m: _COPY_UNESCAPES.get(m[1], m[1]), text)


def _copy_field(line: bytes, index: int) -> str:
    fields = line.rstrip(b"\n").split(b"\t")
    return _unescaped(fields[index]) if index < len(fields) else ""


def is_copy_line(line: bytes) -> bool:
    """Whether `line` has the columns of a `copy_row` line."""
    return line.rstrip(b"\n").count(b"\t") == len(LINE_COLUMNS) - 1


def copy_event_id(line: bytes) -> str:
    """The eventId of one COPY line (for the rejected store when a line is refused)."""
    return _copy_field(line, 0)


def copy_payload_text(line: bytes) -> str:
    """The event JSON of one COPY line, as it will be kept when PostgreSQL refuses the line
    (a line that is not one is kept whole)."""
    if not is_copy_line(line):
        return line.rstrip(b"\n").decode("utf-8", errors="replace")
    field = _copy_field(line, COPY_COLUMNS.index("payload"))
    try:
        time = time_text(_EPOCH + int(_copy_field(line, 1)) * _MICROSECOND)
    except (ValueError, OverflowError):
        time = ""  # an earlier layout's ISO time, or none: not in that payload's cuts
    ids = row_ids(_copy_field(line, 0), _copy_field(line, EVENT_COLUMNS.index("user_id")), time)
    try:
        return decompress(binascii.unhexlify(field.removeprefix("\\x")), ids).decode()
    except (ValueError, IndexError, zstandard.ZstdError):
        return field  # not a payload this code wrote: kept as it is


async def insert_events(conn: Conn, events: Sequence[StagedEvent]) -> int:
    """Store a batch in the caller's transaction; returns how many eventIds were new."""
    # Events with the same received time and stream sequence came in one message.
    messages: dict[tuple[datetime, int | None], tuple[MessageTrace, list[bytes]]] = {}
    for e in events:
        trace, lines = messages.setdefault(
            (e.received_at, e.stream_seq),
            (MessageTrace(e.received_at, e.stream_seq, e.correlation_id), []),
        )
        if trace.correlation_id != e.correlation_id:
            raise ValueError(f"one message, two correlation ids: {trace} and {e.correlation_id}")
        lines.append(copy_row(e.row, e.payload.encode()))
    chunks = [b"".join(lines) for _, lines in messages.values()]
    return await insert_copy(conn, chunks, [trace for trace, _ in messages.values()])


async def insert_copy(conn: Conn, chunks: Sequence[bytes], traces: Sequence[MessageTrace]) -> int:
    """Store COPY lines (`current_lines`) in the caller's transaction: chunk i holds the lines
    of the message traced by `traces[i]`. Returns how many eventIds were new."""
    if not conn.is_in_transaction():
        # The staging table empties at commit: outside a transaction nothing would be stored.
        raise RuntimeError("storing events needs the caller's transaction")
    if len(chunks) != len(traces):
        raise ValueError(f"{len(chunks)} chunks of lines, {len(traces)} message traces")
    if not any(chunks):
        return 0
    await conn.execute(_STAGING_DDL)

    async def source() -> AsyncIterator[bytes]:
        for number, chunk in enumerate(chunks, 1):
            yield chunk.replace(b"\n", b"\t%d\n" % number)

    await conn.copy_to_table(
        "events_staging", source=source(), columns=_STAGED_COLUMNS, format="text", null=_NULL
    )
    received = [t.received_at for t in traces]
    sequences = [t.stream_seq for t in traces]
    # Two writers can still meet on the same rows in opposite orders (a replacement of an
    # event the other holds). PostgreSQL breaks the cycle by failing one statement; going
    # back to before it and running it again lets the other finish first.
    for attempt in range(_DEADLOCK_RETRIES):
        try:
            async with conn.transaction():  # a savepoint inside the caller's transaction
                stored = int(await conn.fetchval(_UPSERT_STAGED, received, sequences))
            break
        except asyncpg.DeadlockDetectedError:
            if attempt == _DEADLOCK_RETRIES - 1:
                raise
    correlations = [_correlation_columns(t.correlation_id) for t in traces]
    await conn.execute(
        _INSERT_DELIVERIES,
        received,
        sequences,
        [c[0] for c in correlations],
        [c[1] for c in correlations],
    )
    return stored


async def insert_rejected(conn: Conn, rows: Sequence[RejectedRow]) -> int:
    """Store rejected events; a redelivered rejection is not stored twice."""
    if not rows:
        return 0
    columns = [[getattr(row, name) for row in rows] for name in _REJECTED_COLUMNS]
    status = await conn.execute(_INSERT_REJECTED, *columns)
    return int(status.rsplit(" ", 1)[1])
