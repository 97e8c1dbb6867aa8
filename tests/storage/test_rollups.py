"""Rollups: the range plan covers every instant exactly once, and the rollup tables (counts
and demographics) always agree with the raw rows (inserts, earliest-copy replacements,
deletes, concurrent writers)."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adfunnel import storage
from adfunnel.schema import event_row, parse_timestamp
from adfunnel.storage import GRAINS, StagedEvent, plan_segments
from adfunnel.storage._demographics import ONE_HOUR_LIMIT, _edge_hours
from adfunnel.storage._filters import floor_to
from adfunnel.tools.generator import Generator

BASE = datetime(2026, 11, 20, tzinfo=UTC)
moments = st.integers(min_value=0, max_value=10 * 86_400 * 1000).map(
    lambda ms: BASE + timedelta(milliseconds=ms)
)
STEP = {"day": timedelta(days=1), "hour": timedelta(hours=1), "minute": timedelta(minutes=1)}


def covered(plan: dict[str, list[storage.Segment]], probe: datetime) -> int:
    hits = 0
    for segments in plan.values():
        for lo, hi in segments:
            if (lo is None or probe >= lo) and (hi is None or probe < hi):
                hits += 1
    return hits


@settings(max_examples=300, deadline=None)
@given(
    start=st.none() | moments,
    end=st.none() | moments,
    grains=st.sampled_from([GRAINS, GRAINS[1:], GRAINS[2:]]),
    probes=st.lists(moments, min_size=5, max_size=20),
)
def test_the_plan_covers_the_range_exactly_once(
    start: datetime | None, end: datetime | None, grains: tuple[str, ...], probes: list[datetime]
) -> None:
    plan = plan_segments(start, end, grains)
    for probe in [*probes, *(m for m in (start, end) if m)]:
        inside = (start is None or probe >= start) and (end is None or probe < end)
        assert covered(plan, probe) == (1 if inside else 0), (probe, plan)
    for grain in grains:
        for lo, hi in plan[grain]:
            for bound in (lo, hi):
                assert bound is None or floor_to(bound, grain) == bound
    # Raw rows are read only for less than a minute at each end of the range.
    raw = plan["raw"]
    assert all(lo is not None and hi is not None for lo, hi in raw)
    assert sum((hi - lo for lo, hi in raw if lo and hi), timedelta()) < timedelta(minutes=2)
    assert set(plan) == {*grains, "raw"}


@given(start=moments, length=st.integers(1, 3 * 86_400), probes=st.lists(st.floats(0, 0.999)))
def test_the_edge_hours_are_the_hours_of_the_raw_rows(
    start: datetime, length: int, probes: list[float]
) -> None:
    """The reader tests the users at a ragged edge against the hour rows of these hours
    (migration 0027): every raw moment's hour is one of them, and each of them holds one."""
    raw = plan_segments(start, start + timedelta(seconds=length), ("day", "hour"))["raw"]
    bounded = [(lo, hi) for lo, hi in raw if lo is not None and hi is not None]
    assert len(bounded) == len(raw)
    hours = _edge_hours(raw)
    for lo, hi in bounded:
        for probe in (lo, hi - timedelta(microseconds=1), *(lo + (hi - lo) * p for p in probes)):
            assert floor_to(probe, "hour") in hours
    assert all(
        any(lo < hour + timedelta(hours=1) and hour < hi for lo, hi in bounded) for hour in hours
    )
    assert hours == sorted(set(hours))


def test_no_bounds_read_only_the_coarsest_rollup() -> None:
    assert plan_segments(None, None) == {"day": [(None, None)], "hour": [], "minute": [], "raw": []}


pytestmark = pytest.mark.filterwarnings("ignore")


def staged(payload: dict[str, object], received: datetime, seq: int) -> StagedEvent:
    return StagedEvent(event_row(payload), orjson.dumps(payload).decode(), "c", received, seq)


class _Writer:
    """Stores batches of payloads on `conn`, a transaction each, received at `received`,
    numbering their messages on from one batch to the next."""

    def __init__(self, conn: storage.Conn, received: datetime) -> None:
        self.conn, self.received, self.written = conn, received, 0

    async def __call__(self, batch: list[dict[str, object]]) -> None:
        async with self.conn.transaction():
            await storage.insert_events(
                self.conn,
                [staged(e, self.received, self.written + i) for i, e in enumerate(batch)],
            )
        self.written += len(batch)


