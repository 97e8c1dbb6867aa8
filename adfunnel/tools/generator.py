"""Realistic events in the formats of the real publisher (`andriiuni/events`, SPEC §3).

Used by tests now and by the publisher simulator CLI later, so it is pure stdlib and fast
enough to produce tens of thousands of events per second on one core.

Every random choice comes from the generator's own `random.Random`, eventIds and userIds
included, so the same seed gives the same events. Timestamps come from `at` or, when it is
not given, from the generator's clock (wall time unless one is injected): a seed together with
fixed `at` values or a fixed clock reproduces events exactly.

The event-type and enum lists are written out here rather than imported from
`adfunnel.schema`, so that tests using this module check the schema against an independent
copy of the publisher's documentation instead of against itself.
"""

from __future__ import annotations

import math
import unicodedata
from collections import deque
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from itertools import accumulate
from random import Random
from typing import Any, Final, TypeVar

__all__ = [
    "AGE_BUCKETS",
    "CAMPAIGN_IDS",
    "CORRUPTION_KINDS",
    "COUNTRIES",
    "DEFAULT_HOT_SHARE",
    "DEFAULT_RETURNING_SHARE",
    "EVENT_TYPES",
    "FOLLOWER_BUCKETS",
    "Generator",
    "isoformat",
    "user_mix",
]

_T = TypeVar("_T")

# userId, name, age, gender, country, city
_FacebookUser = tuple[str, str, int, str, str, str]
# userId, username, followers
_TiktokUser = tuple[str, str, int]

EVENT_TYPES: Final[Mapping[str, Mapping[str, tuple[str, ...]]]] = {
    "facebook": {
        "top": ("ad.view", "page.like", "comment", "video.view"),
        "bottom": ("ad.click", "form.submission", "checkout.complete"),
    },
    "tiktok": {
        "top": ("video.view", "like", "share", "comment"),
        "bottom": ("profile.visit", "purchase", "follow"),
    },
}
# The only types whose purchaseAmount may be set (SPEC §4 revenue).
_REVENUE_TYPES: Final = frozenset({"checkout.complete", "purchase"})

# The real publisher's corruptions (SPEC §3), one name each. Order is part of the API: the
# simulator CLI may let users pick kinds by name.
CORRUPTION_KINDS: Final[tuple[str, ...]] = (
    "invalid_timestamp",
    "missing_eventId",
    "missing_user",
    "missing_name",
    "missing_adId",
    "invalid_funnelStage",
    "invalid_eventType",
    "negative_actionTime",
    "negative_watchTime",
    "invalid_gender",
    "invalid_followers",
)

# Full English country names, as the publisher sends them, each with cities that really are in
# it, so that demographics by (country, city) look like a real audience.
COUNTRIES: Final[Mapping[str, tuple[str, ...]]] = {
    "United States": ("New York", "Los Angeles", "Chicago", "Houston", "Phoenix", "Seattle"),
    "United Kingdom": ("London", "Manchester", "Birmingham", "Edinburgh", "Glasgow"),
    "Germany": ("Berlin", "Munich", "Hamburg", "Cologne", "Frankfurt"),
    "France": ("Paris", "Lyon", "Marseille", "Toulouse", "Nice"),
    "Spain": ("Madrid", "Barcelona", "Valencia", "Seville"),
    "Italy": ("Rome", "Milan", "Naples", "Turin"),
    "Poland": ("Warsaw", "Kraków", "Wrocław", "Gdańsk"),
    "Ukraine": ("Kyiv", "Lviv", "Kharkiv", "Odesa", "Dnipro"),
    "Netherlands": ("Amsterdam", "Rotterdam", "The Hague", "Utrecht"),
    "Canada": ("Toronto", "Vancouver", "Montreal", "Calgary"),
    "Mexico": ("Mexico City", "Guadalajara", "Monterrey", "Puebla"),
    "Brazil": ("São Paulo", "Rio de Janeiro", "Brasília", "Salvador"),
    "Argentina": ("Buenos Aires", "Córdoba", "Rosario"),
    "Japan": ("Tokyo", "Osaka", "Yokohama", "Nagoya"),
    "South Korea": ("Seoul", "Busan", "Incheon"),
    "India": ("Mumbai", "Delhi", "Bangalore", "Chennai", "Kolkata"),
    "Indonesia": ("Jakarta", "Surabaya", "Bandung"),
    "Australia": ("Sydney", "Melbourne", "Brisbane", "Perth"),
    "Nigeria": ("Lagos", "Abuja", "Kano"),
    "Egypt": ("Cairo", "Alexandria", "Giza"),
    "South Africa": ("Johannesburg", "Cape Town", "Durban"),
    "Turkey": ("Istanbul", "Ankara", "Izmir"),
}
# Skewed like a real audience (a few big markets, a long tail) so "top countries" has a shape.
_COUNTRY_WEIGHTS: Final[Mapping[str, int]] = {
    "United States": 18, "United Kingdom": 8, "Germany": 7, "France": 6, "Spain": 5,
    "Italy": 5, "Poland": 4, "Ukraine": 4, "Netherlands": 3, "Canada": 4, "Mexico": 5,
    "Brazil": 7, "Argentina": 3, "Japan": 4, "South Korea": 3, "India": 8, "Indonesia": 4,
    "Australia": 3, "Nigeria": 2, "Egypt": 2, "South Africa": 2, "Turkey": 3,
}  # fmt: skip

