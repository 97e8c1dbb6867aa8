"""The event schema of both ad platforms (SPEC §3) and the typed columns stored for them.

Validation answers, per event, either `Accepted` (its routing keys, its typed columns and its
JSON bytes, extra fields included) or `Rejected` (with a reason that starts with the dotted
path of the offending field, and the payload decoded as it came).

The gateway validates every event of every request, so the rules are msgspec Structs, decoded
straight from an event's bytes by `validate_json`: a valid event never becomes a dict, and the
Structs are invisible to the cyclic GC. `validate_event` applies the same Structs to an
already-decoded value (`msgspec.convert`). Where a reason is worded, dispatch on `source`,
`funnelStage` and `eventType` happens by hand before the Structs run, so it says "eventType
'ad.click' is a bottom-funnel type" instead of a union's noise; timestamps and amounts are
parsed by hand after them (`parse_timestamp`, `parse_amount`).

`validate_json` first tries a single decode in which msgspec itself picks the Struct by
`eventType`; whatever that decode does not accept goes the explicit way (dispatch, then the
one Struct of that source and stage), which alone words the reasons. msgspec stops at the
first problem, so a reason names one field, with no "(and N more problems)".
"""

from __future__ import annotations

import functools
import json
import operator
import re
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal, NamedTuple, get_args, get_origin

import msgspec
import orjson
from msgspec import Meta, Struct

SOURCES = ("facebook", "tiktok")
FUNNEL_STAGES = ("top", "bottom")
EVENT_TYPES: dict[str, dict[str, tuple[str, ...]]] = {
    "facebook": {
        "top": ("ad.view", "page.like", "comment", "video.view"),
        "bottom": ("ad.click", "form.submission", "checkout.complete"),
    },
    "tiktok": {
        "top": ("video.view", "like", "share", "comment"),
        "bottom": ("profile.visit", "purchase", "follow"),
    },
}
# Events whose purchaseAmount is revenue (SPEC §4 reporter).
REVENUE_EVENT_TYPES = {"facebook": "checkout.complete", "tiktok": "purchase"}

_AMOUNT = re.compile(r"[0-9]{1,20}(\.[0-9]{1,10})?")


def parse_timestamp(value: Any) -> datetime:
    """Parse an ISO-8601 string; no offset means UTC."""
    if not isinstance(value, str):
        raise ValueError("must be an ISO-8601 string")
    try:
        parsed = datetime.fromisoformat(value)
        # "Z" and "+00:00" already come back with the `UTC` singleton: nothing to convert.
        if parsed.tzinfo is UTC:
            return parsed
        # Converting year 1 or 9999 with an offset to UTC overflows: still a bad timestamp.
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        raise ValueError(f"{value[:40]!r} is not an ISO-8601 timestamp") from None


def parse_amount(value: Any) -> Decimal | None:
    """Parse a non-negative decimal string such as "123.45"; never a float."""
    if value is None:
        return None
    if not isinstance(value, str) or not _AMOUNT.fullmatch(value):
        raise ValueError('must be a non-negative decimal string such as "123.45", or null')
    return Decimal(value)


Text = Annotated[str, Meta(min_length=1, max_length=512)]
EventId = Annotated[str, Meta(min_length=1, max_length=256)]
# Upper bounds are the storage columns' (integer, bigint): larger values could never be stored.
Age = Annotated[int, Meta(ge=0, le=2**31 - 1)]
Count = Annotated[int, Meta(ge=0, le=2**63 - 1)]
# msgspec has no "finite" constraint: the largest finite float as `le` refuses infinity, and a
# NaN fails every comparison, `ge` included. JSON cannot spell either; decoded values can.
NonNegative = Annotated[float, Meta(ge=0, le=sys.float_info.max)]
Percentage = Annotated[float, Meta(ge=0, le=100)]
# Checked by hand after decoding (`parse_timestamp`, `parse_amount`), whatever JSON they hold.
Timestamp = Any
Amount = Any


class _Model(Struct, gc=False):
    # Strict, as msgspec always is: "not-a-number" never becomes a number, nor true 1, nor 1
    # "1". Unknown fields are skipped, not refused; the stored payload is the event's own
    # JSON, so they are kept. gc=False: these only hold JSON scalars and each other, never a
    # cycle, and the collector scanning the several per event of a 50,000-event request was
    # most of what validation cost.
    pass


class _FacebookLocation(_Model):
    country: Text
    city: Text