@pytest.mark.integration
@pytest.mark.parametrize("mix", ["new users", "returning users", "hot users"])
async def test_rollups_agree_with_raw_rows_under_concurrent_writers(
    database: str, mix: str
) -> None:
    pool = await storage.create_pool(database, size=5)
    async with pool.acquire() as conn:
        await storage.migrate(conn)
    rng = random.Random(7)
    generator = Generator(seed=7, returning_share=0.0 if mix == "new users" else 0.02)
    events = [
        generator.event(at=BASE + timedelta(seconds=rng.randrange(3 * 86_400)))
        for _ in range(4_000)
    ]
    # Repeat users: a fifth of the events reuse (and update) the user of an earlier event of
    # the same source, so users move between the single-event and repeat parts; or half of
    # them come from three users per source. A returning user's events fall in one hour (they
    # stay single users, migration 0026), or in two: then an hour row names one event of its
    # hour, and the others are found through pointers (migration 0023). A few users pass the
    # limit of events in one hour.
    others = {"new users": 0, "returning users": 800, "hot users": 0}[mix]
    for number, event in enumerate(rng.sample(events, others)):
        make = generator.facebook if event["source"] == "facebook" else generator.tiktok
        hour = parse_timestamp(event["timestamp"]).replace(minute=0, second=0, microsecond=0)
        times = {
            0: [BASE + timedelta(seconds=rng.randrange(3 * 86_400))],
            1: [hour + timedelta(seconds=rng.randrange(3_600))],
            2: [hour + timedelta(seconds=rng.randrange(3_600)) for _ in range(2)]
            + [BASE + timedelta(seconds=rng.randrange(3 * 86_400))],
        }[number % 3]
        if number % 100 == 1:
            times += [hour + timedelta(seconds=rng.randrange(3_600)) for _ in range(ONE_HOUR_LIMIT)]
        for at in times:
            other = make(None, at)
            other["data"]["user"]["userId"] = event["data"]["user"]["userId"]
            events.append(other)
    if mix == "hot users":
        for event in events[:2_000]:
            event["data"]["user"]["userId"] = f"hot-{event['source']}-{rng.randrange(3)}"
    rng.shuffle(events)
    # Re-sends with other content and an earlier receipt time replace stored copies.
    changed = []
    for event in rng.sample(events, 400):
        other = generator.event(at=BASE + timedelta(seconds=rng.randrange(3 * 86_400)))
        other["eventId"] = event["eventId"]
        changed.append(other)
    late = BASE + timedelta(days=5)

    async def write(batch: list[StagedEvent]) -> None:
        async with pool.acquire() as conn, conn.transaction():
            await storage.insert_events(conn, batch)

    batches = [
        [staged(e, late + timedelta(seconds=i), i) for i, e in enumerate(events[k : k + 500])]
        for k in range(0, len(events), 500)
    ] + [
        [staged(e, BASE, i) for i, e in enumerate(changed[k : k + 100])] for k in range(0, 400, 100)
    ]
    rng.shuffle(batches)

    async def vacuum(statement: str) -> None:
        async with pool.acquire() as conn:
            await conn.execute(statement)

    # Four writers at a time, with a VACUUM or ANALYZE of the events beside them, as
    # autovacuum runs in production: under them a probe of the hash index the user id had
    # until migration 0030 now and then missed a user's committed events.
    for number, start in enumerate(range(0, len(batches), 4)):
        beside = vacuum(("VACUUM events", "ANALYZE events")[number % 2])
        await asyncio.gather(*(write(batch) for batch in batches[start : start + 4]), beside)
    async with pool.acquire() as conn:
        assert await storage.rollup_mismatches(conn) == []
        assert await storage.demographic_mismatches(conn) == {}
        repeat = await conn.fetchval("SELECT count(DISTINCT user_id) FROM repeat_user_hours")
        copies = await conn.fetchval("SELECT count(*) FROM repeat_user_pointers")
        if mix == "new users":
            assert repeat < 20  # only re-sends with other content bring a user back
        elif mix == "returning users":
            # The test exercises every part: users with hour rows, users with several events
            # in one hour and none, and hours holding more than one event of a user.
            one_hour = await conn.fetchval(
                "SELECT count(*) FROM (SELECT user_id FROM events GROUP BY user_id"
                " HAVING count(*) > 1) u WHERE user_id NOT IN"
                " (SELECT user_id FROM repeat_user_hours)"
            )
            assert repeat > 300
            assert one_hour > 150
            assert copies > 100
        else:
            # The hot users' 2,000 events, but the latest of each of their ~430 hours.
            assert copies > 1_200
        await same_demographics(conn, rng)
        deleted = await conn.execute(
            "DELETE FROM events WHERE event_id = ANY($1)", [e["eventId"] for e in events[:300]]
        )
        assert deleted == "DELETE 300"
        assert await storage.rollup_mismatches(conn) == []
        assert await storage.demographic_mismatches(conn) == {}
        await same_demographics(conn, rng)
        total = await conn.fetchval("SELECT sum(events) FROM event_rollup_day")
        expected = len({e["eventId"] for e in events}) - 300
        assert total == await conn.fetchval("SELECT count(*) FROM events") == expected
    await pool.close()