# A handful of campaigns, as an advertiser runs; revenue by campaign needs repeats.
CAMPAIGN_IDS: Final[tuple[str, ...]] = (
    "cmp-brand-awareness",
    "cmp-spring-sale",
    "cmp-summer-sale",
    "cmp-black-friday",
    "cmp-holiday-gifts",
    "cmp-retargeting",
    "cmp-lookalike",
    "cmp-app-install",
)
_ADS_PER_CAMPAIGN: Final = 12

# The reporter's buckets (SPEC §4): every one of them gets users, with realistic weights.
AGE_BUCKETS: Final[tuple[tuple[int, int], ...]] = (
    (13, 17),
    (18, 24),
    (25, 34),
    (35, 44),
    (45, 54),
    (55, 64),
    (65, 80),
)
_AGE_CUM_WEIGHTS: Final = tuple(accumulate((6, 22, 28, 19, 12, 8, 5)))
FOLLOWER_BUCKETS: Final[tuple[tuple[int, int], ...]] = (
    (0, 999),
    (1_000, 9_999),
    (10_000, 99_999),
    (100_000, 999_999),
    (1_000_000, 5_000_000),
)
_FOLLOWER_CUM_WEIGHTS: Final = tuple(accumulate((40, 28, 18, 10, 4)))

_FIRST_NAMES: Final = (
    "Olivia", "Liam", "Emma", "Noah", "Amelia", "Oliver", "Sofia", "Mateo", "Mia", "Lucas",
    "Hannah", "Elias", "Chloé", "Louis", "Giulia", "Marco", "Zofia", "Jakub", "Olena", "Taras",
    "Ana", "João", "Valentina", "Santiago", "Yuki", "Haruto", "Ji-woo", "Min-jun", "Aarav",
    "Priya", "Putri", "Budi", "Chinedu", "Amara", "Layla", "Omar", "Thandiwe", "Sipho", "Elif",
    "Emre", "Charlotte", "Jack", "Sven", "Fatima", "Alex", "Sam", "Jordan", "Riley",
)  # fmt: skip
_LAST_NAMES: Final = (
    "Smith", "Johnson", "Brown", "Garcia", "Martinez", "Müller", "Schmidt", "Martin",
    "Bernard", "Rossi", "Russo", "Nowak", "Kowalski", "Shevchenko", "Kovalenko", "de Jong",
    "Tremblay", "Hernández", "Silva", "Santos", "Fernández", "Tanaka", "Suzuki", "Kim", "Lee",
    "Patel", "Sharma", "Wijaya", "Okafor", "Adeyemi", "Hassan", "Nkosi", "Öztürk", "O'Brien",
    "Nguyen", "Cohen", "Andersson", "Dubois",
)  # fmt: skip
_PRODUCTS: Final = (
    "Wireless Earbuds", "LED Strip Lights", "Lip Gloss Set", "Phone Case", "Water Bottle",
    "Oversized Hoodie", "Skincare Serum", "Mini Projector", "Running Sneakers", "Yoga Mat",
    "Scented Candle", "Hair Clips", "Air Fryer", "Graphic T-Shirt", "Makeup Brush Set",
)  # fmt: skip

