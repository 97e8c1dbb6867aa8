"""The reports' arithmetic against an independent oracle (SPEC §3 and §4 reporter).

One data set is written once per module into its own database, the way the writers write it
(`storage.insert_events` in a transaction per batch, `storage.insert_rejected`): generated
events of both sources over a few hours, re-sent eventIds whose copies differ in content and
arrive in any order, users that come back with changed attributes, null and odd amounts
("10.005"), purchase amounts on events that are not revenue, rejected events.

Hypothesis then draws report filters, and each answer — the reporter's own endpoint methods
run directly on a pool, so the project's SQL and assembly combine exactly as they do behind
HTTP — must equal what plain Python computes from the SPEC's words over the same events.
Nothing in the oracle comes from `storage` or `reports`: not the buckets, not the rounding,
not the tie-breaks; where the SPEC leaves something open (the order of lists other than the
breakdown, whether empty buckets are listed) the comparison does not depend on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from fractions import Fraction
from random import Random
from typing import Any, Protocol

import asyncpg
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adfunnel import reporter, schema, storage
from adfunnel.storage import RejectedRow, StagedEvent
from adfunnel.testing import run, unique_database
from adfunnel.tools.generator import CAMPAIGN_IDS, CORRUPTION_KINDS, Generator, isoformat

pytestmark = pytest.mark.integration

SEED = 20261127
# Four hours across midnight UTC, so that `day` series have two buckets.
WINDOW_START = datetime(2026, 11, 27, 22, 0, tzinfo=UTC)
WINDOW = timedelta(hours=4)
WINDOW_MS = int(WINDOW / timedelta(milliseconds=1))
BASE_EVENTS = 1_600
BATCH = 250
EXAMPLES = 200

# SPEC §3, written out again: the oracle shares no table with the code under test.
TYPES = {
    "facebook": {
        "top": ("ad.view", "page.like", "comment", "video.view"),
        "bottom": ("ad.click", "form.submission", "checkout.complete"),
    },
    "tiktok": {
        "top": ("video.view", "like", "share", "comment"),
        "bottom": ("profile.visit", "purchase", "follow"),
    },
}
REVENUE_TYPE = {"facebook": "checkout.complete", "tiktok": "purchase"}
# SPEC §4: lower bound of each bucket, in the SPEC's order.
AGE_BUCKETS = (
    ("13-17", 13),
    ("18-24", 18),
    ("25-34", 25),
    ("35-44", 35),
    ("45-54", 45),
    ("55-64", 55),
    ("65+", 65),
)
FOLLOWER_BUCKETS = (
    ("0-999", 0),
    ("1000-9999", 1_000),
    ("10000-99999", 10_000),
    ("100000-999999", 100_000),
    ("1000000+", 1_000_000),
)
# Amounts past the cent: rounding each before summing would give other totals.
ODD_AMOUNTS = ("10.005", "0.005", "0.004", "2.675", "19.995", "0.125", "3.14159", "7", "0", "1.5")
# Events exactly on minute, hour and day boundaries (offsets into the window, in ms).
EDGE_STAMPS = tuple(
    int(timedelta(**parts) / timedelta(milliseconds=1))
    for parts in (
        {},
        {"minutes": 30},
        {"hours": 1},
        {"hours": 2},
        {"hours": 2, "milliseconds": -1},
        {"hours": 2, "minutes": 1},
        {"hours": 3, "milliseconds": -1},
    )
)
# Timestamps are not always written in UTC with milliseconds (SPEC §3: ISO-8601, no offset
# means UTC): the day bucket of 00:30Z written as 16:30-08:00 is still the UTC one.
OFFSETS = (timezone(timedelta(hours=-8)), timezone(timedelta(hours=5, minutes=45)))
AGE_EDGES = (13, 17, 18, 24, 25, 34, 35, 44, 45, 54, 55, 64, 65, 99)
FOLLOWER_EDGES = (0, 999, 1_000, 9_999, 10_000, 99_999, 100_000, 999_999, 1_000_000)


class SessionServers(Protocol):
    """What this module needs of conftest's `servers` fixture."""

    postgres_url: str

    def database_url(self, name: str) -> str: ...


# -- the data set --------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    """One copy of an event as a writer gets it."""

    payload: dict[str, Any]
    received_at: datetime
    batch: int


@dataclass(frozen=True)
class DataSet:
    deliveries: list[Delivery]
    rejected: list[RejectedRow]  # each dedup_key once, as first written
    rejected_redelivered: list[RejectedRow]