class _FacebookUser(_Model):
    userId: Text
    name: Text
    age: Age
    gender: Literal["male", "female", "non-binary"]
    location: _FacebookLocation


class _FacebookEngagementTop(_Model):
    actionTime: Timestamp
    referrer: Literal["newsfeed", "marketplace", "groups"]
    videoId: Text | None


class _FacebookEngagementBottom(_Model):
    adId: Text
    campaignId: Text
    clickPosition: Literal["top_left", "bottom_right", "center"]
    device: Literal["mobile", "desktop"]
    browser: Literal["Chrome", "Firefox", "Safari"]
    purchaseAmount: Amount


class _TiktokUser(_Model):
    userId: Text
    username: Text
    followers: Count


class _TiktokEngagementTop(_Model):
    watchTime: NonNegative
    percentageWatched: Percentage
    device: Literal["Android", "iOS", "Desktop"]
    country: Text
    videoId: Text


class _TiktokEngagementBottom(_Model):
    actionTime: Timestamp
    profileId: Text | None
    purchasedItem: Text | None
    purchaseAmount: Amount


class _FieldError(Exception):
    """A hand-checked field is wrong; the argument is the whole reason."""


def _timestamp(path: str, value: Any) -> datetime:
    try:
        return parse_timestamp(value)
    except ValueError as error:
        raise _FieldError(f"{path}: {error}") from None


# Event `timestamp` texts already parsed, and their values. A body's events share a few
# thousand timestamps in no order (the publisher stamps a POST within a second, to the
# millisecond, and shuffles late events in), so each text is parsed once. Every event with
# that text then gets the same datetime, whose hash is computed once: the writers' line
# cache looks times up by it, and hashing a new aware datetime cost more than parsing it.
# Bounded, and dropped whole when full: any thread may clear it.
_EVENT_TIMES: dict[str, datetime] = {}
_EVENT_TIMES_MAX = 8192


def _event_time(value: Any) -> datetime:
    if type(value) is str:
        known = _EVENT_TIMES.get(value)
        if known is not None:
            return known
    parsed = _timestamp("timestamp", value)
    if len(_EVENT_TIMES) >= _EVENT_TIMES_MAX:
        _EVENT_TIMES.clear()
    _EVENT_TIMES[value] = parsed
    return parsed


def _amount(value: Any) -> Decimal | None:
    try:
        return parse_amount(value)
    except ValueError as error:
        raise _FieldError(f"data.engagement.purchaseAmount: {error}") from None


class EventRow(NamedTuple):
    """The typed columns of one stored event, in the order of `storage.EVENT_COLUMNS`."""

    event_id: str
    event_time: datetime
    source: str
    funnel_stage: str
    event_type: str
    user_id: str
    purchase_amount: Decimal | None
    campaign_id: str | None
    age: int | None
    gender: str | None
    country: str | None
    city: str | None
    followers: int | None
    device: str | None


# Each `data` model reads its own columns: only the fields its stage defines, so an extra field
# of the same name elsewhere is kept in the payload but never read into a typed column. Rows
# are built by tuple.__new__: the NamedTuple constructor is a Python function, three times
# slower with keywords and still twice with positions, and this runs for every event. The
# tests compare each model's row with a keyword-built EventRow. The order is EventRow's:
#   event_id, event_time, source, funnel_stage, event_type, user_id, purchase_amount,
#   campaign_id, age, gender, country, city, followers, device
# `actionTime` is validated but not kept as a column: no report reads it, and the payload
# holds it (see migration 0013).
_new_row = tuple.__new__


class _FacebookTopData(_Model):
    user: _FacebookUser
    engagement: _FacebookEngagementTop

    def row(self, event_id: str, timestamp: Any, event_type: str) -> EventRow:
        user, engagement = self.user, self.engagement
        _timestamp("data.engagement.actionTime", engagement.actionTime)  # checked, not kept
        location = user.location
        return _new_row(
            EventRow,
            (
                event_id,
                _event_time(timestamp),
                "facebook",
                "top",
                event_type,
                user.userId,
                None,
                None,
                user.age,
                user.gender,
                location.country,
                location.city,
                None,
                None,
            ),
        )