async def same_demographics(conn: storage.Conn, rng: random.Random) -> None:
    """The rollup-based demographics equal the raw-row computation over random ranges."""
    for _ in range(25):
        start = BASE + timedelta(seconds=rng.randrange(-3_600, 3 * 86_400))
        end = start + timedelta(seconds=rng.choice((1, 600, 5_000, 90_000, 4 * 86_400)))
        filters = storage.EventFilters(rng.choice((start, None)), rng.choice((end, None)))
        for source in ("facebook", "tiktok"):
            fast = await storage.demographic_counts(conn, filters, source)
            naive = await storage.naive_demographic_counts(conn, filters, source)
            assert sorted(map(tuple, fast), key=repr) == sorted(map(tuple, naive), key=repr)
        assert await storage.follower_stats(conn, filters) == await storage.naive_follower_stats(
            conn, filters
        )


async def _flush_statistics(conn: storage.Conn) -> None:
    """Make this backend's counts so far visible: they reach the shared statistics when it
    is next idle, and a read within a snapshot would not see them."""
    await conn.execute("SELECT pg_stat_force_next_flush()")
    await conn.execute("SELECT pg_stat_clear_snapshot()")


async def _tuples_read(conn: storage.Conn, tables: tuple[str, ...]) -> int:
    """Rows the server has read from `tables` so far: sequentially, and index entries (an
    index-only probe reads no row but still an entry)."""
    await _flush_statistics(conn)
    read = await conn.fetchval(
        "SELECT (SELECT sum(coalesce(seq_tup_read, 0)) FROM pg_stat_user_tables"
        "  WHERE relname = ANY($1))"
        " + (SELECT sum(idx_tup_read) FROM pg_stat_user_indexes WHERE relname = ANY($1))",
        list(tables),
    )
    return int(read or 0)


_BUILDERS = ("adfunnel_rollups_statement", "adfunnel_count_added", "adfunnel_count_removed")


async def _calls(conn: storage.Conn) -> dict[str, int]:
    """How often the triggers' statement builders were called so far (`track_functions`)."""
    await _flush_statistics(conn)
    rows = await conn.fetch(
        "SELECT p.proname, coalesce(f.calls, 0) AS calls FROM pg_proc p"
        " LEFT JOIN pg_stat_user_functions f ON f.funcid = p.oid WHERE p.proname = ANY($1)",
        list(_BUILDERS),
    )
    return {row["proname"]: row["calls"] for row in rows}


@pytest.mark.integration
async def test_a_trigger_with_no_rows_builds_no_statement(database: str) -> None:
    """A writer's upsert fires the update triggers too, nearly always on no rows."""
    generator = Generator(seed=12)
    events = [generator.event(BASE + timedelta(minutes=i)) for i in range(40)]
    early = BASE + timedelta(days=1)
    steps = {
        "new": [staged(e, early, 2) for e in events],
        # All duplicates, received later: no row to insert or replace.
        "duplicates": [staged(e, early + timedelta(seconds=1), 3) for e in events],
        # Earlier copies of two events, committed late, replace them.
        "replacing": [staged(e, early - timedelta(seconds=1), 1) for e in events[:2]],
    }
    pool = await storage.create_pool(database, size=1)
    calls: dict[str, dict[str, int]] = {}
    try:
        async with pool.acquire() as conn:
            await storage.migrate(conn)
            await conn.execute("SET track_functions = 'all'")
            for step, batch in steps.items():
                before = await _calls(conn)
                async with conn.transaction():
                    await storage.insert_events(conn, batch)
                after = await _calls(conn)
                calls[step] = {name: after[name] - before[name] for name in _BUILDERS}
            assert not await storage.rollup_mismatches(conn)
            assert await storage.demographic_mismatches(conn) == {}
    finally:
        await pool.close()
    rollups, added, removed = _BUILDERS
    assert calls == {
        "new": {rollups: 1, added: 1, removed: 0},
        "duplicates": {rollups: 0, added: 0, removed: 0},
        "replacing": {rollups: 1, added: 1, removed: 1},
    }