def _tweak(event: dict[str, Any], rng: Random) -> None:
    """Edge values the generator rarely or never produces."""
    user, engagement = event["data"]["user"], event["data"]["engagement"]
    if rng.random() < 0.15:
        moment = datetime.fromisoformat(event["timestamp"])
        style = rng.randrange(3)
        if style == 0:
            event["timestamp"] = moment.astimezone(rng.choice(OFFSETS)).isoformat()
        elif style == 1:
            event["timestamp"] = moment.replace(tzinfo=None).isoformat(timespec="milliseconds")
        elif moment.second or moment.microsecond:  # keep instants on a boundary there
            # Microseconds inside the same millisecond keep instants distinct.
            micro = moment + timedelta(microseconds=rng.randrange(1, 1000))
            event["timestamp"] = micro.isoformat().replace("+00:00", "Z")
    if event["source"] == "facebook" and rng.random() < 0.15:
        user["age"] = rng.choice(AGE_EDGES)
    if event["source"] == "tiktok" and rng.random() < 0.15:
        user["followers"] = rng.choice(FOLLOWER_EDGES)
    if "purchaseAmount" not in engagement:
        return
    if event["eventType"] == REVENUE_TYPE[event["source"]]:
        if rng.random() < 0.3:
            engagement["purchaseAmount"] = rng.choice(ODD_AMOUNTS)
        elif rng.random() < 0.1:
            engagement["purchaseAmount"] = None
    elif rng.random() < 0.15:
        # The schema allows an amount on any bottom-funnel event; only two types are revenue.
        engagement["purchaseAmount"] = rng.choice(ODD_AMOUNTS)


@dataclass(frozen=True)
class Mix:
    """Who sends the events: `returning` of them come from a user seen before; with `hot`
    set, half of them from that many users per source, a fifth of whose events share the
    timestamp of an earlier event of the same user (a tie, settled by the receipt time)."""

    returning: float = 0.3
    hot: int = 0