_FB_REFERRERS: Final = ("newsfeed", "marketplace", "groups")
_FB_GENDERS: Final = ("male", "female", "non-binary")
_FB_GENDER_CUM_WEIGHTS: Final = (48, 96, 100)
_FB_CLICK_POSITIONS: Final = ("top_left", "bottom_right", "center")
_FB_DEVICES: Final = ("mobile", "desktop")
_FB_BROWSERS: Final = ("Chrome", "Firefox", "Safari")
_TTK_DEVICES: Final = ("Android", "iOS", "Desktop")
_TTK_DEVICE_CUM_WEIGHTS: Final = (50, 90, 100)

# Returning users: by default a small share of events reuses a recent user so that "latest
# event's attributes win" in demographics has something to do; the rest are new, as with the
# publisher. Funnel-shaped traffic (view, click, purchase) needs a larger share.
DEFAULT_RETURNING_SHARE: Final = 0.02
_RECENT_USERS: Final = 500
# What a pool of hot users (bots, heavy users) carries unless told otherwise.
DEFAULT_HOT_SHARE: Final = 0.5
# Share of purchases that arrive without an amount (the publisher's type allows null there).
_NULL_AMOUNT_SHARE: Final = 0.1
# Top-funnel events outnumber bottom-funnel ones, as in any funnel.
_TOP_SHARE: Final = 2 / 3
# An out-of-order event is this far in the past: minutes to hours (log-uniform).
_LATE_MIN_S: Final = 60.0
_LATE_MAX_S: Final = 12 * 3600.0


def isoformat(moment: datetime) -> str:
    """Format like JavaScript's `Date.toISOString()`: UTC, milliseconds, `Z` suffix.

    A naive datetime is taken as UTC, as the schema does for timestamps without an offset.
    """
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return moment.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def _handle(name: str) -> str:
    """A name as it appears in a TikTok handle: lower-case ASCII letters only."""
    # NFKD splits accents off (é -> e + accent); the Turkish dotless i has no decomposition.
    folded = unicodedata.normalize("NFKD", name.lower().replace("\u0131", "i"))
    return "".join(char for char in folded if "a" <= char <= "z")


def _copy(value: _T) -> _T:
    """Copy a JSON-like value; several times faster than `copy.deepcopy` for event dicts."""
    if isinstance(value, dict):
        return {key: _copy(item) for key, item in value.items()}  # type: ignore[return-value]
    if isinstance(value, list):
        return [_copy(item) for item in value]  # type: ignore[return-value]
    return value


def _has(event: Mapping[str, Any], *path: str) -> bool:
    """Whether the nested key path exists, so a corruption can tell if it applies."""
    node: Any = event
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return False
        node = node[key]
    return True


def _corrupt_in_place(event: dict[str, Any], kind: str) -> None:
    """Apply one corruption, exactly as the real publisher sends it."""
    if kind == "invalid_timestamp":
        event["timestamp"] = "invalid-timestamp"
    elif kind == "missing_eventId":
        event.pop("eventId", None)
    elif kind == "missing_user":
        event["data"].pop("user", None)
    elif kind == "missing_name":
        event["data"]["user"].pop("name", None)
    elif kind == "missing_adId":
        event["data"]["engagement"].pop("adId", None)
    elif kind == "invalid_funnelStage":
        event["funnelStage"] = "invalid-stage"
    elif kind == "invalid_eventType":
        event["eventType"] = ["unknown", "event"]
    elif kind == "negative_actionTime":
        event["data"]["engagement"]["actionTime"] = -1
    elif kind == "negative_watchTime":
        event["data"]["engagement"]["watchTime"] = -1
    elif kind == "invalid_gender":
        event["data"]["user"]["gender"] = "alien"
    elif kind == "invalid_followers":
        event["data"]["user"]["followers"] = "not-a-number"
    else:  # pragma: no cover - callers check the kind first
        raise AssertionError(kind)