class _FacebookBottomData(_Model):
    user: _FacebookUser
    engagement: _FacebookEngagementBottom

    def row(self, event_id: str, timestamp: Any, event_type: str) -> EventRow:
        user, engagement = self.user, self.engagement
        location = user.location
        return _new_row(
            EventRow,
            (
                event_id,
                _event_time(timestamp),
                "facebook",
                "bottom",
                event_type,
                user.userId,
                _amount(engagement.purchaseAmount),
                engagement.campaignId,
                user.age,
                user.gender,
                location.country,
                location.city,
                None,
                engagement.device,
            ),
        )


class _TiktokTopData(_Model):
    user: _TiktokUser
    engagement: _TiktokEngagementTop

    def row(self, event_id: str, timestamp: Any, event_type: str) -> EventRow:
        user, engagement = self.user, self.engagement
        return _new_row(
            EventRow,
            (
                event_id,
                _event_time(timestamp),
                "tiktok",
                "top",
                event_type,
                user.userId,
                None,
                None,
                None,
                None,
                engagement.country,
                None,
                user.followers,
                engagement.device,
            ),
        )


class _TiktokBottomData(_Model):
    user: _TiktokUser
    engagement: _TiktokEngagementBottom

    def row(self, event_id: str, timestamp: Any, event_type: str) -> EventRow:
        user, engagement = self.user, self.engagement
        _timestamp("data.engagement.actionTime", engagement.actionTime)  # checked, not kept
        return _new_row(
            EventRow,
            (
                event_id,
                _event_time(timestamp),
                "tiktok",
                "bottom",
                event_type,
                user.userId,
                _amount(engagement.purchaseAmount),
                None,
                None,
                None,
                None,
                None,
                user.followers,
                None,
            ),
        )


_Data = _FacebookTopData | _FacebookBottomData | _TiktokTopData | _TiktokBottomData
_DATA: dict[str, dict[str, type[_Data]]] = {
    "facebook": {"top": _FacebookTopData, "bottom": _FacebookBottomData},
    "tiktok": {"top": _TiktokTopData, "bottom": _TiktokBottomData},
}


class _Envelope(_Model):
    eventId: EventId
    timestamp: Timestamp


# The explicit way: one model per source and stage, chosen by `_dispatch`. Its errors are the
# reasons, their paths those of the event.
_MODELS: dict[str, dict[str, type[Any]]] = {
    source: {
        stage: msgspec.defstruct(
            f"_{source.title()}{stage.title()}Event", [("data", data)], bases=(_Envelope,)
        )
        for stage, data in by_stage.items()
    }
    for source, by_stage in _DATA.items()
}
_DECODERS: dict[str, dict[str, msgspec.json.Decoder[Any]]] = {
    source: {stage: msgspec.json.Decoder(model) for stage, model in by_stage.items()}
    for source, by_stage in _MODELS.items()
}


class _Head(Struct, gc=False):
    """What dispatch reads first, whatever JSON it holds; the rest of the event is skipped."""

    eventId: Any = None
    source: Any = None
    funnelStage: Any = None
    eventType: Any = None


_HEAD = msgspec.json.Decoder(_Head)


# The fast way, for valid events: a union of one model per eventType, tagged by it, so msgspec
# finds the model and decodes the event in one pass (the explicit way reads the event twice),
# `source` and `funnelStage` checked as literals on the way. A type both sources have
# ("comment", "video.view") cannot say which `data` model applies: its model keeps `data` raw,
# decoded once the source is known. Any error sends the event the explicit way.
def _typed_models() -> msgspec.json.Decoder[Any]:
    owners: dict[str, list[tuple[str, str]]] = {}
    for source, by_stage in EVENT_TYPES.items():
        for stage, types in by_stage.items():
            for event_type in types:
                owners.setdefault(event_type, []).append((source, stage))
    models: list[Any] = []
    for event_type, keys in owners.items():
        sources = tuple(dict.fromkeys(source for source, _ in keys))
        stages = tuple(dict.fromkeys(stage for _, stage in keys))
        shared = len(keys) > 1
        data: Any = msgspec.Raw if shared else _DATA[keys[0][0]][keys[0][1]]
        data_decoders = {key: msgspec.json.Decoder(_DATA[key[0]][key[1]]) for key in keys if shared}
        literal: Any = Literal  # a Literal built at run time, which mypy cannot follow
        models.append(
            msgspec.defstruct(
                f"_Typed[{event_type}]",
                [("source", literal[sources]), ("funnelStage", literal[stages]), ("data", data)],
                bases=(_Envelope,),
                tag_field="eventType",
                tag=event_type,
                namespace={"event_type": event_type, "data_decoders": data_decoders},
            )
        )
    union: Any = functools.reduce(operator.or_, models)
    return msgspec.json.Decoder(union)