def build_data(mix: Mix = Mix()) -> DataSet:
    rng = Random(SEED)
    # The generator brings a few users back of its own accord: not in a mix of new users.
    generator = Generator(SEED) if mix.returning else Generator(SEED, returning_share=0.0)
    # Distinct timestamps for the generated events: a tie is only where the mix makes one.
    drawn = rng.sample(range(WINDOW_MS), 2 * BASE_EVENTS)
    stamps = iter([*EDGE_STAMPS, *(n for n in drawn if n not in EDGE_STAMPS)])
    users: dict[str, list[str]] = {"facebook": [], "tiktok": []}
    hot = {source: [f"hot-{source}-{n}" for n in range(mix.hot)] for source in users}
    # Per hot user and hour, the latest timestamp so far: a tie there decides who is latest.
    hot_latest: dict[tuple[str, datetime], tuple[datetime, str]] = {}

    def fresh() -> dict[str, Any]:
        event = generator.event(at=WINDOW_START + timedelta(milliseconds=next(stamps)))
        source, user = event["source"], event["data"]["user"]
        if mix.hot and rng.random() < 0.5:
            user["userId"] = rng.choice(hot[source])
            moment = datetime.fromisoformat(event["timestamp"])
            hour = (user["userId"], moment.replace(minute=0, second=0, microsecond=0))
            if hour in hot_latest and rng.random() < 0.3:
                event["timestamp"] = hot_latest[hour][1]
            elif hour not in hot_latest or moment > hot_latest[hour][0]:
                hot_latest[hour] = (moment, event["timestamp"])
        elif users[source] and rng.random() < mix.returning:
            # A returning user: same userId, every other attribute as generated now.
            user["userId"] = rng.choice(users[source])
        else:
            users[source].append(user["userId"])
        _tweak(event, rng)
        return event

    payloads = [fresh() for _ in range(BASE_EVENTS)]
    # The events on boundaries (the first ones) are never re-sent: they stay where they are.
    for original in rng.sample(payloads[len(EDGE_STAMPS) :], BASE_EVENTS // 6):
        for _ in range(rng.randint(1, 3)):
            if rng.random() < 0.3:
                copy = orjson.loads(orjson.dumps(original))  # a plain re-send
            else:
                copy = fresh()  # same eventId, other content (even another source)
                copy["eventId"] = original["eventId"]
            payloads.append(copy)
    received = rng.sample(range(WINDOW_MS + 3_600_000), len(payloads))
    order = list(range(len(payloads)))
    rng.shuffle(order)  # writers see copies in any order, whatever their receipt times
    deliveries = [
        Delivery(
            payloads[i],
            WINDOW_START + timedelta(milliseconds=received[i]),
            position // BATCH,
        )
        for position, i in enumerate(order)
    ]

    rejected: list[RejectedRow] = []
    rejected_at = rng.sample(range(WINDOW_MS), 150)
    for n, millis in enumerate(rejected_at):
        at = WINDOW_START + timedelta(milliseconds=millis)
        if n % 10 == 0:
            body, reason, event_id, source = None, "body: not valid JSON", None, None
            raw: str | None = '{"eventId": "fb-1", "timestamp": '
        else:
            body = generator.corrupt(generator.event(at=at), rng.choice(CORRUPTION_KINDS))
            verdict = schema.validate_event(body)
            assert isinstance(verdict, schema.Rejected), body
            reason, event_id, raw = verdict.reason, verdict.event_id, None
            source = body.get("source")
        rejected.append(
            RejectedRow(
                dedup_key=f"msg-{n}:{n % 7}",
                event_id=event_id,
                source=source,
                reason=reason,
                batch_index=n % 7,
                payload=None if body is None else orjson.dumps(body).decode(),
                raw=raw,
                correlation_id=None if n % 4 == 0 else f"corr-{n}",
                received_at=at,
            )
        )
    return DataSet(deliveries, rejected, rng.sample(rejected, 20))


async def _load(dsn: str, data: DataSet) -> asyncpg.Pool:
    # A server whose default time zone is not UTC (and not a whole hour off it) must not
    # move any bucket or bound.
    admin = await asyncpg.connect(dsn)
    try:
        name = await admin.fetchval("SELECT current_database()")
        await admin.execute(f"ALTER DATABASE \"{name}\" SET timezone = 'Asia/Kathmandu'")
    finally:
        await admin.close()
    pool = await storage.create_pool(dsn, size=2)
    async with pool.acquire() as conn:
        await storage.migrate(conn)
        batches: dict[int, list[StagedEvent]] = defaultdict(list)
        for seq, delivery in enumerate(data.deliveries):
            batches[delivery.batch].append(
                StagedEvent(
                    row=schema.event_row(delivery.payload),
                    payload=orjson.dumps(delivery.payload).decode(),
                    correlation_id=f"corr-{seq}",
                    received_at=delivery.received_at,
                    stream_seq=None if seq % 17 == 0 else seq,
                )
            )
        for number in sorted(batches):
            async with conn.transaction():
                await storage.insert_events(conn, batches[number])
        half = len(data.rejected) // 2
        await storage.insert_rejected(conn, data.rejected[:half])
        await storage.insert_rejected(conn, data.rejected_redelivered + data.rejected[half:])
    return pool


@dataclass(frozen=True)
class Fact:
    """One stored event as the oracle reads it from its payload (SPEC §3 shapes)."""

    event_id: str
    at: datetime
    received_at: datetime
    source: str
    stage: str
    type: str
    user: dict[str, Any]
    engagement: dict[str, Any]


def parse_moment(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def stored_facts(deliveries: Iterable[Delivery]) -> list[Fact]:
    """The earliest received copy of each eventId (SPEC §3: the first stored copy wins)."""
    first: dict[str, Delivery] = {}
    for delivery in deliveries:
        known = first.get(delivery.payload["eventId"])
        if known is None or delivery.received_at < known.received_at:
            first[delivery.payload["eventId"]] = delivery
    return [
        Fact(
            event_id=d.payload["eventId"],
            at=parse_moment(d.payload["timestamp"]),
            received_at=d.received_at,
            source=d.payload["source"],
            stage=d.payload["funnelStage"],
            type=d.payload["eventType"],
            user=d.payload["data"]["user"],
            engagement=d.payload["data"]["engagement"],
        )
        for d in first.values()
    ]


# Built at import: the strategies sample stored instants to put a bound exactly on them.
DATA = build_data()
FACTS = stored_facts(DATA.deliveries)
EVENT_TIMES = sorted({f.at for f in FACTS})
RECEIPT_TIMES = sorted({r.received_at for r in DATA.rejected})


@dataclass
class Loaded:
    data: DataSet
    facts: list[Fact]
    runner: asyncio.Runner
    pool: asyncpg.Pool
    endpoints: Any  # the reporter's endpoint methods, bound to `pool`

    def call(self, name: str, **params: Any) -> Any:
        response = self.runner.run(getattr(self.endpoints, name)(**params))
        assert response.status_code == 200
        return orjson.loads(response.body)


def _endpoints(pool: asyncpg.Pool) -> Any:
    """The Reporter's methods without Serve: `_db()` answers `pool`."""
    deployment: Any = reporter.Reporter  # a Serve Deployment; the class is inside
    deployed: Any = deployment.func_or_class
    # Serve's ingress wrapper has an async __del__; a plain one keeps GC quiet.
    bare: Any = type("EndpointsOnly", (deployed,), {"__del__": lambda self: None})
    endpoints = object.__new__(bare)
    endpoints._pool = pool
    return endpoints


# The demographics oracle also runs on the other user mixes of SPEC §3: new users only, and
# a few hot users carrying half of the events.
OTHER_MIXES = {"new users": Mix(returning=0.0), "hot users": Mix(returning=0.3, hot=3)}
MIX_DATA = {name: build_data(mix) for name, mix in OTHER_MIXES.items()}
MIX_FACTS = {name: stored_facts(data.deliveries) for name, data in MIX_DATA.items()}
MIX_TIMES = {name: sorted({f.at for f in facts}) for name, facts in MIX_FACTS.items()}


@contextlib.contextmanager
def _loaded(servers: SessionServers, data: DataSet, facts: list[Fact]) -> Iterator[Loaded]:
    name = unique_database("math")
    with asyncio.Runner() as runner:
        runner.run(storage.ensure_database(servers.postgres_url, name))
        pool = runner.run(_load(servers.database_url(name), data))
        try:
            yield Loaded(data, facts, runner, pool, _endpoints(pool))
        finally:
            runner.run(pool.close())
            runner.run(storage.drop_database(servers.postgres_url, name))


@pytest.fixture(scope="module")
def loaded(servers: SessionServers) -> Iterator[Loaded]:
    with _loaded(servers, DATA, FACTS) as data_set:
        yield data_set


@pytest.fixture(scope="module", params=sorted(OTHER_MIXES))
def loaded_mix(request: pytest.FixtureRequest, servers: SessionServers) -> Iterator[Loaded]:
    with _loaded(servers, MIX_DATA[request.param], MIX_FACTS[request.param]) as data_set:
        yield data_set


# -- the oracle's own arithmetic -----------------------------------------------------------


def two_places(amount: Fraction) -> str:
    """Exact non-negative amount shown with two places, half-up."""
    cents = int(amount * 100 + Fraction(1, 2))  # floor, as the amount is >= 0
    return f"{cents // 100}.{cents % 100:02d}"


def bucket_start(moment: datetime, interval: str) -> datetime:
    moment = moment.astimezone(UTC)
    if interval == "minute":
        return moment.replace(second=0, microsecond=0)
    if interval == "hour":
        return moment.replace(minute=0, second=0, microsecond=0)
    assert interval == "day"
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def bucket_of(value: int, buckets: Sequence[tuple[str, int]]) -> str:
    return [name for name, low in buckets if value >= low][-1]


@dataclass(frozen=True)
class Range:
    """`from` inclusive, `to` exclusive (SPEC §4)."""

    start: datetime | None
    end: datetime | None

    def holds(self, moment: datetime) -> bool:
        return (self.start is None or moment >= self.start) and (
            self.end is None or moment < self.end
        )


def latest_per_user(facts: Iterable[Fact]) -> dict[str, Fact]:
    """Each user's newest event; of two at the same instant, the one received last (the
    rule of docs/api.md; receipt times never tie in these data sets)."""
    latest: dict[str, Fact] = {}
    for fact in sorted(facts, key=lambda f: (f.at, f.received_at)):
        latest[fact.user["userId"]] = fact
    return latest


def is_revenue(fact: Fact) -> bool:
    return (
        fact.type == REVENUE_TYPE[fact.source] and fact.engagement.get("purchaseAmount") is not None
    )


def amount(fact: Fact) -> Fraction:
    return Fraction(Decimal(fact.engagement["purchaseAmount"]))


def median(values: Sequence[int]) -> Fraction:
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return Fraction(ordered[middle])
    return Fraction(ordered[middle - 1] + ordered[middle], 2)


def keyed(rows: Sequence[dict[str, Any]], *names: str) -> dict[Any, Any]:
    """A listing as {key: row}, checking that no key is listed twice."""
    table = {tuple(row[n] for n in names) if len(names) > 1 else row[names[0]]: row for row in rows}
    assert len(table) == len(rows), f"a key is listed twice: {rows}"
    return table


def user_counts(rows: Sequence[dict[str, Any]], *names: str) -> dict[Any, int]:
    """{key: users} of a demographics listing, empty entries left out."""
    return {key: row["users"] for key, row in keyed(rows, *names).items() if row["users"]}


def bucket_counts(
    rows: Sequence[dict[str, Any]], buckets: Sequence[tuple[str, int]]
) -> dict[str, int]:
    """{bucket: users} of a bucket listing: only known buckets, in the SPEC's order."""
    names = [row["bucket"] for row in rows if row["users"]]
    order = [name for name, _ in buckets]
    assert set(names) <= set(order), names
    assert names == sorted(names, key=order.index), names
    return user_counts(rows, "bucket")


def same_number(shown: Any, exact: Fraction | None) -> bool:
    """A statistic shown as a JSON number: integral ones exactly, others to the cent."""
    if exact is None:
        return shown is None
    if exact.denominator == 1:
        return isinstance(shown, int) and shown == exact
    return isinstance(shown, int | float) and abs(Fraction(shown) - exact) <= Fraction(1, 199)


# -- filters -------------------------------------------------------------------------------


OFFSET = timezone(timedelta(hours=2))


def render(moment: datetime, style: str) -> str:
    if style == "z":
        return isoformat(moment)
    if style == "naive":  # no offset means UTC
        return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="milliseconds")
    return moment.astimezone(OFFSET).isoformat(timespec="milliseconds")


def moments(exact: Sequence[datetime]) -> st.SearchStrategy[datetime | None]:
    """No bound, a whole second in or around the window, or exactly some stored instant."""
    seconds = int(WINDOW.total_seconds())
    return st.one_of(
        st.none(),
        st.integers(-3_600, seconds + 3_600).map(lambda s: WINDOW_START + timedelta(seconds=s)),
        st.sampled_from(exact),
    )


@st.composite
def time_range(draw: st.DrawFn, exact: Sequence[datetime]) -> tuple[Range, str | None, str | None]:
    start, end = draw(moments(exact)), draw(moments(exact))
    if start is not None and end is not None:
        if start == end:
            end = None
        elif start > end:
            start, end = end, start
    styles = st.sampled_from(("z", "naive", "offset"))
    start_text = None if start is None else render(start, draw(styles))
    end_text = None if end is None else render(end, draw(styles))
    return Range(start, end), start_text, end_text


@st.composite
def event_kind(draw: st.DrawFn) -> tuple[str | None, str | None, str | None]:
    """A valid (source, funnelStage, eventType) filter combination, each part optional."""
    source = draw(st.sampled_from((None, "facebook", "tiktok")))
    stage = draw(st.sampled_from((None, "top", "bottom")))
    sources = [source] if source else list(TYPES)
    stages = [stage] if stage else ["top", "bottom"]
    types = sorted({t for s in sources for g in stages for t in TYPES[s][g]})
    return source, stage, draw(st.one_of(st.none(), st.sampled_from(types)))


INTERVALS = st.sampled_from((None, "minute", "hour", "day"))
SOURCES = st.sampled_from((None, "facebook", "tiktok"))
CAMPAIGNS = st.one_of(st.none(), st.sampled_from((*CAMPAIGN_IDS, "cmp-nobody-runs-this")))


# -- the data is what the reports must cope with -------------------------------------------


def test_the_stored_copy_of_each_event_is_the_earliest_received(loaded: Loaded) -> None:
    rows = loaded.runner.run(
        loaded.pool.fetch("SELECT event_id, user_id, event_time, payload, payload_json FROM events")
    )
    stored = {r["event_id"]: orjson.loads(storage.event_json(r)) for r in rows}
    winners = {f.event_id: f for f in loaded.facts}
    assert stored.keys() == winners.keys()
    for event_id, payload in stored.items():
        fact = winners[event_id]
        assert (parse_moment(payload["timestamp"]), payload["source"], payload["data"]) == (
            fact.at,
            fact.source,
            {"user": fact.user, "engagement": fact.engagement},
        )


def test_the_data_set_has_every_hard_case(loaded: Loaded) -> None:
    copies: dict[str, list[Delivery]] = defaultdict(list)
    for delivery in loaded.data.deliveries:
        copies[delivery.payload["eventId"]].append(delivery)
    # A re-sent eventId whose earliest received copy differs and was written in a later batch
    # than a copy received after it.
    late_winners = 0
    for group in copies.values():
        first = min(group, key=lambda d: d.received_at)
        if any(d.batch < first.batch and d.payload != first.payload for d in group):
            late_winners += 1
    assert late_winners >= 20
    # Users whose attributes changed between stored events, and whose latest event is not
    # the first one written.
    by_user: dict[tuple[str, str], list[Fact]] = defaultdict(list)
    for fact in loaded.facts:
        by_user[(fact.source, fact.user["userId"])].append(fact)
    changed = [
        facts
        for facts in by_user.values()
        if len({orjson.dumps(f.user, option=orjson.OPT_SORT_KEYS) for f in facts}) > 1
    ]
    assert sum(1 for f in changed if f[0].source == "facebook") >= 20
    assert sum(1 for f in changed if f[0].source == "tiktok") >= 20
    revenue = [f for f in loaded.facts if f.type == REVENUE_TYPE[f.source]]
    assert any(f.engagement["purchaseAmount"] is None for f in revenue)
    assert sum(1 for f in revenue if is_revenue(f) and amount(f) * 100 % 1) >= 10
    assert any(
        f.stage == "bottom" and not is_revenue(f) and f.engagement.get("purchaseAmount")
        for f in loaded.facts
    )
    assert len({f.at.date() for f in loaded.facts}) == 2
    assert {WINDOW_START + timedelta(milliseconds=n) for n in EDGE_STAMPS} <= set(EVENT_TIMES)
    written = [f for f in loaded.data.deliveries if not f.payload["timestamp"].endswith("Z")]
    assert len(written) >= 50
    tz = loaded.runner.run(loaded.pool.fetchval("SHOW timezone"))
    assert tz == "Asia/Kathmandu"


# -- /reports/events -----------------------------------------------------------------------


@settings(max_examples=EXAMPLES, deadline=None)
@given(span=time_range(EVENT_TIMES), kind=event_kind(), interval=INTERVALS)
def test_events_report(
    loaded: Loaded,
    span: tuple[Range, str | None, str | None],
    kind: tuple[str | None, str | None, str | None],
    interval: str | None,
) -> None:
    window, start, end = span
    source, stage, event_type = kind
    answer = loaded.call(
        "events",
        start=start,
        end=end,
        source=source,
        funnel_stage=stage,
        event_type=event_type,
        interval=interval,
    )
    chosen = [
        f
        for f in loaded.facts
        if window.holds(f.at)
        and source in (None, f.source)
        and stage in (None, f.stage)
        and event_type in (None, f.type)
    ]
    assert answer["total"] == len(chosen)
    counts = Counter((f.source, f.stage, f.type) for f in chosen)
    listed = keyed(answer["breakdown"], "source", "funnelStage", "eventType")
    assert {key: row["count"] for key, row in listed.items()} == counts
    shown = [row["count"] for row in answer["breakdown"]]
    assert shown == sorted(shown, reverse=True)
    if interval is None:
        assert "series" not in answer
        return
    per_bucket = Counter(bucket_start(f.at, interval) for f in chosen)
    series = [(parse_moment(row["bucket"]), row["count"]) for row in answer["series"]]
    assert series == sorted(per_bucket.items())
    assert all(row["bucket"].endswith(("Z", "+00:00")) for row in answer["series"])


# -- /reports/revenue ----------------------------------------------------------------------


def money_table(
    rows: Sequence[dict[str, Any]], name: str, scope: Iterable[str] | None = None
) -> dict[str, tuple[str, int]]:
    """{key: (revenue, transactions)}; an entry without transactions is allowed only as
    "0.00" and, given `scope`, only for a key in it."""
    table: dict[str, tuple[str, int]] = {}
    for key, row in keyed(rows, name).items():
        if row["transactions"]:
            table[key] = (row["revenue"], row["transactions"])
        else:
            assert row["revenue"] == "0.00", row
            assert scope is None or key in scope, row
    return table


def money_groups(facts: Iterable[Fact], key: Any) -> dict[Any, tuple[str, int]]:
    sums: dict[Any, Fraction] = defaultdict(Fraction)
    counts: Counter[Any] = Counter()
    for fact in facts:
        sums[key(fact)] += amount(fact)
        counts[key(fact)] += 1
    return {k: (two_places(sums[k]), counts[k]) for k in counts}


@settings(max_examples=EXAMPLES, deadline=None)
@given(
    span=time_range(EVENT_TIMES),
    source=SOURCES,
    campaign=CAMPAIGNS,
    interval=INTERVALS,
)
def test_revenue_report(
    loaded: Loaded,
    span: tuple[Range, str | None, str | None],
    source: str | None,
    campaign: str | None,
    interval: str | None,
) -> None:
    window, start, end = span
    answer = loaded.call(
        "revenue", start=start, end=end, source=source, campaign_id=campaign, interval=interval
    )
    chosen = [
        f
        for f in loaded.facts
        if is_revenue(f)
        and window.holds(f.at)
        and source in (None, f.source)
        # TikTok events have no campaign: a campaign's revenue is Facebook's.
        and (
            campaign is None or (f.source == "facebook" and f.engagement["campaignId"] == campaign)
        )
    ]
    assert answer["total"] == two_places(sum((amount(f) for f in chosen), Fraction()))
    assert answer["transactions"] == len(chosen)
    scope = [source] if source else list(TYPES)
    assert money_table(answer["bySource"], "source", scope) == money_groups(
        chosen, lambda f: f.source
    )
    assert money_table(answer["byCampaign"], "campaignId") == money_groups(
        (f for f in chosen if f.source == "facebook"), lambda f: f.engagement["campaignId"]
    )
    if interval is None:
        assert "series" not in answer
        return
    per_bucket = money_groups(chosen, lambda f: bucket_start(f.at, interval))
    series = [
        (parse_moment(row["bucket"]), row["revenue"], row["transactions"])
        for row in answer["series"]
    ]
    assert series == [(b, *per_bucket[b]) for b in sorted(per_bucket)]


# -- /reports/demographics -----------------------------------------------------------------


def check_facebook(section: dict[str, Any], facts: list[Fact]) -> None:
    latest = latest_per_user(facts).values()
    users = [f.user for f in latest]
    assert section["users"] == len(users)
    ages = Counter(bucket_of(u["age"], AGE_BUCKETS) for u in users)
    assert bucket_counts(section["age"], AGE_BUCKETS) == ages
    assert user_counts(section["gender"], "gender") == Counter(u["gender"] for u in users)
    countries = Counter(u["location"]["country"] for u in users)
    assert user_counts(section["countries"], "country") == countries
    cities = Counter((u["location"]["country"], u["location"]["city"]) for u in users)
    assert user_counts(section["cities"], "country", "city") == cities


def check_tiktok(section: dict[str, Any], facts: list[Fact]) -> None:
    followers = [f.user["followers"] for f in latest_per_user(facts).values()]
    assert section["users"] == len(followers)
    stats = section["followers"]
    if followers:
        assert stats["min"] == min(followers) and stats["max"] == max(followers)
        assert same_number(stats["avg"], Fraction(sum(followers), len(followers))), stats
        assert same_number(stats["median"], median(followers)), stats
    else:
        assert stats == {"min": None, "max": None, "avg": None, "median": None}
    buckets = Counter(bucket_of(n, FOLLOWER_BUCKETS) for n in followers)
    assert bucket_counts(section["followerBuckets"], FOLLOWER_BUCKETS) == buckets
    # Devices and countries: each user's latest top-funnel event.
    top = [f.engagement for f in latest_per_user(f for f in facts if f.stage == "top").values()]
    assert user_counts(section["devices"], "device") == Counter(e["device"] for e in top)
    assert user_counts(section["countries"], "country") == Counter(e["country"] for e in top)


@settings(max_examples=EXAMPLES, deadline=None)
@given(span=time_range(EVENT_TIMES), source=SOURCES)
def test_demographics_report(
    loaded: Loaded, span: tuple[Range, str | None, str | None], source: str | None
) -> None:
    window, start, end = span
    answer = loaded.call("demographics", start=start, end=end, source=source)
    sections = [source] if source else list(TYPES)
    assert set(answer) - {"filters"} == set(sections)
    in_range = [f for f in loaded.facts if window.holds(f.at)]
    if "facebook" in sections:
        check_facebook(answer["facebook"], [f for f in in_range if f.source == "facebook"])
    if "tiktok" in sections:
        check_tiktok(answer["tiktok"], [f for f in in_range if f.source == "tiktok"])


@settings(max_examples=EXAMPLES // 2, deadline=None)
@given(data=st.data(), source=SOURCES)
def test_demographics_report_on_other_mixes(
    loaded_mix: Loaded, data: st.DataObject, source: str | None
) -> None:
    mix = next(name for name, facts in MIX_FACTS.items() if facts is loaded_mix.facts)
    _, start, end = data.draw(time_range(MIX_TIMES[mix]), label="range")
    # The bounds as sent (to the millisecond): a tie copies an instant whose microseconds
    # a bound drawn from it would otherwise keep.
    window = Range(
        None if start is None else parse_moment(start), None if end is None else parse_moment(end)
    )
    answer = loaded_mix.call("demographics", start=start, end=end, source=source)
    in_range = [f for f in loaded_mix.facts if window.holds(f.at)]
    if source in (None, "facebook"):
        check_facebook(answer["facebook"], [f for f in in_range if f.source == "facebook"])
    if source in (None, "tiktok"):
        check_tiktok(answer["tiktok"], [f for f in in_range if f.source == "tiktok"])


def test_the_other_mixes_have_their_hard_cases() -> None:
    for name, facts in MIX_FACTS.items():
        per_user = Counter((f.source, f.user["userId"]) for f in facts)
        hot = sum(n for (_, user), n in per_user.items() if user.startswith("hot-"))
        if name == "new users":
            assert max(per_user.values()) == 1
            continue
        assert hot > len(facts) * 0.4  # hot users carry about half the events
        ties = Counter((f.source, f.user["userId"], f.at) for f in facts)
        assert sum(1 for n in ties.values() if n > 1) > 20  # a user's latest events tie
        hours = {
            (f.source, f.user["userId"], f.at.replace(minute=0, second=0, microsecond=0))
            for f in facts
            if f.user["userId"].startswith("hot-")
        }
        assert len(hours) >= 20  # hot users are active across many hours


# -- /reports/rejected ---------------------------------------------------------------------


@settings(max_examples=EXAMPLES, deadline=None)
@given(span=time_range(RECEIPT_TIMES), limit=st.sampled_from((0, 1, 7, 20, 1000)))
def test_rejected_report(
    loaded: Loaded, span: tuple[Range, str | None, str | None], limit: int
) -> None:
    window, start, end = span
    answer = loaded.call("rejected", start=start, end=end, limit=limit)
    chosen = [r for r in loaded.data.rejected if window.holds(r.received_at)]
    assert answer["total"] == len(chosen)
    by_reason = {row["reason"]: row["count"] for row in answer["byReason"]}
    assert len(by_reason) == len(answer["byReason"])
    assert by_reason == Counter(r.reason for r in chosen)
    newest = sorted(chosen, key=lambda r: r.received_at, reverse=True)[:limit]
    assert [
        (parse_moment(s["receivedAt"]), s["reason"], s["correlationId"], s["payload"])
        for s in answer["samples"]
    ] == [
        (
            r.received_at,
            r.reason,
            r.correlation_id,
            r.raw if r.payload is None else json.loads(r.payload),
        )
        for r in newest
    ]


# -- disagreements found: the project is wrong here ----------------------------------------


async def _answer_for(dsn: str, payload: dict[str, Any], endpoint: str, **params: Any) -> Any:
    """One stored event, then one report over it."""
    pool = await _load(dsn, DataSet([Delivery(payload, WINDOW_START, 0)], [], []))
    try:
        response = await getattr(_endpoints(pool), endpoint)(**params)
        assert response.status_code == 200
        return orjson.loads(response.body)
    finally:
        await pool.close()


def test_revenue_of_an_amount_with_thirty_digits_is_exact(database: str) -> None:
    event = Generator(SEED).tiktok("purchase", at=WINDOW_START)
    event["data"]["engagement"]["purchaseAmount"] = "12345678901234567890.0049999999"
    answer = run(
        _answer_for(
            database,
            event,
            "revenue",
            start=None,
            end=None,
            source=None,
            campaign_id=None,
            interval="hour",
        )
    )
    exact = two_places(Fraction(Decimal("12345678901234567890.0049999999")))
    assert exact == "12345678901234567890.00"
    assert answer["series"][0]["revenue"] == exact  # money() of the SQL sum alone is right
    assert answer["total"] == exact  # but a sum of sums in Python is not
    assert money_table(answer["bySource"], "source") == {"tiktok": (exact, 1)}


def test_followers_min_and_max_are_the_exact_counts(database: str) -> None:
    event = Generator(SEED).tiktok("like", at=WINDOW_START)
    event["data"]["user"]["followers"] = 2**53 + 1
    answer = run(
        _answer_for(database, event, "demographics", start=None, end=None, source="tiktok")
    )
    stats = answer["tiktok"]["followers"]
    assert (stats["min"], stats["max"]) == (2**53 + 1, 2**53 + 1)