# What each corruption needs in the event it is applied to: the key path it touches, and the
# (source, funnelStage) pairs whose fresh events have that key.
_ANY: Final = (("facebook", "top"), ("facebook", "bottom"), ("tiktok", "top"), ("tiktok", "bottom"))
_NEEDS: Final[Mapping[str, tuple[tuple[str, ...], tuple[tuple[str, str], ...]]]] = {
    "invalid_timestamp": ((), _ANY),
    "missing_eventId": ((), _ANY),
    "missing_user": (("data", "user"), _ANY),
    "missing_name": (("data", "user", "name"), (("facebook", "top"), ("facebook", "bottom"))),
    "missing_adId": (("data", "engagement", "adId"), (("facebook", "bottom"),)),
    "invalid_funnelStage": ((), _ANY),
    "invalid_eventType": ((), _ANY),
    "negative_actionTime": (
        ("data", "engagement", "actionTime"),
        (("facebook", "top"), ("tiktok", "bottom")),
    ),
    "negative_watchTime": (("data", "engagement", "watchTime"), (("tiktok", "top"),)),
    "invalid_gender": (("data", "user", "gender"), (("facebook", "top"), ("facebook", "bottom"))),
    "invalid_followers": (("data", "user", "followers"), (("tiktok", "top"), ("tiktok", "bottom"))),
}


# uuid4 layout: version nibble 4, RFC 4122 variant bits 10.
_UUID_CLEAR: Final = ~((0xF000 << 64) | (0xC000 << 48))
_UUID_SET: Final = (0x4000 << 64) | (0x8000 << 48)


def _utc_now() -> datetime:
    return datetime.now(UTC)


def user_mix(
    returning_share: float = DEFAULT_RETURNING_SHARE,
    hot_users: int = 0,
    hot_share: float | None = None,
) -> tuple[float, int, float]:
    """Check a user mix and resolve `hot_share=None`; returns (returning, hot users, hot share).

    Both shares are of all events, so together they are at most 1; the remaining events get
    new users. `hot_share=None` means DEFAULT_HOT_SHARE with hot users, 0 without. Raises
    ValueError naming the bad value. The publisher's and the seeder's options use it too, so
    a bad mix is refused before any work starts, with the same message everywhere.
    """
    if not 0.0 <= returning_share <= 1.0:
        raise ValueError(f"returning_share must be between 0 and 1, not {returning_share!r}")
    if isinstance(hot_users, bool) or not isinstance(hot_users, int) or hot_users < 0:
        raise ValueError(f"hot_users must be an integer >= 0, not {hot_users!r}")
    if hot_share is None:
        hot_share = DEFAULT_HOT_SHARE if hot_users else 0.0
    elif not 0.0 <= hot_share <= 1.0:
        raise ValueError(f"hot_share must be between 0 and 1, not {hot_share!r}")
    elif hot_share > 0.0 and not hot_users:
        raise ValueError(f"hot_share {hot_share!r} needs hot_users > 0")
    if returning_share + hot_share > 1.0:
        raise ValueError(
            f"returning_share {returning_share!r} and hot_share {hot_share!r} add up to more"
            " than 1: both are shares of all events"
        )
    return returning_share, hot_users, hot_share


def _count(n: int, share: float, name: str) -> int:
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1, not {share!r}")
    return round(n * share)


def _facebook_dict(user: _FacebookUser) -> dict[str, Any]:
    """A Facebook `data.user` object, new for every event (callers may corrupt theirs)."""
    user_id, name, age, gender, country, city = user
    return {
        "userId": user_id,
        "name": name,
        "age": age,
        "gender": gender,
        "location": {"country": country, "city": city},
    }