_TYPED = _typed_models()
_Raw = msgspec.Raw


class Accepted(Struct, frozen=True, gc=False):
    """A valid event: its routing keys, its typed columns and its JSON, extra fields included.

    `payload` is the event's own bytes when it came as bytes (insignificant whitespace
    included), else its encoding. gc=False: it holds strings, bytes and a row of scalars.
    """

    event_id: str
    source: str
    funnel_stage: str
    event_type: str
    row: EventRow
    payload: bytes


@dataclass(frozen=True, slots=True)
class Rejected:
    """An invalid event: the reason names the field; the payload is kept as it came."""

    event_id: str | None
    reason: str
    payload: Any


def _choice(field: str, value: Any, allowed: tuple[str, ...]) -> str:
    shown = repr(value) if isinstance(value, str) else f"a {type(value).__name__}"
    return f"{field}: {shown[:60]} is not one of {', '.join(allowed)}"


def _dispatch(source: Any, stage: Any, event_type: Any) -> str | None:
    """Why the routing keys are wrong, or None when they name one of the four models."""
    if source not in SOURCES:
        return _choice("source", source, SOURCES)
    if stage not in FUNNEL_STAGES:
        return _choice("funnelStage", stage, FUNNEL_STAGES)
    types = EVENT_TYPES[source]
    if event_type in types[stage]:
        return None
    other = "bottom" if stage == "top" else "top"
    if event_type in types[other]:
        return (
            f"eventType: {event_type!r} is a {other}-funnel {source} type "
            f"but funnelStage is {stage!r}"
        )
    every = types["top"] + types["bottom"]
    return _choice("eventType", event_type, every).replace(
        "is not one of", f"is not a {source} event type; one of"
    )


TOO_DEEP = "event: is nested too deeply"
_MISSING = re.compile(r"Object missing required field `(.*)`")


def _literal_values(model: Any, path: str) -> tuple[Any, ...] | None:
    """The values the Literal field at `path` of `model` allows, if that is what it is."""
    node = model
    for name in path.split("."):
        if not (isinstance(node, type) and issubclass(node, Struct)):
            return None
        node = next((f.type for f in msgspec.structs.fields(node) if f.name == name), None)
    return get_args(node) if get_origin(node) is Literal else None


def _describe(error: msgspec.ValidationError, model: Any) -> str:
    """A reason worded "<dotted.path>: <message>" from msgspec's error on `model`."""
    # msgspec says "<message> - at `$.data.user`" (nothing at the top level; "`key` in `$.x`"
    # for a key). The message may quote the value, so the path is after the *last* " - at ".
    text = str(error)
    message, at, where = text.rpartition(" - at ")
    if not at:
        message, where = text, ""
    where = where.removeprefix("`key` in ").strip("`").removeprefix("$")
    path = re.sub(r"\[(\d+)\]", r".\1", where).lstrip(".")
    missing = _MISSING.fullmatch(message)
    if missing:
        path, message = f"{path}.{missing[1]}".lstrip("."), "Field required"
    elif message.startswith("Invalid enum value "):
        # msgspec quotes the sender's value, of any size; what is allowed says more.
        allowed = _literal_values(model, path)
        if allowed:
            *first, last = (repr(value) for value in allowed)
            message = f"Input should be {', '.join(first)}{' or ' if first else ''}{last}"
    return f"{path or 'event'}: {message}"


def dump_json(value: Any) -> bytes:
    """Encode decoded JSON compactly; the stdlib keeps integers past 64 bits that orjson refuses."""
    try:
        return orjson.dumps(value)
    except TypeError:
        pass
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
    except UnicodeEncodeError:  # a lone surrogate: only an escape can carry it
        return json.dumps(value, separators=(",", ":")).encode()


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def stdlib_decode(raw: bytes) -> Any:
    """Decode with the stdlib, which reads lone surrogate escapes, UTF-16 and numbers past a
    double's range that msgspec refuses; NaN and Infinity stay refused (ValueError)."""
    return json.loads(raw, parse_constant=_refuse_constant)


def decode_json(raw: bytes) -> Any:
    """Decode JSON as the gateway reads it: exact big integers, no NaN or Infinity.

    msgspec first, the stdlib for what only it reads. Raises ValueError (or RecursionError)
    when neither can.
    """
    try:
        return msgspec.json.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return stdlib_decode(raw)