@pytest.mark.integration
async def test_a_batch_of_a_user_with_100000_events_reads_none_of_them(database: str) -> None:
    """SPEC §3: storing an event costs the same however many events its user has."""
    hot_fb, hot_tt = "hot-facebook-user", "hot-tiktok-user"
    generator = Generator(seed=11)
    rng = random.Random(11)

    def event(hot: bool) -> dict[str, object]:
        at = BASE + timedelta(seconds=rng.randrange(2 * 86_400))
        source = rng.choice(("facebook", "tiktok"))
        made = generator.facebook(None, at) if source == "facebook" else generator.tiktok(None, at)
        if hot:
            made["data"]["user"]["userId"] = hot_fb if source == "facebook" else hot_tt
        return made

    pool = await storage.create_pool(database, size=2)
    try:
        async with pool.acquire() as conn:
            await storage.migrate(conn)
        received = BASE + timedelta(days=5)

        async def write(batch: list[dict[str, object]]) -> None:
            async with pool.acquire() as conn, conn.transaction():
                await storage.insert_events(
                    conn, [staged(e, received, i) for i, e in enumerate(batch)]
                )

        for _ in range(10):  # 100,000 events of the two hot users
            await write([event(hot=True) for _ in range(10_000)])
        batch = [event(hot=rng.random() < 0.5) for _ in range(2_000)]
        async with pool.acquire() as conn:
            stored = await conn.fetchval(
                "SELECT count(*) FROM events WHERE user_id = ANY($1)", [hot_fb, hot_tt]
            )
            assert stored == 100_000
            tables = ("events", "repeat_user_pointers", "repeat_user_hours")
            before = await _tuples_read(conn, tables)
            async with conn.transaction():
                await storage.insert_events(
                    conn, [staged(e, received, i) for i, e in enumerate(batch)]
                )
            read = await _tuples_read(conn, tables) - before
            # The state rows of the batch's users and nothing of the hot users' history:
            # reading that history would be 100,000 rows.
            assert read <= len(batch), read
            assert await storage.demographic_mismatches(conn) == {}
            assert await storage.rollup_mismatches(conn) == []
            await same_demographics(conn, rng)
            # Reading is as independent of the hot users' history: whole hours come from
            # rollups. Each of the three queries (facebook, tiktok engagement, followers)
            # reads the events in the ragged minutes at each end and probes the hour rows of
            # each one's user (the single users' edge, then the repeat users'): a handful of
            # rows per edge event. Reading the range would be about 60,000 events per query.
            # The hour rows here are a few pages, which the planner would rather read whole
            # per probe; at any size that matters it probes their key, as this makes it.
            await conn.execute("SET enable_seqscan = off")
            ragged = (BASE + timedelta(minutes=7), BASE + timedelta(days=1, hours=5, minutes=31))
            for start, end in ((BASE, BASE + timedelta(days=2)), ragged):
                edge_events = await conn.fetchval(
                    "SELECT count(*) FROM events WHERE event_time >= $1 AND event_time < $2"
                    " OR event_time >= $3 AND event_time < $4",
                    start,
                    start.replace(minute=0) + timedelta(hours=start.minute > 0),
                    end.replace(minute=0),
                    end,
                )
                before = await _tuples_read(conn, tables)
                filters = storage.EventFilters(start=start, end=end)
                for source in ("facebook", "tiktok"):
                    await storage.demographic_counts(conn, filters, source)
                await storage.follower_stats(conn, filters)
                read = await _tuples_read(conn, tables) - before
                assert read <= 8 * edge_events + 2_000, (start, end, edge_events, read)
    finally:
        await pool.close()