class Generator:
    """Seeded source of publisher-shaped events, valid or corrupted.

    `seed=None` seeds from the OS. `clock` gives "now" for events without an explicit `at`
    (default: wall time, UTC); inject a fixed one to make timestamps reproducible too.

    Users, per source: `returning_share` of the events reuse one of the last 500 new users
    of that source; with `hot_users=N`, `hot_share` of the events (None: DEFAULT_HOT_SHARE)
    come from a fixed pool of N users, made once from the seed and picked uniformly; the
    rest get new users. A hot or returning Facebook user keeps every attribute; a TikTok
    user's follower count moves a little between events. See `user_mix` for what is refused.
    """

    def __init__(
        self,
        seed: int | None = None,
        *,
        clock: Callable[[], datetime] | None = None,
        returning_share: float = DEFAULT_RETURNING_SHARE,
        hot_users: int = 0,
        hot_share: float | None = None,
    ) -> None:
        self._returning_share, hot_users, self._hot_share = user_mix(
            returning_share, hot_users, hot_share
        )
        self._rng = Random(seed)
        self._clock = clock or _utc_now
        self._recent_facebook: deque[_FacebookUser] = deque(maxlen=_RECENT_USERS)
        self._recent_tiktok: deque[_TiktokUser] = deque(maxlen=_RECENT_USERS)
        # Creators that TikTok users visit and follow: a fixed set per generator, since
        # visits concentrate on a few profiles.
        self._profiles = tuple(str(self._rng.randrange(10**17, 10**19)) for _ in range(200))
        self._countries = tuple(COUNTRIES)
        self._country_cum = tuple(accumulate(_COUNTRY_WEIGHTS[name] for name in COUNTRIES))
        # Made after everything above, so that without hot users the random stream (and so
        # every seeded output) is what it was before hot users existed.
        self._hot_facebook = tuple(self._new_facebook_user() for _ in range(hot_users))
        hot_tiktok = [self._new_tiktok_user() for _ in range(hot_users)]
        self._hot_tiktok = tuple((user_id, username) for user_id, username, _ in hot_tiktok)
        # Mutable: a hot account's audience drifts from event to event.
        self._hot_followers = [followers for _, _, followers in hot_tiktok]
        # A draw below hot_share picks hot user int(draw * scale): one random number for both.
        self._hot_scale = hot_users / self._hot_share if self._hot_share else 0.0
        self._next_facebook_user = self._facebook_user
        self._next_tiktok_user = self._tiktok_user
        if self._hot_share:
            self._next_facebook_user = self._facebook_user_with_hot
            self._next_tiktok_user = self._tiktok_user_with_hot

    # -- public API ------------------------------------------------------------------------

    def facebook(self, event_type: str | None = None, at: datetime | None = None) -> dict[str, Any]:
        """One valid Facebook event of `event_type` (random if None) at `at` (default: now)."""
        stage, event_type = self._stage_and_type("facebook", event_type)
        timestamp = self._now() if at is None else at
        user = self._next_facebook_user()
        if stage == "top":
            engagement = self._facebook_top(event_type, timestamp)
        else:
            engagement = self._facebook_bottom(event_type)
        return {
            "eventId": f"fb-{self._uuid()}",
            "timestamp": isoformat(timestamp),
            "source": "facebook",
            "funnelStage": stage,
            "eventType": event_type,
            "data": {"user": user, "engagement": engagement},
        }

    def tiktok(self, event_type: str | None = None, at: datetime | None = None) -> dict[str, Any]:
        """One valid TikTok event of `event_type` (random if None) at `at` (default: now)."""
        stage, event_type = self._stage_and_type("tiktok", event_type)
        timestamp = self._now() if at is None else at
        user = self._next_tiktok_user()
        if stage == "top":
            engagement = self._tiktok_top()
        else:
            engagement = self._tiktok_bottom(event_type, timestamp)
        return {
            "eventId": f"ttk-{self._uuid()}",
            "timestamp": isoformat(timestamp),
            "source": "tiktok",
            "funnelStage": stage,
            "eventType": event_type,
            "data": {"user": user, "engagement": engagement},
        }

    def event(self, at: datetime | None = None) -> dict[str, Any]:
        """One valid event: either source (even odds), top funnel 2/3 of the time."""
        if self._rng.random() < 0.5:
            return self.facebook(None, at)
        return self.tiktok(None, at)

    def batch(
        self,
        n: int,
        *,
        duplicate_share: float = 0.0,
        out_of_order_share: float = 0.0,
        invalid_share: float = 0.0,
    ) -> list[dict[str, Any]]:
        """`n` events as one POST body, with exact counts of each anomaly, in random positions.

        The batch holds exactly `round(n * share)` events of each kind, and the kinds do not
        overlap:
        - duplicates: copies (equal, not shared objects) of earlier valid events of the batch,
          same eventId; a copy of an out-of-order event is a duplicate, not out of order;
        - out of order: valid events timestamped 1 minute to 12 hours before the batch;
        - invalid: fresh events passed through `corrupt` with a random fitting kind.
        The rest are fresh valid events timestamped within the last second. Raises ValueError
        when a share is outside [0, 1] or the counts do not fit in `n` (duplicates need at
        least one valid original).
        """
        if n < 0:
            raise ValueError(f"n must be >= 0, not {n}")
        duplicates = _count(n, duplicate_share, "duplicate_share")
        late = _count(n, out_of_order_share, "out_of_order_share")
        invalid = _count(n, invalid_share, "invalid_share")
        originals = n - duplicates - invalid
        if originals < late or (duplicates and originals < 1):
            raise ValueError(
                f"shares do not fit in {n} events: {duplicates} duplicates, {late} out of order "
                f"and {invalid} invalid leave {originals} valid originals"
            )
        roles = ["dup"] * duplicates + ["late"] * late + ["bad"] * invalid
        roles += ["new"] * (n - len(roles))
        self._rng.shuffle(roles)
        if duplicates:
            # Something must exist to be duplicated: swap the first original in front of the
            # first duplicate, which puts an original before every duplicate.
            first_dup = roles.index("dup")
            first_original = min(roles.index(r) for r in ("new", "late") if r in roles)
            if first_original > first_dup:
                roles[first_dup], roles[first_original] = roles[first_original], "dup"

        now = self._now()
        rng = self._rng
        events: list[dict[str, Any]] = []
        valid: list[dict[str, Any]] = []
        for role in roles:
            if role == "dup":
                events.append(_copy(rng.choice(valid)))
                continue
            if role == "late":
                at = now - timedelta(seconds=self._late_seconds())
            else:
                # The publisher generates a whole POST within about a second.
                at = now - timedelta(milliseconds=rng.randrange(1000))
            event = self.event(at)
            if role == "bad":
                event = self._corrupt_owned(event, rng.choice(self._fitting_kinds(event)))
            else:
                valid.append(event)
            events.append(event)
        return events

    def corrupt(self, event: dict[str, Any], kind: str | None = None) -> dict[str, Any]:
        """A corrupted deep copy of `event`; `event` itself is left as it was.

        With `kind=None` a random kind that applies to this event is used. With an explicit
        kind that cannot apply to it (e.g. `missing_adId` on a TikTok event, which has no
        adId), the copy is replaced by a fresh valid event that has the field — of the same
        source when that source has it, at the same timestamp when it parses — and that one is
        corrupted. Given a valid event, the result is rejected by the schema with a reason
        naming exactly the corrupted field.
        """
        if kind is None:
            kind = self._rng.choice(self._fitting_kinds(event))
        elif kind not in _NEEDS:
            raise ValueError(f"unknown corruption kind {kind!r}; one of {CORRUPTION_KINDS}")
        return self._corrupt_owned(_copy(event), kind)

    # -- event parts ---------------------------------------------------------------------

    def _now(self) -> datetime:
        return self._clock()

    def _uuid(self) -> str:
        # What str(uuid.UUID(int=bits, version=4)) gives, without building the object: this
        # runs twice per event.
        bits = self._rng.getrandbits(128) & _UUID_CLEAR | _UUID_SET
        h = f"{bits:032x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    def _stage_and_type(self, source: str, event_type: str | None) -> tuple[str, str]:
        types = EVENT_TYPES[source]
        if event_type is None:
            stage = "top" if self._rng.random() < _TOP_SHARE else "bottom"
            return stage, self._rng.choice(types[stage])
        for stage in ("top", "bottom"):
            if event_type in types[stage]:
                return stage, event_type
        every = types["top"] + types["bottom"]
        raise ValueError(f"{event_type!r} is not a {source} event type; one of {every}")

    def _country(self) -> str:
        return self._rng.choices(self._countries, cum_weights=self._country_cum)[0]

    def _new_facebook_user(self) -> _FacebookUser:
        # Kept as a tuple, not the dict: callers own (and may corrupt) the dicts they get.
        rng = self._rng
        low, high = rng.choices(AGE_BUCKETS, cum_weights=_AGE_CUM_WEIGHTS)[0]
        country = self._country()
        user_id = self._uuid()
        name = f"{rng.choice(_FIRST_NAMES)} {rng.choice(_LAST_NAMES)}"
        age = rng.randint(low, high)
        gender = rng.choices(_FB_GENDERS, cum_weights=_FB_GENDER_CUM_WEIGHTS)[0]
        city = rng.choice(COUNTRIES[country])
        return user_id, name, age, gender, country, city

    def _new_tiktok_user(self) -> _TiktokUser:
        rng = self._rng
        low, high = rng.choices(FOLLOWER_BUCKETS, cum_weights=_FOLLOWER_CUM_WEIGHTS)[0]
        # Log-uniform inside the bucket: small accounts are far more common than big ones.
        followers = int(math.exp(rng.uniform(math.log(low + 1), math.log(high + 1))))
        followers = min(high, max(low, followers))
        first = _handle(rng.choice(_FIRST_NAMES))
        last = _handle(rng.choice(_LAST_NAMES))
        handle = rng.choice((f"{first}.{last}", f"{first}_{last}", f"{first}{last}", first))
        user_id = self._uuid()
        username = f"{handle}{rng.randrange(100, 10000)}"
        return user_id, username, followers

    # Two versions of each user draw, picked once in __init__: without hot users the benchmark's
    # load path pays for no branch it does not use and makes exactly the draws of before (none
    # while `recent` is empty), so seeded outputs stay what they were.

    def _facebook_user(self) -> dict[str, Any]:
        rng = self._rng
        recent = self._recent_facebook
        if recent and rng.random() < self._returning_share:
            return _facebook_dict(rng.choice(recent))
        user = self._new_facebook_user()
        recent.append(user)
        return _facebook_dict(user)

    def _facebook_user_with_hot(self) -> dict[str, Any]:
        draw = self._rng.random()
        if draw < self._hot_share:
            hot = self._hot_facebook
            user = hot[min(int(draw * self._hot_scale), len(hot) - 1)]
        elif self._recent_facebook and draw < self._hot_share + self._returning_share:
            user = self._rng.choice(self._recent_facebook)
        else:
            user = self._new_facebook_user()
            self._recent_facebook.append(user)
        return _facebook_dict(user)

    def _tiktok_user(self) -> dict[str, Any]:
        rng = self._rng
        recent = self._recent_tiktok
        if recent and rng.random() < self._returning_share:
            return self._returning_tiktok_user()
        user = user_id, username, followers = self._new_tiktok_user()
        recent.append(user)
        return {"userId": user_id, "username": username, "followers": followers}

    def _tiktok_user_with_hot(self) -> dict[str, Any]:
        draw = self._rng.random()
        if draw < self._hot_share:
            return self._hot_tiktok_user(draw)
        if self._recent_tiktok and draw < self._hot_share + self._returning_share:
            return self._returning_tiktok_user()
        user = user_id, username, followers = self._new_tiktok_user()
        self._recent_tiktok.append(user)
        return {"userId": user_id, "username": username, "followers": followers}

    def _returning_tiktok_user(self) -> dict[str, Any]:
        rng = self._rng
        user_id, username, followers = rng.choice(self._recent_tiktok)
        # A returning user's audience has moved a little since.
        followers = max(0, followers + rng.randint(-50, 500))
        return {"userId": user_id, "username": username, "followers": followers}

    def _hot_tiktok_user(self, draw: float) -> dict[str, Any]:
        followers = self._hot_followers
        index = min(int(draw * self._hot_scale), len(followers) - 1)
        # A step of about +-0.1 % (at least +-1), even odds up or down: thousands of events
        # per hot user in a long run leave the count near where it started, as a real
        # account's would be over a day, rather than a walk that runs off to millions.
        count = followers[index]
        count = max(0, count + round((self._rng.random() - 0.5) * (3 + count * 0.002)))
        followers[index] = count
        user_id, username = self._hot_tiktok[index]
        return {"userId": user_id, "username": username, "followers": count}

    def _action_time(self, timestamp: datetime) -> str:
        # The action happened shortly before the publisher reported it.
        return isoformat(timestamp - timedelta(milliseconds=self._rng.randrange(300_000)))

    def _facebook_top(self, event_type: str, timestamp: datetime) -> dict[str, Any]:
        rng = self._rng
        # A video view always has a video; other actions sometimes happen on a video post.
        has_video = event_type == "video.view" or rng.random() < 0.2
        return {
            "actionTime": self._action_time(timestamp),
            "referrer": rng.choice(_FB_REFERRERS),
            "videoId": str(rng.randrange(10**15, 10**16)) if has_video else None,
        }

    def _facebook_bottom(self, event_type: str) -> dict[str, Any]:
        rng = self._rng
        campaign = rng.choice(CAMPAIGN_IDS)
        return {
            "adId": f"{campaign.removeprefix('cmp-')}-ad-{rng.randint(1, _ADS_PER_CAMPAIGN)}",
            "campaignId": campaign,
            "clickPosition": rng.choice(_FB_CLICK_POSITIONS),
            "device": rng.choice(_FB_DEVICES),
            "browser": rng.choice(_FB_BROWSERS),
            "purchaseAmount": self._amount() if event_type in _REVENUE_TYPES else None,
        }

    def _tiktok_top(self) -> dict[str, Any]:
        rng = self._rng
        length = rng.randint(5, 180)
        # Many viewers finish the video (and count as exactly 100); the rest drop off anywhere.
        watched = 100 if rng.random() < 0.25 else round(rng.uniform(0, 100), 2)
        return {
            "watchTime": round(length * watched / 100, 1),
            "percentageWatched": watched,
            "device": rng.choices(_TTK_DEVICES, cum_weights=_TTK_DEVICE_CUM_WEIGHTS)[0],
            "country": self._country(),
            "videoId": str(rng.randrange(7 * 10**18, 74 * 10**17)),
        }

    def _tiktok_bottom(self, event_type: str, timestamp: datetime) -> dict[str, Any]:
        rng = self._rng
        purchase = event_type == "purchase"
        # A purchase is from a shop that may or may not be a profile; visits and follows
        # always name the profile.
        has_profile = not purchase or rng.random() < 0.5
        return {
            "actionTime": self._action_time(timestamp),
            "profileId": rng.choice(self._profiles) if has_profile else None,
            "purchasedItem": rng.choice(_PRODUCTS) if purchase else None,
            "purchaseAmount": self._amount() if purchase else None,
        }

    def _amount(self) -> str | None:
        rng = self._rng
        if rng.random() < _NULL_AMOUNT_SHARE:
            return None
        # Log-normal prices, median about $33, mostly under $500; built from integer cents
        # so the string is exact (never a float's repr).
        cents = max(99, round(rng.lognormvariate(3.5, 1.0) * 100))
        if rng.random() < 0.4:
            cents = cents // 100 * 100 + 99  # the usual .99 price point
        return f"{cents // 100}.{cents % 100:02d}"

    def _late_seconds(self) -> float:
        return math.exp(self._rng.uniform(math.log(_LATE_MIN_S), math.log(_LATE_MAX_S)))

    # -- corruption ----------------------------------------------------------------------

    def _fitting_kinds(self, event: dict[str, Any]) -> list[str]:
        return [kind for kind in CORRUPTION_KINDS if _has(event, *_NEEDS[kind][0])]

    def _corrupt_owned(self, event: dict[str, Any], kind: str) -> dict[str, Any]:
        """Corrupt `event` in place (the caller owns it), replacing it first if it must."""
        path, pairs = _NEEDS[kind]
        if not _has(event, *path):
            event = self._fresh_for(event, pairs)
        _corrupt_in_place(event, kind)
        return event

    def _fresh_for(
        self, event: dict[str, Any], pairs: tuple[tuple[str, str], ...]
    ) -> dict[str, Any]:
        """A valid event of one of `pairs`, as close to `event` as that allows."""
        same_source = [pair for pair in pairs if pair[0] == event.get("source")]
        source, stage = self._rng.choice(same_source or pairs)
        event_type = self._rng.choice(EVENT_TYPES[source][stage])
        at: datetime | None = None
        timestamp = event.get("timestamp")
        if isinstance(timestamp, str):
            try:
                at = datetime.fromisoformat(timestamp)
                # Naive means UTC here (isoformat keeps it so); astimezone would assume local.
                at = at if at.tzinfo is None else at.astimezone(UTC)
            except (ValueError, OverflowError):
                at = None  # unparsable or out of range: the fresh event is timestamped now
        if source == "facebook":
            return self.facebook(event_type, at)
        return self.tiktok(event_type, at)
