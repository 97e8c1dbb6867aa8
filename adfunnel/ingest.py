"""What the gateway does with a webhook body before the bus: check, parse, validate, de-duplicate.

Pure functions, so the whole request contract is testable without Ray, NATS or HTTP.

A body is split into its events' JSON bytes without decoding them (msgspec skips over each
one, checking the syntax); `triage` then validates each event straight from its bytes, so a
valid event never becomes a dict. Only a body msgspec cannot read but the stdlib can (lone
surrogate escapes, UTF-16) is decoded as a whole, as before, and its events are validated as
decoded values.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec

from adfunnel import bus
from adfunnel.errors import BadSignature, InvalidBody, PayloadTooLarge
from adfunnel.schema import (
    TOO_DEEP,
    Accepted,
    Rejected,
    decode_json,
    stdlib_decode,
    validate_event,
    validate_json,
)
from adfunnel.settings import Settings

SIGNATURE_HEADER = "x-signature"
# Sent by `adfunnel replay`: the events come from the rejected store already, so the
# request's rejections are recorded on the rows replayed, not stored a second time.
REPLAY_HEADER = "x-adfunnel-replay"


def signature(secret: str, body: bytes) -> str:
    """The `x-signature` value of `body`: `sha256=<hex HMAC-SHA256(secret, body)>`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_signature(secret: str, body: bytes, header: str | None) -> None:
    """Check `x-signature` (see `signature`) in constant time."""
    if not header:
        raise BadSignature("missing x-signature header")
    scheme, _, given = header.partition("=")
    expected = signature(secret, body).removeprefix("sha256=")
    given = given.strip().lower()
    # compare_digest refuses non-ASCII str: such a header is simply a wrong signature.
    if scheme.strip().lower() != "sha256" or not given.isascii():
        raise BadSignature("x-signature does not match the body")
    if not hmac.compare_digest(given, expected):
        raise BadSignature("x-signature does not match the body")


# Escapes of what PostgreSQL cannot store in text/jsonb: NUL and (lone) surrogates.
_UNSTORABLE_ESCAPE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")
_UNSTORABLE_CHAR = re.compile("[\x00\ud800-\udfff]")
_SPACE = re.compile(rb"\s*")
_EVENTS = msgspec.json.Decoder(list[msgspec.Raw])
_EVENT = msgspec.json.Decoder(msgspec.Raw)


def _stdlib_loads(body: bytes, error: Exception) -> Any:
    try:
        return stdlib_decode(body)
    except RecursionError:
        raise InvalidBody("the body is nested too deeply") from None
    except ValueError:  # UnicodeDecodeError included
        raise InvalidBody(f"the body is not valid JSON: {error}") from None


def may_be_unstorable(body: bytes) -> bool:
    """Whether the body escapes a character PostgreSQL cannot store (checked per event then)."""
    return _has_unstorable_escape(body)


def _has_unstorable_escape(raw: bytes) -> bool:
    # No backslash, no escape: memchr finds that out ten times faster than the regex.
    return b"\\" in raw and _UNSTORABLE_ESCAPE.search(raw) is not None


def _too_many(count: int, max_events: int) -> None:
    if count > max_events:
        raise PayloadTooLarge(
            f"the batch has {count} events; the limit is {max_events}",
            [{"limit": max_events, "events": count}],
        )


def parse_body(body: bytes, max_events: int) -> list[Any]:
    """The events of a body (one object or an array of them), each as its own JSON bytes.

    Each item is one event's bytes, exactly as sent but for the whitespace around it, or for
    a body only the stdlib can read, each event's decoded value (never bytes): `triage`
    takes both. InvalidBody when the body is not JSON or not an object or array.
    """
    space = _SPACE.match(body)  # what bytes.strip() strips, without copying the body
    start = space.end() if space else 0
    if start == len(body):
        raise InvalidBody("the body is empty; send an event object or an array of events")
    first = body[start : start + 1]
    try:
        if first == b"[":
            raws = _EVENTS.decode(body)
        elif first == b"{":
            raws = [_EVENT.decode(body)]
        else:
            decoded: Any = msgspec.json.decode(body)
            raws = None
    except RecursionError:
        raise InvalidBody("the body is nested too deeply") from None
    except (msgspec.DecodeError, msgspec.ValidationError) as error:
        # The stdlib also reads what msgspec refuses (lone surrogate escapes, UTF-16, a bare
        # number past a double's range): events carrying a lone surrogate are then rejected
        # one by one instead of the whole batch.
        decoded = _stdlib_loads(body, error)
        raws = None
    if raws is not None:
        _too_many(len(raws), max_events)
        items = [bytes(raw) for raw in raws]
        # Skipping an event checks its syntax but not the UTF-8 of its strings; most events
        # are ASCII, and only the others need decoding to prove it.
        for item in itertools.filterfalse(bytes.isascii, items):
            try:
                item.decode()
            except UnicodeDecodeError as error:
                raise InvalidBody(f"the body is not valid JSON: {error}") from None
        return items
    if isinstance(decoded, dict):
        return [decoded]
    if not isinstance(decoded, list):
        raise InvalidBody(
            f"the body must be an event object or an array of events, not {type(decoded).__name__}"
        )
    _too_many(len(decoded), max_events)
    return decoded


