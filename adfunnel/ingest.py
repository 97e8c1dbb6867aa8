"""What the gateway does with a webhook body before the bus: check, parse, validate, de-duplicate.

Pure functions, so the whole request contract is testable without Ray, NATS or HTTP.
"""

from __future__ import annotations

import hashlib
import hmac
import json
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
    if scheme.strip().lower() != "sha256" or not hmac.compare_digest(
        given.strip().lower(), expected
    ):
        raise BadSignature("x-signature does not match the body")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_body(body: bytes, max_events: int) -> list[Any]:
    """The events of a body: one object or an array of them."""
    if not body.strip():
        raise InvalidBody("the body is empty; send an event object or an array of events")
    try:
        decoded: Any = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        # orjson refuses integers past 64 bits; the stdlib does not, and still refuses NaN.
        try:
            decoded = json.loads(body, parse_constant=_refuse_constant)
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
    repeated: int = 0

    @property
    def accepted_count(self) -> int:
        return len(self.accepted) + self.repeated


_NUL = "\x00"


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return _NUL in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def triage(items: list[Any], *, may_have_nul: bool = True) -> Triage:
    """Validate every event; the first copy of an eventId in the request wins.

    PostgreSQL cannot store NUL in text or jsonb, so an event carrying one anywhere (extra
    fields included) is rejected here rather than promised and then refused by the writer.
    Callers that know the body has no `\\u0000` escape pass `may_have_nul=False` to skip
    the walk.
    """
    out = Triage()
    seen: set[str] = set()
    for index, item in enumerate(items):
        result = validate_event(item)
        if isinstance(result, Accepted) and may_have_nul and _has_nul(item):
            result = Rejected(result.event_id, "event: contains a NUL character (\\u0000)", item)
        if isinstance(result, Rejected):
            out.rejected.append((index, result))
        elif result.event_id in seen:
            out.repeated += 1
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