@pytest.mark.integration
async def test_hour_rows_a_batch_rewrites_are_read_once_whatever_the_statistics(
    database: str,
) -> None:
    """SPEC §3: hot users' hour rows rewritten by a batch cost the same on a table the
    planner knows nothing about (never analyzed) as on one it knows."""
    moment = BASE

    def clock() -> datetime:
        nonlocal moment
        moment += timedelta(milliseconds=4)
        return moment

    generator = Generator(seed=21, clock=clock, hot_users=600)
    pool = await storage.create_pool(database, size=1)
    try:
        async with pool.acquire() as conn:
            await storage.migrate(conn)
            await conn.execute("ALTER TABLE repeat_user_hours SET (autovacuum_enabled = off)")
            tables = ("repeat_user_hours",)
            # Five batches: a hot user's first few events, all in this hour, need no hour
            # rows (migration 0026); by the fourth batch nearly every hot user has them.
            for number in range(5):
                made = [generator.event() for _ in range(8_000)]
                before = await _tuples_read(conn, tables)
                async with conn.transaction():
                    await storage.insert_events(
                        conn, [staged(e, moment, number * 8_000 + i) for i, e in enumerate(made)]
                    )
                read = await _tuples_read(conn, tables) - before
            rewritten = await conn.fetchval(
                "SELECT n_tup_upd FROM pg_stat_user_tables WHERE relname = 'repeat_user_hours'"
            )
            # The batches share their hours: most of the hot users' rows are rewritten. A
            # probe or two finds each; found again through the index that leads with the
            # track, each rewritten row read the track's every row (1,479,573 rows for this
            # batch on migration 0020).
            assert rewritten > 1_000
            assert read <= len(made), read
    finally:
        await pool.close()


@pytest.mark.integration
async def test_only_users_with_stored_hours_look_for_them(database: str) -> None:
    """SPEC §8: hour rows exist once a user has events stored in two hours, so a batch
    probes them for those users only, not for users it meets first or moves over."""
    generator = Generator(seed=31)

    def event(user: str, minute: int) -> dict[str, object]:
        made = generator.facebook(None, BASE + timedelta(minutes=minute))
        made["data"]["user"]["userId"] = user
        return made

    pool = await storage.create_pool(database, size=1)
    try:
        async with pool.acquire() as conn:
            await storage.migrate(conn)
            write = _Writer(conn, BASE)

            async def probes() -> int:
                await _flush_statistics(conn)
                return int(
                    await conn.fetchval(
                        "SELECT idx_scan FROM pg_stat_user_indexes"
                        " WHERE indexrelname = 'repeat_user_hours_pkey'"
                    )
                )

            users = range(300)
            await write([event(f"once-{u}", u) for u in users])
            before = await probes()
            # New users with two events each, and the second events of users with one.
            await write(
                [event(f"new-{u}", u + minute) for u in users for minute in (0, 90)]
                + [event(f"once-{u}", u + 120) for u in users]
            )
            assert await conn.fetchval("SELECT count(*) FROM repeat_user_hours") >= 1_200
            assert await probes() == before
            # Now each has hour rows: their next events look for them.
            await write([event(f"{kind}-{u}", u + 300) for kind in ("new", "once") for u in users])
            assert await probes() - before >= 600
            assert await storage.demographic_mismatches(conn) == {}
    finally:
        await pool.close()


@pytest.mark.integration
async def test_hour_rows_link_new_hours_between_stored_ones(database: str) -> None:
    """A repeat user's hour rows stay one per active hour, each holding the hour's latest
    event and linked to the next active hour, when a batch brings hours before, between and
    after the stored ones, and events that lose, win or tie with an hour's stored event."""
    generator = Generator(seed=18)
    received = BASE + timedelta(days=3)
    user = "returning-facebook-user"

    def at(hour: int, minute: int, event_id: str | None = None) -> dict[str, object]:
        made = generator.facebook(None, BASE + timedelta(hours=hour, minutes=minute))
        made["data"]["user"]["userId"] = user
        if event_id is not None:
            made["eventId"] = event_id
        return made

    pool = await storage.create_pool(database, size=1)
    try:
        async with pool.acquire() as conn:
            await storage.migrate(conn)

            async def store(*events: dict[str, object]) -> list[tuple[int, int | None, str]]:
                async with conn.transaction():
                    await storage.insert_events(
                        conn, [staged(e, received, i) for i, e in enumerate(events)]
                    )
                assert await storage.demographic_mismatches(conn) == {}
                # (hour, next active hour or None, the hour's event), hours since BASE.
                rows = await conn.fetch(
                    "SELECT extract(epoch FROM hour - $2)::int / 3600 AS hour,"
                    " CASE WHEN next_hour < 'infinity'"
                    "  THEN extract(epoch FROM next_hour - $2)::int / 3600 END AS next_hour,"
                    " event_id FROM repeat_user_hours"
                    " WHERE track = 'f' AND user_id = $1 ORDER BY hour",
                    user,
                    BASE,
                )
                return [(r["hour"], r["next_hour"], r["event_id"]) for r in rows]

            inf = None
            assert await store(at(1, 10, "b1"), at(5, 30, "b5")) == [(1, 5, "b1"), (5, inf, "b5")]
            # An hour before every stored one, one between two, an earlier event of a
            # stored hour (it loses) and an hour after them all.
            assert await store(at(0, 5, "c0"), at(3, 0, "c3"), at(5, 10, "c5"), at(7, 0, "c7")) == [
                (0, 1, "c0"),
                (1, 3, "b1"),
                (3, 5, "c3"),
                (5, 7, "b5"),
                (7, inf, "c7"),
            ]
            # A later event of a stored hour wins it; one at the same instant, received at
            # the same time, wins by the larger eventId; new hours right after stored ones.
            assert await store(
                at(1, 50, "d1"), at(3, 0, "c3z"), at(4, 0, "d4"), at(8, 0, "d8")
            ) == [
                (0, 1, "c0"),
                (1, 3, "d1"),
                (3, 4, "c3z"),
                (4, 5, "d4"),
                (5, 7, "b5"),
                (7, 8, "c7"),
                (8, inf, "d8"),
            ]
            assert await storage.rollup_mismatches(conn) == []
            await same_demographics(conn, random.Random(18))
    finally:
        await pool.close()


