"""`adfunnel bench`: the whole pipeline measured on this machine, in one run.

Phases, in order: the floors (bare asyncio pipelines on the same servers, one event per
message and batched, before the system starts); as fast as possible (50,000-event POSTs back
to back, first POST → every accepted event counted by `/reports/events`); acks (50,000-event
POSTs every 2 s: HTTP ack latency); the real publisher's profile (one POST of 1,000 to 50,000
events per second, not waiting for answers) with the backlog sampled; then freshness (POST →
`stored_at`), lost and duplicated events (every accepted eventId against the rows), and the
peak memory of the whole system. Every phase keeps a CPU ledger: the CPU seconds of each
process of the system (from /proc), per component, per stored event.

With `--soak SECONDS` the floors are followed by the soak alone: the real publisher's
profile for minutes on a table that keeps growing, its stored events counted per minute.

Batches are generated before each phase: the generator's CPU would otherwise be measured as
the system's on a two-core machine. The soak's would not fit in memory, so a separate
process makes them during the soak, a bounded queue ahead, and is left out of the ledger.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import multiprocessing
import os
import queue
import random
import sys
import tempfile
import time
from bisect import bisect_right
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from multiprocessing.queues import Queue
from pathlib import Path
from types import TracebackType
from typing import Any

import asyncpg
import httpx

from adfunnel import storage
from adfunnel.tools import publish
from adfunnel.tools.bench import system as bench_system
from adfunnel.tools.bench.floor import run_batched_floor, run_floor
from adfunnel.tools.bench.system import COMPONENTS, CpuMeter, CpuWindow
from adfunnel.tools.publish import Batch, BatchMaker, PublishOptions, PublishSummary
from adfunnel.tools.stats import percentile


@dataclass(frozen=True, slots=True)
class BenchPlan:
    """How much of each phase to run."""

    e2e_events: int
    ack_posts: int
    sustained_s: int
    floor_events: int
    freshness_ids_per_post: int = 100
    big_batch: int = 50_000  # the POST size of the first two phases
    sustained_batches: tuple[int, int] = (1_000, 50_000)
    seed: int = 1
    batched_floor_events: int = 0
    # Non-zero: after the floors, only the soak, for this many seconds.
    soak_s: int = 0
    # Extra `PublishOptions` fields for every phase (`hot_users`, `returning_share`).
    publisher: Mapping[str, Any] = field(default_factory=dict)


QUICK = BenchPlan(
    e2e_events=250_000,
    ack_posts=6,
    sustained_s=45,
    floor_events=50_000,
    batched_floor_events=200_000,
)
FULL = BenchPlan(
    e2e_events=1_000_000,
    ack_posts=20,
    sustained_s=300,
    floor_events=200_000,
    batched_floor_events=500_000,
)
PHASES = ("e2e", "acks", "sustained", "soak")


@dataclass
class Target:
    """The system under test: its HTTP base URL and, when known, its servers."""

    base_url: str
    database_url: str | None
    nats_url: str | None
    stream: str = "EVENTS"
    # How to find its processes for the CPU ledger (default: by title, machine-wide).
    processes: CpuMeter = field(default_factory=CpuMeter)

    @contextlib.asynccontextmanager
    async def phase(self) -> AsyncIterator[PhaseWindow]:
        """A phase's window: the CPU ledger's, and the WAL its server wrote meanwhile."""
        start = await self._wal_position()
        with self.processes.phase() as cpu:
            window = PhaseWindow(cpu)
            yield window
        end = await self._wal_position()
        if start is not None and end is not None:
            window.wal_bytes = end - start

    async def _wal_position(self) -> int | None:
        if not self.database_url:
            return None
        conn = await asyncpg.connect(self.database_url)
        try:
            return await storage.wal_position(conn)
        finally:
            await conn.close()


@dataclass
class PhaseWindow:
    """What `Target.phase` measured: the CPU window, and the WAL bytes once it closed (None
    without a database URL)."""

    cpu: CpuWindow
    wal_bytes: int | None = None


@dataclass
class Sample:
    """The backlog at one moment of the sustained phase."""

    t: float
    accepted: int
    stored: int
    pending_messages: int | None
    stream_bytes: int | None = None

    @property
    def backlog(self) -> int:
        return self.accepted - self.stored


@dataclass(frozen=True, slots=True)
class PhaseCpu:
    """A phase's CPU ledger: CPU seconds per component, and the events stored meanwhile."""

    events: int
    seconds: float  # wall time of the window
    system: dict[str, float]
    # The rest of the machine (not counted): how noisy the measurement was.
    outside: dict[str, float]
    # WAL the database server wrote meanwhile: PostgreSQL's write work, in bytes, which
    # unlike its CPU time does not drift with the machine's speed.
    wal_bytes: int | None = None

    @classmethod
    def of(cls, window: PhaseWindow, events: int) -> PhaseCpu:
        cpu = window.cpu
        return cls(
            events, cpu.wall_s, cpu.system.seconds(), cpu.outside.seconds(), window.wal_bytes
        )

    def us_per_event(self, cpu_s: float) -> float | None:
        return round(cpu_s * 1e6 / self.events, 1) if self.events > 0 else None

    def figures(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "seconds": round(self.seconds, 1),
            "total_us_per_event": self.us_per_event(sum(self.system.values())),
            "by_component": {name: self.us_per_event(s) for name, s in self.system.items()},
            "outside_us_per_event": self.us_per_event(sum(self.outside.values())),
            "wal_bytes_per_event": (
                _per_event(self.wal_bytes, self.events) if self.wal_bytes is not None else None
            ),
        }