@dataclass(slots=True)
class Triage:
    """A request's events sorted out: what to publish, what to reject, what repeated."""

    accepted: list[Accepted] = field(default_factory=list)
    rejected: list[tuple[int, Rejected]] = field(default_factory=list)
    # Accepted events whose eventId came earlier in the same request: counted, not re-sent.
    repeated_by_source: Counter[str] = field(default_factory=Counter)

    @property
    def repeated(self) -> int:
        return sum(self.repeated_by_source.values())

    @property
    def accepted_count(self) -> int:
        return len(self.accepted) + self.repeated

    def accepted_by_source(self) -> Counter[str]:
        """Accepted events per source, repeats included (as the `202` counts them)."""
        counts = Counter(item.source for item in self.accepted)
        counts.update(self.repeated_by_source)
        return counts


def _unstorable(value: Any) -> bool:
    # A loop, not recursion: JSON nested a few hundred deep must not exhaust the stack.
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if _UNSTORABLE_CHAR.search(item) is not None:
                return True
        elif isinstance(item, dict):
            pending.extend(item)
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


_UNSTORABLE_REASON = "event: contains a NUL character or a lone surrogate, which cannot be stored"


def _storable(result: Accepted | Rejected, item: Any) -> Accepted | Rejected:
    """`result`, or a rejection if its accepted event carries what PostgreSQL cannot store."""
    if isinstance(result, Rejected):
        return result
    if isinstance(item, bytes):
        # Such characters can only arrive escaped; most events have no escape to look at.
        if not _has_unstorable_escape(item):
            return result
        try:
            item = decode_json(item)
        except RecursionError:  # `parse_body` skipped over it, a few frames higher up
            return Rejected(result.event_id, TOO_DEEP, item.decode())
    if _unstorable(item):
        return Rejected(result.event_id, _UNSTORABLE_REASON, item)
    return result


def too_old(result: Accepted, item: Any, oldest: datetime) -> Rejected:
    """The rejection of an event older than the retention window (SPEC §10)."""
    payload = decode_json(item) if isinstance(item, bytes) else item
    reason = (
        f"timestamp: {result.row.event_time.isoformat()} is older than the retention window"
        f" (events before {oldest.isoformat()} are not kept)"
    )
    return Rejected(result.event_id, reason, payload)


def triage(
    items: list[Any], *, check_storable: bool = True, oldest: datetime | None = None
) -> Triage:
    """Validate every event; the first copy of an eventId in the request wins.

    An item is one event's JSON bytes or its decoded value, as `parse_body` returns them.
    PostgreSQL cannot store NUL or a lone surrogate in text or jsonb, so an event carrying
    one anywhere (extra fields included) is rejected here rather than promised and then
    refused by the writer. Callers that know the body has no such escape
    (`may_be_unstorable`) pass `check_storable=False` to skip the check. With `oldest`, an
    event whose timestamp is before it is rejected: past the retention window it would be
    removed at once, and, stored after its earlier copy expired, counted a second time.
    """
    out = Triage()
    seen: set[str] = set()
    # Bound once: this loop runs for every event of every request.
    see, accept, reject = seen.add, out.accepted.append, out.rejected.append
    for index, item in enumerate(items):
        result = validate_json(item) if type(item) is bytes else validate_event(item)
        if check_storable:
            result = _storable(result, item)
        if oldest is not None and type(result) is Accepted and result.row[1] < oldest:
            result = too_old(result, item, oldest)
        if isinstance(result, Rejected):
            reject((index, result))
        elif result.event_id in seen:
            out.repeated_by_source[result.source] += 1
        else:
            see(result.event_id)
            accept(result)
    return out


def error_entries(rejected: list[tuple[int, Rejected]]) -> list[dict[str, Any]]:
    """The `errors` array of the webhook answer."""
    return [
        {"index": index, "eventId": item.event_id, "reason": item.reason}
        for index, item in rejected
    ]


@dataclass(frozen=True, slots=True)
class Prepared:
    """A body made ready for the bus: its events, how they were sorted out, the messages."""

    items: list[Any]
    sorted_out: Triage
    chunks: list[bus.Chunk]


def prepare(
    settings: Settings,
    body: bytes,
    *,
    correlation_id: str,
    received_at: datetime,
    keep_rejected: bool = True,
) -> Prepared:
    """Everything the gateway does with a body before publishing it (all of its CPU).

    `keep_rejected=False` (a replay) publishes no rejections.
    """
    items = parse_body(body, settings.max_batch_events)
    sorted_out = triage(
        items,
        check_storable=may_be_unstorable(body),
        oldest=settings.retention_cutoff(received_at),
    )
    chunks = bus.encode_batch(
        settings,
        sorted_out.accepted,
        sorted_out.rejected if keep_rejected else [],
        correlation_id=correlation_id,
        received_at=received_at,
    )
    return Prepared(items, sorted_out, chunks)