@pytest.mark.integration
async def test_repeat_users_stored_before_0017_keep_exact_demographics(database: str) -> None:
    """Copies written before migration 0017 become pointers, and every later insert, removal
    and read of those users stays exact."""
    rng = random.Random(17)
    generator = Generator(seed=17)

    def event(user_of: dict[str, object] | None = None) -> dict[str, object]:
        at = BASE + timedelta(seconds=rng.randrange(2 * 86_400))
        made = generator.event(at=at)
        if user_of is not None and user_of["source"] == made["source"]:
            made["data"]["user"]["userId"] = user_of["data"]["user"]["userId"]  # type: ignore[index]
        return made

    first = [event() for _ in range(400)]
    first += [event(rng.choice(first)) for _ in range(300)]
    pool = await storage.create_pool(database, size=1)
    try:
        async with pool.acquire() as conn:
            assert await storage.migrate(conn, until=16)
            for k in range(0, len(first), 100):
                async with conn.transaction():
                    await storage.insert_events(
                        conn,
                        [
                            staged(e, BASE + timedelta(days=3), k + i)
                            for i, e in enumerate(first[k : k + 100])
                        ],
                    )
            copied = await conn.fetchval("SELECT count(*) FROM repeat_user_events")
            assert copied > 200  # both parts are exercised
            assert await storage.migrate(conn) == list(range(17, 31))
            # 0017 made a pointer of every copy; 0023 dropped those of the events hour rows
            # name: one per hour row of the source tracks.
            named = await conn.fetchval("SELECT count(*) FROM repeat_user_hours WHERE track <> 'p'")
            pointers = await conn.fetchval("SELECT count(*) FROM repeat_user_pointers")
            assert named > 0
            assert pointers == copied - named
            assert await storage.demographic_mismatches(conn) == {}
            await same_demographics(conn, rng)
            # New events of old users, then removals that recount hours and send users back
            # to one event.
            later = [event(rng.choice(first)) for _ in range(200)]
            async with conn.transaction():
                await storage.insert_events(
                    conn, [staged(e, BASE + timedelta(days=4), i) for i, e in enumerate(later)]
                )
            gone = [e["eventId"] for e in rng.sample(first + later, 250)]
            assert await conn.execute("DELETE FROM events WHERE event_id = ANY($1)", gone) == (
                "DELETE 250"
            )
            assert await storage.demographic_mismatches(conn) == {}
            assert await storage.rollup_mismatches(conn) == []
            await same_demographics(conn, rng)
    finally:
        await pool.close()