@dataclass
class SoakRun:
    """What the soak measured: stored events and system CPU sampled as it ran."""

    # (monotonic time, events stored since the soak began), every second while publishing.
    stored: list[tuple[float, float]] = field(default_factory=list)
    # (monotonic time, system CPU seconds since the soak began), from the CPU ledger.
    cpu: list[tuple[float, float]] = field(default_factory=list)
    seconds: float = 0.0  # publishing window
    sent: int = 0
    expected: int = 0  # events new to the store in the POSTs that got a 2xx
    stored_total: int = 0  # after the drain
    lag_max_s: float = 0.0

    def figures(self) -> dict[str, Any]:
        start = self.stored[0][0] if self.stored else 0.0
        stored = per_minute(self.stored, start)
        cpu = per_minute(self.cpu, start)
        decay = stored[-1] / stored[0] if len(stored) >= 2 and stored[0] else None
        return {
            "soak_stored_per_minute": [round(n) for n in stored],
            "soak_decay_ratio": None if decay is None else round(decay, 3),
            "soak_cpu_us_per_event_per_minute": [
                round(c * 1e6 / n, 1) if n else None for c, n in zip(cpu, stored, strict=False)
            ],
            "soak_offered_events_per_s": _round(self.sent / self.seconds if self.seconds else None),
            "soak_post_lag_max_s": round(self.lag_max_s, 2),
            "soak_lost": max(0, self.expected - self.stored_total),
            "soak_duplicated": max(0, self.stored_total - self.expected),
        }


