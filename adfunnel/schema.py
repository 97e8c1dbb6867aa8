"""The event schema of both ad platforms (SPEC §3) and the typed columns stored for them.

Validation answers, per event, either `Accepted` (with the original payload, extra fields
included) or `Rejected` (with a reason that starts with the dotted path of the offending
field). Dispatch on `source` and `funnelStage` happens by hand before pydantic runs, so a
reason says "eventType 'ad.click' is a bottom-funnel type" instead of a union's noise.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
)

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


Timestamp = Annotated[datetime, BeforeValidator(parse_timestamp)]
Amount = Annotated[Decimal | None, BeforeValidator(parse_amount)]
Text = Annotated[str, StringConstraints(min_length=1, max_length=512)]
EventId = Annotated[str, StringConstraints(min_length=1, max_length=256)]
# Upper bounds are the storage columns' (integer, bigint): larger values could never be stored.
Age = Annotated[int, Field(ge=0, le=2**31 - 1)]
Count = Annotated[int, Field(ge=0, le=2**63 - 1)]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Percentage = Annotated[float, Field(ge=0, le=100, allow_inf_nan=False)]


class _Model(BaseModel):
    # Strict: "not-a-number" must not become a number, nor 1 become "1". Extra fields
    # pass validation; the stored payload is the original object, so they are kept.
    model_config = ConfigDict(strict=True, extra="allow", frozen=True)


class FacebookLocation(_Model):
    country: Text
    city: Text


class FacebookUser(_Model):
    userId: Text
    name: Text
    age: Age
    gender: Literal["male", "female", "non-binary"]
    location: FacebookLocation


class FacebookEngagementTop(_Model):
    actionTime: Timestamp
    referrer: Literal["newsfeed", "marketplace", "groups"]
    videoId: Text | None


class FacebookEngagementBottom(_Model):
    adId: Text
    campaignId: Text
    clickPosition: Literal["top_left", "bottom_right", "center"]
    device: Literal["mobile", "desktop"]
    browser: Literal["Chrome", "Firefox", "Safari"]
    purchaseAmount: Amount


class TiktokUser(_Model):
    userId: Text
    username: Text
    followers: Count


class TiktokEngagementTop(_Model):
    watchTime: NonNegative
    percentageWatched: Percentage
    device: Literal["Android", "iOS", "Desktop"]
    country: Text
    videoId: Text


class TiktokEngagementBottom(_Model):
    actionTime: Timestamp
    profileId: Text | None
    purchasedItem: Text | None
    purchaseAmount: Amount


class _Envelope(_Model):
    eventId: EventId
    timestamp: Timestamp
    eventType: str


class FacebookTopData(_Model):
    user: FacebookUser
    engagement: FacebookEngagementTop


class FacebookBottomData(_Model):
    user: FacebookUser
    engagement: FacebookEngagementBottom


class TiktokTopData(_Model):
    user: TiktokUser
    engagement: TiktokEngagementTop


class TiktokBottomData(_Model):
    user: TiktokUser
    engagement: TiktokEngagementBottom


class FacebookTopEvent(_Envelope):
    source: Literal["facebook"]
    funnelStage: Literal["top"]
    data: FacebookTopData


class FacebookBottomEvent(_Envelope):
    source: Literal["facebook"]
    funnelStage: Literal["bottom"]
    data: FacebookBottomData


class TiktokTopEvent(_Envelope):
    source: Literal["tiktok"]
    funnelStage: Literal["top"]
    data: TiktokTopData


class TiktokBottomEvent(_Envelope):
    source: Literal["tiktok"]
    funnelStage: Literal["bottom"]
    data: TiktokBottomData


_MODELS: dict[tuple[str, str], TypeAdapter[Any]] = {
    ("facebook", "top"): TypeAdapter(FacebookTopEvent),
    ("facebook", "bottom"): TypeAdapter(FacebookBottomEvent),
    ("tiktok", "top"): TypeAdapter(TiktokTopEvent),
    ("tiktok", "bottom"): TypeAdapter(TiktokBottomEvent),
}


@dataclass(frozen=True, slots=True)
class Accepted:
    """A valid event: its routing keys and the original payload, extra fields included."""

    event_id: str
    source: str
    funnel_stage: str
    event_type: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Rejected:
    """An invalid event: the reason names the field; the payload is kept as it came."""

    event_id: str | None
    reason: str
    payload: Any


def _choice(field: str, value: Any, allowed: tuple[str, ...]) -> str:
    shown = repr(value) if isinstance(value, str) else f"a {type(value).__name__}"
    return f"{field}: {shown[:60]} is not one of {', '.join(allowed)}"


def _describe(error: ValidationError) -> str:
    first = error.errors(include_url=False, include_context=False)[0]
    path = ".".join(str(part) for part in first["loc"] if not str(part).startswith("function-"))
    message = first["msg"].removeprefix("Value error, ")
    more = error.error_count() - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"{path}: {message}{suffix}"


def validate_event(obj: Any) -> Accepted | Rejected:
    """Validate one decoded JSON value as an event of either source."""
    if not isinstance(obj, dict):
        return Rejected(None, f"event: must be a JSON object, not {type(obj).__name__}", obj)
    raw_id = obj.get("eventId")
    event_id = raw_id if isinstance(raw_id, str) and raw_id else None
    source, stage, event_type = obj.get("source"), obj.get("funnelStage"), obj.get("eventType")
    if source not in SOURCES:
        return Rejected(event_id, _choice("source", source, SOURCES), obj)
    if stage not in FUNNEL_STAGES:
        return Rejected(event_id, _choice("funnelStage", stage, FUNNEL_STAGES), obj)
    types = EVENT_TYPES[source]
    if event_type not in types[stage]:
        other = "bottom" if stage == "top" else "top"
        if event_type in types[other]:
            reason = (
                f"eventType: {event_type!r} is a {other}-funnel {source} type "
                f"but funnelStage is {stage!r}"
            )
        else:
            every = types["top"] + types["bottom"]
            reason = _choice("eventType", event_type, every).replace(
                "is not one of", f"is not a {source} event type; one of"
            )
        return Rejected(event_id, reason, obj)
    try:
        _MODELS[(source, stage)].validate_python(obj)
    except ValidationError as error:
        return Rejected(event_id, _describe(error), obj)
    assert event_id is not None  # the model requires a non-empty eventId
    return Accepted(event_id, source, stage, event_type, obj)


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
    ad_id: str | None
    age: int | None
    gender: str | None
    country: str | None
    city: str | None
    followers: int | None
    device: str | None
    action_time: datetime | None


def event_row(payload: dict[str, Any]) -> EventRow:
    """Extract the typed columns of an event that `validate_event` accepted."""
    data = payload["data"]
    user, engagement = data["user"], data["engagement"]
    source, stage = payload["source"], payload["funnelStage"]
    # Only the fields the stage defines: an extra field of the same name elsewhere is
    # kept in the payload but never read into a typed column.
    top, bottom = stage == "top", stage == "bottom"
    action_time = engagement["actionTime"] if (source == "facebook") == top else None
    amount = engagement["purchaseAmount"] if bottom else None
    if source == "facebook":
        location = user["location"]
        age: int | None = user["age"]
        gender, country, city = user["gender"], location["country"], location["city"]
        followers = None
        device = engagement["device"] if bottom else None
        campaign_id, ad_id = (
            (engagement["campaignId"], engagement["adId"]) if bottom else (None, None)
        )
    else:
        age = gender = city = None
        followers = user["followers"]
        country, device = (engagement["country"], engagement["device"]) if top else (None, None)
        campaign_id = ad_id = None
    return EventRow(
        event_id=payload["eventId"],
        event_time=parse_timestamp(payload["timestamp"]),
        source=source,
        funnel_stage=payload["funnelStage"],
        event_type=payload["eventType"],
        user_id=user["userId"],
        purchase_amount=parse_amount(amount),
        campaign_id=campaign_id,
        ad_id=ad_id,
        age=age,
        gender=gender,
        country=country,
        city=city,
        followers=followers,
        device=device,
        action_time=parse_timestamp(action_time) if action_time is not None else None,
    )