def _check(obj: dict[str, Any]) -> tuple[str, str, str, str, EventRow] | str:
    """The routing keys and row of a decoded object, or why it is not an event."""
    source: Any = obj.get("source")
    stage: Any = obj.get("funnelStage")
    event_type: Any = obj.get("eventType")
    reason = _dispatch(source, stage, event_type)
    if reason is not None:
        return reason
    try:
        model = _MODELS[source][stage]
        event = msgspec.convert(obj, model)
        return event.eventId, source, stage, event_type, _row(event, event_type)
    except msgspec.ValidationError as error:
        return _describe(error, model)
    except _FieldError as error:
        return str(error)


def _row(event: Any, event_type: str) -> EventRow:
    data: _Data = event.data
    return data.row(event.eventId, event.timestamp, event_type)


def validate_event(obj: Any) -> Accepted | Rejected:
    """Validate one decoded JSON value as an event of either source."""
    if not isinstance(obj, dict):
        return Rejected(None, f"event: must be a JSON object, not {type(obj).__name__}", obj)
    checked = _check(obj)
    if isinstance(checked, str):
        raw_id = obj.get("eventId")
        return Rejected(raw_id if isinstance(raw_id, str) and raw_id else None, checked, obj)
    try:
        payload = dump_json(obj)
    except RecursionError:  # decoded a few frames higher up the stack
        return Rejected(checked[0], TOO_DEEP, obj)
    return Accepted(*checked, payload=payload)


def validate_json(raw: bytes) -> Accepted | Rejected:
    """Validate one event's JSON bytes, which must be valid UTF-8 (as `parse_body` checks).

    An accepted event keeps `raw` as its payload. The answer is the one `validate_event`
    gives for the decoded value.
    """
    try:
        event: Any = _TYPED.decode(raw)
        data = event.data
        if type(data) is _Raw:
            decoder = event.data_decoders.get((event.source, event.funnelStage))
            if decoder is None:
                return _validate_explicitly(raw)
            data = decoder.decode(data)
        row: EventRow = data.row(event.eventId, event.timestamp, event.event_type)
    except (msgspec.ValidationError, msgspec.DecodeError, _FieldError, RecursionError):
        return _validate_explicitly(raw)
    # The routing keys are the row's (event_id, _, source, funnel_stage, event_type), the
    # literals of the models: no per-event copies. By index: a NamedTuple's names are slower.
    return Accepted(row[0], row[2], row[3], row[4], row, raw)


def _validate_explicitly(raw: bytes) -> Accepted | Rejected:
    """Dispatch by hand, then decode with the model of that source and stage."""
    try:
        head = _HEAD.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return _validate_decoded(raw)
    source, stage, event_type = head.source, head.funnelStage, head.eventType
    reason = _dispatch(source, stage, event_type)
    if reason is None:
        try:
            event = _DECODERS[source][stage].decode(raw)
            row = _row(event, event_type)
            return Accepted(row.event_id, row.source, row.funnel_stage, row.event_type, row, raw)
        except msgspec.ValidationError as error:
            reason = _describe(error, _MODELS[source][stage])
        except _FieldError as error:
            reason = str(error)
        except (msgspec.DecodeError, RecursionError):
            return _validate_decoded(raw)
    try:
        payload = decode_json(raw)
    except (ValueError, RecursionError):
        return _validate_decoded(raw)
    raw_id = head.eventId
    return Rejected(raw_id if isinstance(raw_id, str) and raw_id else None, reason, payload)


def _validate_decoded(raw: bytes) -> Accepted | Rejected:
    """What msgspec cannot read as an event (not an object, a value only the stdlib reads)."""
    try:
        obj = decode_json(raw)
    except RecursionError:
        # `parse_body` skipped over it, a few frames higher up the stack.
        return Rejected(None, TOO_DEEP, raw.decode("utf-8", "replace"))
    except ValueError as error:  # bytes that did not come from `parse_body`
        return Rejected(None, f"event: is not valid JSON ({error})", raw.decode("utf-8", "replace"))
    result = validate_event(obj)
    if isinstance(result, Accepted):
        return msgspec.structs.replace(result, payload=raw)
    return result


def event_row(payload: dict[str, Any]) -> EventRow:
    """The typed columns of a decoded event; ValueError (naming the field) if it is invalid."""
    checked = _check(payload)
    if isinstance(checked, str):
        raise ValueError(checked)
    return checked[4]
