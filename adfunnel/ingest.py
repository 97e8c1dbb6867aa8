"""What the gateway does with a webhook body before the bus: check, parse, validate, de-duplicate.

Pure functions, so the whole request contract is testable without Ray, NATS or HTTP.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson

from adfunnel.errors import BadSignature, InvalidBody, PayloadTooLarge
from adfunnel.schema import Accepted, Rejected, validate_event

SIGNATURE_HEADER = "x-signature"


def verify_signature(secret: str, body: bytes, header: str | None) -> None:
    """Check `x-signature: sha256=<hex HMAC-SHA256(secret, body)>` in constant time."""
    if not header:
        raise BadSignature("missing x-signature header")
    scheme, _, given = header.partition("=")
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    given = given.strip().lower()
    # compare_digest refuses non-ASCII str: such a header is simply a wrong signature.
    if scheme.strip().lower() != "sha256" or not given.isascii():
        raise BadSignature("x-signature does not match the body")
    if not hmac.compare_digest(given, expected):
        raise BadSignature("x-signature does not match the body")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# orjson turns integers past 64 bits into floats; a number of 19+ digits in value position
# sends the body through the stdlib parser, which keeps them exact.
_BIG_INT = re.compile(rb"[\[:,]\s*-?[0-9]{19,}")
# Escapes of what PostgreSQL cannot store in text/jsonb: NUL and (lone) surrogates.
_UNSTORABLE_ESCAPE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")
_UNSTORABLE_CHAR = re.compile("[\x00\ud800-\udfff]")


def _stdlib_loads(body: bytes) -> Any:
    try:
        return json.loads(body, parse_constant=_refuse_constant)
    except RecursionError:
        raise InvalidBody("the body is nested too deeply") from None


def may_be_unstorable(body: bytes) -> bool:
    """Whether the body escapes a character PostgreSQL cannot store (checked per event then)."""
    return _UNSTORABLE_ESCAPE.search(body) is not None


def parse_body(body: bytes, max_events: int) -> list[Any]:
    """The events of a body: one object or an array of them."""
    if not body.strip():
        raise InvalidBody("the body is empty; send an event object or an array of events")
    try:
        decoded: Any = orjson.loads(body)
        if _BIG_INT.search(body):
            decoded = _stdlib_loads(body)
    except orjson.JSONDecodeError as error:
        # The stdlib also reads lone surrogates and deep nesting that orjson refuses; the
        # events carrying them are rejected one by one instead of the whole batch.
        try:
            decoded = _stdlib_loads(body)
        except (ValueError, UnicodeDecodeError):
            raise InvalidBody(f"the body is not valid JSON: {error}") from None
    if isinstance(decoded, dict):
        return [decoded]
    if not isinstance(decoded, list):
        raise InvalidBody(
            f"the body must be an event object or an array of events, not {type(decoded).__name__}"
        )
    if len(decoded) > max_events:
        raise PayloadTooLarge(
            f"the batch has {len(decoded)} events; the limit is {max_events}",
            [{"limit": max_events, "events": len(decoded)}],
        )
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
    if isinstance(value, str):
        return _UNSTORABLE_CHAR.search(value) is not None
    if isinstance(value, dict):
        return any(_unstorable(k) or _unstorable(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_unstorable(v) for v in value)
    return False


def triage(items: list[Any], *, check_storable: bool = True) -> Triage:
    """Validate every event; the first copy of an eventId in the request wins.

    PostgreSQL cannot store NUL or a lone surrogate in text or jsonb, so an event carrying
    one anywhere (extra fields included) is rejected here rather than promised and then
    refused by the writer. Callers that know the body has no such escape
    (`may_be_unstorable`) pass `check_storable=False` to skip the walk.
    """
    out = Triage()
    seen: set[str] = set()
    for index, item in enumerate(items):
        result = validate_event(item)
        if isinstance(result, Accepted) and check_storable and _unstorable(item):
            reason = "event: contains a NUL character or a lone surrogate, which cannot be stored"
            result = Rejected(result.event_id, reason, item)
        if isinstance(result, Rejected):
            out.rejected.append((index, result))
        elif result.event_id in seen:
            out.repeated_by_source[result.source] += 1
        else:
            seen.add(result.event_id)
            out.accepted.append(result)
    return out


def error_entries(rejected: list[tuple[int, Rejected]]) -> list[dict[str, Any]]:
    """The `errors` array of the webhook answer."""
    return [
        {"index": index, "eventId": item.event_id, "reason": item.reason}
        for index, item in rejected
    ]