@dataclass
class Results:
    """Everything measured; `figures()` is the JSON of the issue."""

    floor: float | None = None
    floor_batched: float | None = None
    e2e_events: int = 0
    e2e_seconds: float = 0.0
    ack_latencies: list[float] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    sustained_accepted: int = 0
    sustained_stored: int = 0
    sustained_seconds: float = 0.0
    freshness: list[float] = field(default_factory=list)
    accepted_ids: set[str] = field(default_factory=set)
    failed_posts: int = 0
    # Of those, refused with 503 + Retry-After (overload, a full stream): claimed nothing.
    refused_posts: int = 0
    lost: int | None = None
    duplicated: int | None = None
    peak_pss_kb: int = 0
    # After the run: events stored, and bytes on disk per table (indexes and TOAST included).
    stored_events: int = 0
    disk_bytes: dict[str, int] = field(default_factory=dict)
    events_disk_bytes: dict[str, int] = field(default_factory=dict)
    cpu: dict[str, PhaseCpu] = field(default_factory=dict)
    soak: SoakRun | None = None

    def figures(self) -> dict[str, Any]:
        e2e = self.e2e_events / self.e2e_seconds if self.e2e_seconds else None
        sustained = (
            self.sustained_stored / self.sustained_seconds if self.sustained_seconds else None
        )

        def ms(values: list[float], q: float) -> float | None:
            value = percentile(values, q)
            return None if value is None else round(value * 1000, 1)

        figures: dict[str, Any] = {
            "e2e_events_per_s": _round(e2e),
            "floor_events_per_s": _round(self.floor),
            "ratio_vs_floor": _ratio(e2e, self.floor),
            "floor_batched_events_per_s": _round(self.floor_batched),
            "ratio_vs_batched_floor": _ratio(e2e, self.floor_batched),
            "sustained_events_per_s": _round(sustained),
            "sustained_offered_events_per_s": _round(
                self.sustained_accepted / self.sustained_seconds if self.sustained_seconds else None
            ),
            "backlog_growth_events_per_s": _round(growth(self.samples)),
            "backlog_max_events": max((s.backlog for s in self.samples), default=None),
            "ack_p50_ms": ms(self.ack_latencies, 50),
            "ack_p99_ms": ms(self.ack_latencies, 99),
            "freshness_p50_ms": ms(self.freshness, 50),
            "freshness_p99_ms": ms(self.freshness, 99),
            "peak_rss_mb": round(self.peak_pss_kb / 1024) if self.peak_pss_kb else None,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "accepted": len(self.accepted_ids),
            "failed_posts": self.failed_posts,
            "refused_posts": self.refused_posts,
            "disk_bytes_per_event": _per_event(sum(self.disk_bytes.values()), self.stored_events),
            "disk_bytes_per_event_by_table": {
                name: _per_event(size, self.stored_events) for name, size in self.disk_bytes.items()
            },
            "events_bytes_per_event": {
                name: _per_event(size, self.stored_events)
                for name, size in self.events_disk_bytes.items()
            },
            "jetstream_bytes_per_event": jetstream_bytes_per_event(self.samples),
        }
        ledger = {phase: self.cpu[phase].figures() for phase in PHASES if phase in self.cpu}
        steady = ledger.get("sustained", {})
        figures["cpu_us_per_event"] = steady.get("total_us_per_event")
        figures["cpu_us_per_event_by_component"] = steady.get("by_component")
        figures["wal_bytes_per_event"] = steady.get("wal_bytes_per_event")
        if self.soak is not None:
            figures |= self.soak.figures()
        figures["cpu_ledger"] = ledger
        return figures

    def failed(self) -> bool:
        """Something was lost, duplicated, or refused."""
        soak = self.soak.figures() if self.soak is not None else {}
        return bool(
            self.lost
            or self.duplicated
            or self.failed_posts
            or soak.get("soak_lost")
            or soak.get("soak_duplicated")
        )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value)


def _ratio(value: float | None, floor: float | None) -> float | None:
    return round(value / floor, 2) if value and floor else None


def _value_at(series: Sequence[tuple[float, float]], t: float) -> float:
    """A sampled running total at time `t`, linearly interpolated (clamped at the ends)."""
    times = [point[0] for point in series]
    i = bisect_right(times, t)
    if i == 0:
        return series[0][1]
    if i == len(series):
        return series[-1][1]
    (t0, v0), (t1, v1) = series[i - 1], series[i]
    return v0 + (v1 - v0) * (t - t0) / (t1 - t0) if t1 > t0 else v1