@pytest.mark.integration
async def test_an_hour_number_is_the_hour_a_struck_hour_names(database: str) -> None:
    """A struck hour (`date_trunc` of the event's UTC time) finds its pointers by
    `adfunnel_hour_number` (migration 0029): the two agree at every instant, a microsecond
    either side of an hour's start included, before 1970 too."""
    pool = await storage.create_pool(database, size=1)
    try:
        async with pool.acquire() as conn:
            await storage.migrate(conn)
            differing = await conn.fetchval(
                "SELECT count(*) FROM generate_series($1::timestamptz, $2, interval '997 ms') s,"
                " LATERAL (VALUES (s), (s - interval '1 microsecond'),"
                "  (date_trunc('hour', s)), (date_trunc('hour', s) - interval '1 microsecond')) t"
                " (moment) WHERE adfunnel_hour_number(moment) <> adfunnel_hour_number("
                " date_trunc('hour', moment AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')"
                " OR adfunnel_hour_number(moment) <> floor(extract(epoch FROM moment) / 3600)",
                datetime(1969, 12, 31, 20, tzinfo=UTC),
                datetime(1970, 1, 1, 4, tzinfo=UTC),
            )
            assert differing == 0
            numbers = await conn.fetch(
                "SELECT adfunnel_hour_number(t) FROM unnest($1::timestamptz[]) t",
                [BASE, BASE - timedelta(microseconds=1), BASE + timedelta(minutes=59)],
            )
            hour = int((BASE - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds()) // 3_600
            assert [n[0] for n in numbers] == [hour, hour - 1, hour]
    finally:
        await pool.close()


@pytest.mark.integration
async def test_users_sharing_a_pointer_range_keep_their_own_events(database: str) -> None:
    """Pointers are keyed by the user id's hash (migration 0029), so two users whose ids
    share it, and a Facebook and a TikTok user with the same id, share ranges of pointers.
    A struck hour's recount and a user going back to one event take none of the others'."""
    pair = ("user-232392", "user-123126")
    generator = Generator(seed=13)
    rng = random.Random(13)
    events = []
    for user in pair:
        for make in (generator.facebook, generator.tiktok):
            for hour in range(3):
                for _ in range(4):
                    made = make(None, BASE + timedelta(hours=hour, seconds=rng.randrange(3_600)))
                    made["data"]["user"]["userId"] = user
                    events.append(made)
    rng.shuffle(events)
    pool = await storage.create_pool(database, size=1)
    try:
        async with pool.acquire() as conn:
            await storage.migrate(conn)
            assert await conn.fetchval("SELECT hashtext($1) = hashtext($2)", *pair)
            write = _Writer(conn, BASE + timedelta(days=1))
            for start in range(0, len(events), 16):
                await write(events[start : start + 16])
            shared = await conn.fetchval(
                "SELECT count(*) FROM repeat_user_pointers WHERE user_hash = hashtext($1)", pair[0]
            )
            assert shared == len(events) - 4 * 3  # all but the latest of each user-hour
            assert await storage.demographic_mismatches(conn) == {}
            # Each hour of one user loses its latest event: it is recounted from the range.
            struck = await conn.execute(
                "DELETE FROM events WHERE event_key IN (SELECT DISTINCT ON"
                " (date_trunc('hour', event_time)) event_key FROM events"
                " WHERE user_id = $1 AND source = 'facebook'"
                " ORDER BY date_trunc('hour', event_time), event_time DESC)",
                pair[0],
            )
            assert struck == "DELETE 3"
            assert await storage.demographic_mismatches(conn) == {}
            await same_demographics(conn, rng)
            # Another goes back to one event: it is read from the range's pointers.
            gone = await conn.execute(
                "DELETE FROM events WHERE user_id = $1 AND source = 'tiktok'"
                " AND event_id <> (SELECT min(event_id) FROM events"
                " WHERE user_id = $1 AND source = 'tiktok')",
                pair[1],
            )
            assert gone == "DELETE 11"
            assert await storage.demographic_mismatches(conn) == {}
            await same_demographics(conn, rng)
    finally:
        await pool.close()


@pytest.mark.integration
async def test_users_with_events_in_one_hour_count_as_single_users(database: str) -> None:
    """Migration 0026: a user whose events all fall in one hour, at most ONE_HOUR_LIMIT of
    them, has no hour rows and counts by their latest events of that hour, exactly, at whole
    hours and at ragged edges; past the limit, or in a second hour, they get hour rows; a
    removal counts them by what is left."""
    generator = Generator(seed=41)
    hour = BASE + timedelta(hours=5)
    received = BASE + timedelta(days=3)

    def event(
        source: str, user: str, second: int, kind: str | None = None, followers: int = 0
    ) -> dict[str, object]:
        make = generator.facebook if source == "facebook" else generator.tiktok
        made = make(kind, hour + timedelta(seconds=second))
        made["data"]["user"]["userId"] = user
        if followers:
            made["data"]["user"]["followers"] = followers
        return made

    pool = await storage.create_pool(database, size=1)
    try:
        async with pool.acquire() as conn:
            await storage.migrate(conn)
            write = _Writer(conn, received)

            async def with_hour_rows() -> set[str]:
                rows = await conn.fetch("SELECT DISTINCT user_id FROM repeat_user_hours")
                return {row["user_id"] for row in rows}

            async def exact() -> None:
                assert await storage.demographic_mismatches(conn) == {}
                for start, end in (
                    (hour, hour + timedelta(hours=1)),
                    (hour - timedelta(hours=2), hour + timedelta(days=1)),
                    (hour + timedelta(minutes=10), hour + timedelta(minutes=50)),
                    (hour + timedelta(minutes=20), hour + timedelta(hours=3)),
                    (hour - timedelta(hours=1), hour + timedelta(minutes=40)),
                ):
                    filters = storage.EventFilters(start, end)
                    for source in ("facebook", "tiktok"):
                        fast = await storage.demographic_counts(conn, filters, source)
                        naive = await storage.naive_demographic_counts(conn, filters, source)
                        assert sorted(map(tuple, fast), key=repr) == sorted(
                            map(tuple, naive), key=repr
                        ), (start, end, source)
                    followers = await storage.follower_stats(conn, filters)
                    assert followers == await storage.naive_follower_stats(conn, filters)

            limit = ONE_HOUR_LIMIT
            # Up to the limit, over three batches and inside one: no hour rows. A TikTok
            # user's latest event is not top-funnel, so their device and country come from
            # an earlier one; their follower counts cross bins, in both directions.
            await write(
                [event("facebook", "fb-full", 60 * m) for m in range(limit - 3)]
                + [event("tiktok", "tt-same-bin", 200, followers=5_000)]
            )
            await write(
                [event("facebook", "fb-full", 60 * m + 30) for m in range(2)]
                + [event("facebook", "fb-two", s) for s in (100, 2_000)]
                + [event("tiktok", "tt-mixed", 600, "video.view", 150)]
                + [event("tiktok", "tt-lower", 900, followers=90_000)]
                # The maximum's bin is read value by value: only the later of the two counts.
                + [event("tiktok", "tt-same-bin", 1_000, followers=5_050)]
            )
            await write(
                [
                    event("facebook", "fb-full", 3_000),
                    event("tiktok", "tt-mixed", 2_400, "purchase", 7),
                    event("tiktok", "tt-lower", 3_500, followers=12),
                    event("facebook", "fb-late", 3_590),
                ]
            )
            assert await with_hour_rows() == set()
            await exact()
            # Past the limit, or into the next hour: hour rows, with every event of theirs.
            await write(
                [
                    event("facebook", "fb-full", 3_100),
                    event("facebook", "fb-two", 3_700),
                    event("tiktok", "tt-lower", 3_550, followers=40),
                ]
            )
            assert await with_hour_rows() == {"fb-full", "fb-two"}
            await exact()
            # Removals and replacements of users without hour rows: counted by what is left.
            await conn.execute(
                "DELETE FROM events WHERE event_id = (SELECT event_id FROM events"
                " WHERE user_id = 'tt-mixed' ORDER BY event_time DESC LIMIT 1)"
            )
            await exact()
            replaced = event("tiktok", "tt-lower", 3_599, followers=500_000)
            replaced["eventId"] = await conn.fetchval(
                "SELECT event_id FROM events WHERE user_id = 'tt-lower' ORDER BY event_time LIMIT 1"
            )
            async with conn.transaction():
                await storage.insert_events(conn, [staged(replaced, BASE, write.written)])
            assert await with_hour_rows() == {"fb-full", "fb-two"}
            await exact()
            await conn.execute("DELETE FROM events WHERE user_id IN ('fb-late', 'tt-mixed')")
            await exact()
    finally:
        await pool.close()


@pytest.mark.integration
async def test_the_reader_knows_the_writers_limit_of_events_in_one_hour(database: str) -> None:
    """The reports' exact follower values rely on how many events a user without hour rows
    can have; the migration defines it."""
    pool = await storage.create_pool(database, size=1)
    try:
        async with pool.acquire() as conn:
            await storage.migrate(conn)
            assert await conn.fetchval("SELECT adfunnel_one_hour_limit()") == ONE_HOUR_LIMIT
    finally:
        await pool.close()