def per_minute(series: Sequence[tuple[float, float]], start: float) -> list[float]:
    """How much a sampled running total grew in each full minute after `start`."""
    if not series:
        return []
    minutes = int((series[-1][0] - start) // 60)
    marks = [_value_at(series, start + 60 * m) for m in range(minutes + 1)]
    return [after - before for before, after in itertools.pairwise(marks)]


def growth(samples: Sequence[Sample]) -> float | None:
    """Least-squares slope of the backlog over time, in events per second."""
    if len(samples) < 2:
        return None
    ts = [s.t for s in samples]
    mean_t = sum(ts) / len(ts)
    mean_b = sum(s.backlog for s in samples) / len(samples)
    spread = sum((t - mean_t) ** 2 for t in ts)
    if not spread:
        return None
    return sum((s.t - mean_t) * (s.backlog - mean_b) for s in samples) / spread


def _batches(options: PublishOptions, sizes: Sequence[int]) -> list[Batch]:
    maker = BatchMaker(options)
    return [maker.make(size) for size in sizes]


def _options(target: Target, plan: BenchPlan, **overrides: Any) -> PublishOptions:
    base = {
        "endpoint": target.base_url + "/webhook",
        "secret": os.environ.get(publish.SECRET_ENV),
        "timeout_s": 120.0,
    }
    return PublishOptions(**(base | dict(plan.publisher) | overrides))


def publisher_problem(extra: Mapping[str, Any]) -> str | None:
    """Why `extra` cannot be passed to `PublishOptions` (a field it lacks, a bad value)."""
    names = {f.name for f in dataclasses.fields(PublishOptions)}
    missing = sorted(name for name in extra if name not in names)
    if missing:
        return (
            f"this adfunnel's PublishOptions has no field {', '.join(missing)}"
            " (adfunnel/tools/publish.py): --hot-users/--returning need it"
        )
    try:
        BatchMaker(PublishOptions(**extra))
    except (TypeError, ValueError) as error:
        return str(error)
    return None


async def visible_total(client: httpx.AsyncClient) -> int:
    """Events counted by `/reports/events` (what an analyst sees)."""
    response = await client.get("/reports/events")
    response.raise_for_status()
    return int(response.json()["total"])


async def wait_visible(client: httpx.AsyncClient, total: int, timeout_s: float) -> float:
    """Poll until `/reports/events` counts `total`; returns the monotonic time it did."""
    deadline = time.monotonic() + timeout_s
    while (seen := await visible_total(client)) < total:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{total - seen} accepted events not visible after {timeout_s} s")
        await asyncio.sleep(0.05)
    return time.monotonic()


def _record(results: Results, summary: PublishSummary) -> None:
    results.accepted_ids |= summary.accepted_ids()
    results.failed_posts += summary.failed_posts
    results.refused_posts += summary.refused_posts


async def phase_e2e(client: httpx.AsyncClient, target: Target, plan: BenchPlan, r: Results) -> None:
    """As fast as possible: all batches made first, then POSTed back to back."""
    options = _options(target, plan, interval_s=0.0, concurrency=2, seed=plan.seed)
    count, rest = divmod(plan.e2e_events, plan.big_batch)
    batches = _batches(options, [plan.big_batch] * count + ([rest] if rest else []))
    before = await visible_total(client)
    async with target.phase() as measured:
        started = time.monotonic()
        summary = await publish.publish(options, batches=batches)
        done = await wait_visible(client, before + len(summary.accepted_ids()), 600)
    r.cpu["e2e"] = PhaseCpu.of(measured, len(summary.accepted_ids()))
    _record(r, summary)
    r.e2e_events, r.e2e_seconds = len(summary.accepted_ids()), done - started


async def phase_acks(
    client: httpx.AsyncClient, target: Target, plan: BenchPlan, r: Results
) -> None:
    """50,000-event POSTs every 2 s (25,000 events/s, the real publisher's mean at its max)."""
    options = _options(target, plan, interval_s=2.0, seed=plan.seed + 1)
    batches = _batches(options, [plan.big_batch] * plan.ack_posts)
    before = await visible_total(client)
    async with target.phase() as measured:
        summary = await publish.publish(options, batches=batches)
        await wait_visible(client, before + len(summary.accepted_ids()), 600)
    r.cpu["acks"] = PhaseCpu.of(measured, len(summary.accepted_ids()))
    _record(r, summary)
    r.ack_latencies += [p.latency_s for p in summary.posts if p.ok]


async def phase_sustained(
    client: httpx.AsyncClient, target: Target, plan: BenchPlan, r: Results
) -> None:
    """The real publisher's profile; the backlog sampled every second; freshness after."""
    low, high = plan.sustained_batches
    options = _options(
        target,
        plan,
        interval_s=1.0,
        concurrency=64,
        seed=plan.seed + 2,
        min_batch=low,
        max_batch=high,
    )
    rng = random.Random(plan.seed)
    sizes = [rng.randint(low, high) for _ in range(plan.sustained_s)]
    batches = _batches(options, sizes)
    before = await visible_total(client)
    progress: dict[str, int] = {"accepted": 0}

    def on_progress(p: publish.Progress) -> None:
        progress["accepted"] = p.accepted

    async def sample_backlog(stop: asyncio.Event) -> None:
        started = time.monotonic()
        async with bench_system.jetstream(target.nats_url) as js:
            while not stop.is_set():
                stored = await visible_total(client) - before
                pending = held = None
                if js is not None:
                    pending = await bench_system.pending_messages(js, target.stream)
                    held = await bench_system.stream_bytes(js, target.stream)
                elapsed = time.monotonic() - started
                r.samples.append(Sample(elapsed, progress["accepted"], stored, pending, held))
                await asyncio.sleep(1.0)

    stop = asyncio.Event()
    # The ledger covers publishing and the drain: the CPU that stored every accepted event.
    async with target.phase() as measured:
        sampler = asyncio.create_task(sample_backlog(stop))
        started = time.monotonic()
        summary = await publish.publish(options, batches=batches, on_progress=on_progress)
        window = time.monotonic() - started
        stored_in_window = await visible_total(client) - before
        stop.set()
        await sampler
        await wait_visible(client, before + len(summary.accepted_ids()), 900)
    _record(r, summary)
    r.sustained_accepted = len(summary.accepted_ids())
    r.cpu["sustained"] = PhaseCpu.of(measured, r.sustained_accepted)
    r.sustained_stored, r.sustained_seconds = stored_in_window, window
    if target.database_url:
        r.freshness += await _freshness(target.database_url, summary, plan)


# -- the soak ------------------------------------------------------------------------------

# Batches made ahead: 11 MB each on average (21 MB at most), so ~330 MB queued (630 at worst).
_SOAK_AHEAD = 30
# Batches ready before the soak starts: 20 s of slack for a generator the system slows down.
_SOAK_HEAD_START = 20


def soak_sizes(plan: BenchPlan) -> list[int]:
    """One POST size per second of the soak: a minute of uniform sizes, repeated, so every
    minute offers the same events and the per-minute stored counts compare like for like."""
    low, high = plan.sustained_batches
    rng = random.Random(plan.seed + 3)
    minute = [rng.randint(low, high) for _ in range(60)]
    return [minute[i % 60] for i in range(plan.soak_s)]


def _make_batches(
    options: PublishOptions, sizes: Sequence[int], out: Queue[Any], keep_ids: bool
) -> None:
    """The soak's generator process: each batch (without its ids unless `keep_ids`), and how
    many of its events are new to the store."""
    maker = BatchMaker(options)
    previous: set[str] = set()
    for size in sizes:
        batch = maker.make(size)
        ids = set(batch.valid_ids)
        # BatchMaker re-sends only the previous batch's events across POSTs.
        out.put((batch if keep_ids else replace(batch, valid_ids=()), len(ids - previous)))
        previous = ids
    out.put(None)


class SoakBatches:
    """Batches made during the soak by a separate process, a bounded queue ahead: the soak's
    would take gigabytes made beforehand, and made here they would slow the publisher.
    Iterate it to get them (what `publish(batches=…)` does, from a thread). A soak drops the
    eventIds (gigabytes over minutes); `keep_ids` keeps them, for a run whose every accepted
    event is looked up afterwards (the fault tests at the publisher's pace)."""

    def __init__(
        self, options: PublishOptions, sizes: Sequence[int], *, keep_ids: bool = False
    ) -> None:
        # Spawned, not forked: this process runs Ray's and the publisher's threads.
        context = multiprocessing.get_context("spawn")
        self._queue: Queue[Any] = context.Queue(maxsize=_SOAK_AHEAD)
        self._process = context.Process(
            target=_make_batches,
            args=(options, list(sizes), self._queue, keep_ids),
            name="adfunnel-bench-batches",
            daemon=True,
        )
        # Batch index → events of it new to the store.
        self.new_events: dict[int, int] = {}

    def __enter__(self) -> SoakBatches:
        self._process.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._process.is_alive():
            self._process.terminate()
        self._process.join()
        self._queue.close()

    @property
    def pid(self) -> int:
        assert self._process.pid is not None, "not started"
        return self._process.pid

    def wait_ahead(self, batches: int, timeout_s: float) -> None:
        """Until `batches` are queued (or the generator is done, or `timeout_s` passed)."""
        deadline = time.monotonic() + timeout_s
        while self._queue.qsize() < batches and time.monotonic() < deadline:
            if not self._process.is_alive():
                return
            time.sleep(0.2)

    def _get(self) -> Any:
        while True:
            try:
                return self._queue.get(timeout=1)
            except queue.Empty:
                if not self._process.is_alive():
                    break
        try:  # it may have ended just after queueing its last batches
            return self._queue.get(timeout=1)
        except queue.Empty:
            raise RuntimeError(f"the batch generator exited ({self._process.exitcode})") from None

    def __iter__(self) -> Iterator[Batch]:
        while (item := self._get()) is not None:
            batch, new = item
            self.new_events[batch.index] = new
            yield batch


async def _sample_stored(
    client: httpx.AsyncClient, before: int, soak: SoakRun, stop: asyncio.Event
) -> None:
    """Events stored since the soak began, every second, until `stop`."""
    while not stop.is_set():
        soak.stored.append((time.monotonic(), await visible_total(client) - before))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


async def phase_soak(
    client: httpx.AsyncClient, target: Target, plan: BenchPlan, r: Results, log: Any = print
) -> None:
    """The real publisher's profile for `plan.soak_s` seconds on a table that keeps growing.

    Its eventIds are not kept (millions of them would take gigabytes): lost and duplicated
    come from counts, exact when no POST failed.
    """
    low, high = plan.sustained_batches
    options = _options(
        target,
        plan,
        interval_s=1.0,
        concurrency=64,
        seed=plan.seed + 3,
        min_batch=low,
        max_batch=high,
        record_ids=False,
    )
    soak = r.soak = SoakRun()
    with SoakBatches(options, soak_sizes(plan)) as source:
        target.processes.exclude.add(source.pid)
        try:
            await asyncio.to_thread(source.wait_ahead, _SOAK_HEAD_START, 120.0)
            await _soak(client, target, options, source, r, soak, log)
        finally:
            target.processes.exclude.discard(source.pid)


async def _soak(
    client: httpx.AsyncClient,
    target: Target,
    options: PublishOptions,
    source: SoakBatches,
    r: Results,
    soak: SoakRun,
    log: Any,
) -> None:
    """The soak's window: publish, drain, and book the CPU of both."""
    before = await visible_total(client)
    stop = asyncio.Event()
    async with target.phase() as measured:
        sampler = asyncio.create_task(_sample_stored(client, before, soak, stop))
        summary = await publish.publish(options, batches=source)
        stop.set()
        await sampler
        soak.expected = sum(source.new_events.get(p.index, 0) for p in summary.posts if p.ok)
        try:
            await wait_visible(client, before + soak.expected, 900)
        except TimeoutError as error:
            log(f"soak: {error}")
        soak.stored_total = await visible_total(client) - before
    totals = measured.cpu.totals
    base = totals[0][1] if totals else 0.0
    soak.cpu = [(t, total - base) for t, total in totals]
    soak.seconds, soak.sent = summary.seconds, summary.sent
    soak.lag_max_s = max((p.lag_s for p in summary.posts), default=0.0)
    r.failed_posts += summary.failed_posts
    r.refused_posts += summary.refused_posts
    r.cpu["soak"] = PhaseCpu.of(measured, soak.stored_total)


async def _freshness(database_url: str, summary: PublishSummary, plan: BenchPlan) -> list[float]:
    rng = random.Random(plan.seed)
    sent: dict[str, float] = {}
    for post in summary.posts:
        ids = list(post.event_ids)
        for event_id in rng.sample(ids, min(len(ids), plan.freshness_ids_per_post)):
            sent.setdefault(event_id, post.sent_at.timestamp())
    conn = await asyncpg.connect(database_url)
    try:
        rows = await storage.stored_traces(conn, list(sent))
    finally:
        await conn.close()
    return [row["stored_at"].timestamp() - sent[row["event_id"]] for row in rows]


async def account(database_url: str, accepted: set[str], stored_increase: int) -> tuple[int, int]:
    """(lost, duplicated): accepted eventIds with no row; rows beyond the accepted ones."""
    conn = await asyncpg.connect(database_url)
    try:
        ids, found = list(accepted), 0
        for start in range(0, len(ids), 50_000):
            found += await storage.count_stored(conn, ids[start : start + 50_000])
    finally:
        await conn.close()
    return len(ids) - found, max(0, stored_increase - found)


def _per_event(size: int, events: int) -> float | None:
    return round(size / events, 1) if events else None


def jetstream_bytes_per_event(samples: list[Sample]) -> float | None:
    """The stream's bytes per waiting event, at the largest backlog of the sustained phase
    (none below 10,000 events: a few messages say little)."""
    held = [s for s in samples if s.stream_bytes is not None and s.backlog >= 10_000]
    if not held:
        return None
    largest = max(held, key=lambda s: s.backlog)
    assert largest.stream_bytes is not None
    return round(largest.stream_bytes / largest.backlog, 1)


async def measure_disk(database_url: str, results: Results) -> None:
    """Bytes on disk per stored event, every table of the project (SPEC §9)."""
    conn = await asyncpg.connect(database_url)
    try:
        usage = await storage.disk_usage(conn)
        results.stored_events, results.disk_bytes, results.events_disk_bytes = usage
    finally:
        await conn.close()


async def run_phases(target: Target, plan: BenchPlan, results: Results, log: Any) -> None:
    """Every phase against a running system (with `plan.soak_s`: the soak alone)."""
    async with httpx.AsyncClient(base_url=target.base_url, timeout=60) as client:
        if plan.soak_s:
            log(f"soak: real publisher profile for {plan.soak_s} s")
            await phase_soak(client, target, plan, results, log)
            return
        start_total = await visible_total(client)
        log(f"as fast as possible: {plan.e2e_events:,} events")
        await phase_e2e(client, target, plan, results)
        log(f"acks: {plan.ack_posts} POSTs of {plan.big_batch:,} events every 2 s")
        await phase_acks(client, target, plan, results)
        log(f"real publisher profile for {plan.sustained_s} s")
        await phase_sustained(client, target, plan, results)
        if target.database_url:
            increase = await visible_total(client) - start_total
            results.lost, results.duplicated = await account(
                target.database_url, results.accepted_ids, increase
            )
            await measure_disk(target.database_url, results)


def run_floors(nats_url: str, database_url: str, plan: BenchPlan, r: Results, log: Any) -> None:
    """Both floors, on the servers the system will use, before it starts."""
    if plan.floor_events:
        log(f"floor: {plan.floor_events:,} events, one per message")
        r.floor = asyncio.run(
            run_floor(nats_url, database_url, events=plan.floor_events)
        ).events_per_s
    if plan.batched_floor_events:
        log(f"batched floor: {plan.batched_floor_events:,} events, 1,000 per message")
        r.floor_batched = asyncio.run(
            run_batched_floor(nats_url, database_url, events=plan.batched_floor_events)
        ).events_per_s


def table(figures: dict[str, Any]) -> str:
    """The figures as a Markdown table (the CPU ledger has its own: `cpu_table`)."""
    lines = ["| measure | value |", "|---|---|"]
    lines += [
        f"| {name} | {value} |" for name, value in figures.items() if not isinstance(value, dict)
    ]
    return "\n".join(lines)


def cpu_table(ledger: Mapping[str, Mapping[str, Any]]) -> str:
    """The CPU ledger as a Markdown table: µs of CPU per stored event, per component and
    phase; the rest of the machine apart (not in the total)."""
    phases = list(ledger)
    if not phases:
        return ""

    def row(name: str, values: Sequence[Any]) -> str:
        return f"| {name} | " + " | ".join("-" if v is None else str(v) for v in values) + " |"

    lines = [
        row("CPU µs/event", phases),
        "|---|" + "---:|" * len(phases),
    ]
    lines += [
        row(name, [ledger[p]["by_component"].get(name) for p in phases]) for name in COMPONENTS
    ]
    lines.append(row("**total**", [ledger[p]["total_us_per_event"] for p in phases]))
    lines.append(row("outside the system", [ledger[p]["outside_us_per_event"] for p in phases]))
    lines.append(row("WAL bytes/event", [ledger[p].get("wal_bytes_per_event") for p in phases]))
    lines.append(row("events", [ledger[p]["events"] for p in phases]))
    lines.append(row("wall s", [ledger[p]["seconds"] for p in phases]))
    return "\n".join(lines)


def main(
    *,
    quick: bool,
    url: str | None,
    database_url: str | None,
    nats_url: str | None,
    json_path: Path | None,
    soak_s: int | None = None,
    publisher: Mapping[str, Any] | None = None,
    log: Any = print,
) -> int:
    """Run the benchmark (starting the system when no `url`), print the tables; 2 when the
    publisher options cannot be used, 1 when events were lost, duplicated or refused."""
    extra = dict(publisher or {})
    problem = publisher_problem(extra)
    if soak_s is not None and soak_s <= 0:
        problem = f"--soak needs a positive number of seconds, not {soak_s}"
    if problem is not None:
        print(f"adfunnel bench: {problem}", file=sys.stderr)
        return 2
    plan = replace(QUICK if quick else FULL, soak_s=soak_s or 0, publisher=extra)
    results = Results()
    if url is not None:
        target = Target(url.rstrip("/"), database_url, nats_url)
        if database_url and nats_url:
            run_floors(nats_url, database_url, plan, results, log)
        asyncio.run(run_phases(target, plan, results, log))
    else:
        with tempfile.TemporaryDirectory(prefix="adfunnel-bench-") as tmp:
            _run_own_system(Path(tmp), plan, results, log, database_url, nats_url)
    figures = results.figures()
    print(table(figures))
    print()
    print(cpu_table(figures["cpu_ledger"]))
    if json_path is not None:
        json_path.write_text(json.dumps(figures, indent=2) + "\n")
    return 1 if results.failed() else 0


def _run_own_system(
    data_dir: Path,
    plan: BenchPlan,
    results: Results,
    log: Any,
    database_url: str | None,
    nats_url: str | None,
) -> None:
    """Servers (embedded unless given), floors, then the system on a local Ray cluster."""
    import ray  # noqa: PLC0415  # heavy; only this path needs it
    from ray import serve  # noqa: PLC0415

    from adfunnel import embedded, testing  # noqa: PLC0415

    # What we start is found by ancestry; servers given by URL by their titles, anywhere.
    given = {"postgres": database_url, "nats": nats_url}
    meter = CpuMeter(external=frozenset(name for name, url in given.items() if url))
    with bench_system.servers(data_dir, nats_url, database_url) as servers:
        run_floors(servers.nats_url, servers.database_url, plan, results, log)
        sampler = bench_system.MemorySampler(exclude=meter.exclude)
        log("starting the system (local Ray cluster on 127.0.0.1)")
        ray.init(
            address="local",
            num_cpus=os.cpu_count(),
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            log_to_driver=False,  # the system's per-batch logs would bury the table
        )
        try:
            port = embedded.free_port()
            testing.start_serve(port)
            settings = {
                "nats_url": servers.nats_url,
                "database_url": servers.database_url,
                "data_dir": str(data_dir),
            }
            with sampler.running():
                deployed = testing.deploy(f"http://127.0.0.1:{port}", settings)
                target = Target(
                    deployed.base_url, servers.database_url, servers.nats_url, processes=meter
                )
                asyncio.run(run_phases(target, plan, results, log))
            results.peak_pss_kb = sampler.peak_kb
            testing.undeploy()
            serve.shutdown()  # type: ignore[no-untyped-call]  # ray ships it unannotated
        finally:
            ray.shutdown()
