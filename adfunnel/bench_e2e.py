"""`adfunnel bench`: the whole pipeline measured on this machine, in one run.

Phases, in order: the floor (a bare asyncio pipeline on the same servers, before the system
starts); as fast as possible (50,000-event POSTs back to back, first POST → every accepted
event counted by `/reports/events`); acks (50,000-event POSTs every 2 s: HTTP ack latency);
the real publisher's profile (one POST of 1,000 to 50,000 events per second, not waiting for
answers) with the backlog sampled; then freshness (POST → `stored_at`), lost and duplicated
events (every accepted eventId against the rows), and the peak memory of the whole system.

Batches are generated before each phase: the generator's CPU would otherwise be measured as
the system's on a two-core machine.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from adfunnel import bench_system, publish
from adfunnel.bench_floor import run_floor
from adfunnel.publish import Batch, BatchMaker, PublishOptions, PublishSummary
from adfunnel.stats import percentile


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


QUICK = BenchPlan(e2e_events=250_000, ack_posts=6, sustained_s=45, floor_events=50_000)
FULL = BenchPlan(e2e_events=1_000_000, ack_posts=20, sustained_s=300, floor_events=200_000)


@dataclass
class Target:
    """The system under test: its HTTP base URL and, when known, its servers."""

    base_url: str
    database_url: str | None
    nats_url: str | None
    stream: str = "EVENTS"


@dataclass
class Sample:
    """The backlog at one moment of the sustained phase."""

    t: float
    accepted: int
    stored: int
    pending_messages: int | None

    @property
    def backlog(self) -> int:
        return self.accepted - self.stored


@dataclass
class Results:
    """Everything measured; `figures()` is the JSON of the issue."""

    floor: float | None = None
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
    lost: int | None = None
    duplicated: int | None = None
    peak_pss_kb: int = 0

    def figures(self) -> dict[str, Any]:
        e2e = self.e2e_events / self.e2e_seconds if self.e2e_seconds else None
        sustained = (
            self.sustained_stored / self.sustained_seconds if self.sustained_seconds else None
        )

        def ms(values: list[float], q: float) -> float | None:
            value = percentile(values, q)
            return None if value is None else round(value * 1000, 1)

        return {
            "e2e_events_per_s": _round(e2e),
            "floor_events_per_s": _round(self.floor),
            "ratio_vs_floor": round(e2e / self.floor, 2) if e2e and self.floor else None,
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
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value)


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


def _options(target: Target, **overrides: Any) -> PublishOptions:
    base = {
        "endpoint": target.base_url + "/webhook",
        "secret": os.environ.get(publish.SECRET_ENV),
        "timeout_s": 120.0,
    }
    return PublishOptions(**(base | overrides))


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


async def phase_e2e(client: httpx.AsyncClient, target: Target, plan: BenchPlan, r: Results) -> None:
    """As fast as possible: all batches made first, then POSTed back to back."""
    options = _options(target, interval_s=0.0, concurrency=2, seed=plan.seed)
    count, rest = divmod(plan.e2e_events, plan.big_batch)
    batches = _batches(options, [plan.big_batch] * count + ([rest] if rest else []))
    before = await visible_total(client)
    started = time.monotonic()
    summary = await publish.publish(options, batches=batches)
    _record(r, summary)
    done = await wait_visible(client, before + len(summary.accepted_ids()), 600)
    r.e2e_events, r.e2e_seconds = len(summary.accepted_ids()), done - started


async def phase_acks(
    client: httpx.AsyncClient, target: Target, plan: BenchPlan, r: Results
) -> None:
    """50,000-event POSTs every 2 s (25,000 events/s, the real publisher's mean at its max)."""
    options = _options(target, interval_s=2.0, seed=plan.seed + 1)
    batches = _batches(options, [plan.big_batch] * plan.ack_posts)
    before = await visible_total(client)
    summary = await publish.publish(options, batches=batches)
    _record(r, summary)
    r.ack_latencies += [p.latency_s for p in summary.posts if p.ok]
    await wait_visible(client, before + len(summary.accepted_ids()), 600)


async def phase_sustained(
    client: httpx.AsyncClient, target: Target, plan: BenchPlan, r: Results
) -> None:
    """The real publisher's profile; the backlog sampled every second; freshness after."""
    low, high = plan.sustained_batches
    options = _options(
        target, interval_s=1.0, concurrency=64, seed=plan.seed + 2, min_batch=low, max_batch=high
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
                pending = None
                if js is not None:
                    pending = await bench_system.pending_messages(js, target.stream)
                r.samples.append(
                    Sample(time.monotonic() - started, progress["accepted"], stored, pending)
                )
                await asyncio.sleep(1.0)

    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_backlog(stop))
    started = time.monotonic()
    summary = await publish.publish(options, batches=batches, on_progress=on_progress)
    window = time.monotonic() - started
    stored_in_window = await visible_total(client) - before
    stop.set()
    await sampler
    _record(r, summary)
    r.sustained_accepted = len(summary.accepted_ids())
    r.sustained_stored, r.sustained_seconds = stored_in_window, window
    await wait_visible(client, before + r.sustained_accepted, 900)
    if target.database_url:
        r.freshness += await _freshness(target.database_url, summary, plan)


async def _freshness(database_url: str, summary: PublishSummary, plan: BenchPlan) -> list[float]:
    rng = random.Random(plan.seed)
    sent: dict[str, float] = {}
    for post in summary.posts:
        ids = list(post.event_ids)
        for event_id in rng.sample(ids, min(len(ids), plan.freshness_ids_per_post)):
            sent.setdefault(event_id, post.sent_at.timestamp())
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT event_id, extract(epoch FROM stored_at)::float8 AS stored"
            " FROM events WHERE event_id = ANY($1)",
            list(sent),
        )
    finally:
        await conn.close()
    return [row["stored"] - sent[row["event_id"]] for row in rows]


async def account(database_url: str, accepted: set[str], stored_increase: int) -> tuple[int, int]:
    """(lost, duplicated): accepted eventIds with no row; rows beyond the accepted ones."""
    conn = await asyncpg.connect(database_url)
    try:
        ids, found = list(accepted), 0
        for start in range(0, len(ids), 50_000):
            found += await conn.fetchval(
                "SELECT count(*) FROM events WHERE event_id = ANY($1)", ids[start : start + 50_000]
            )
    finally:
        await conn.close()
    return len(ids) - found, max(0, stored_increase - found)


async def run_phases(target: Target, plan: BenchPlan, results: Results, log: Any) -> None:
    """Every phase against a running system."""
    async with httpx.AsyncClient(base_url=target.base_url, timeout=60) as client:
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


def table(figures: dict[str, Any]) -> str:
    """The figures as a Markdown table."""
    lines = ["| measure | value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in figures.items()]
    return "\n".join(lines)


def main(
    *,
    quick: bool,
    url: str | None,
    database_url: str | None,
    nats_url: str | None,
    json_path: Path | None,
    log: Any = print,
) -> int:
    """Run the benchmark (starting the system when no `url`), print the table."""
    plan = QUICK if quick else FULL
    results = Results()
    if url is not None:
        target = Target(url.rstrip("/"), database_url, nats_url)
        if database_url and nats_url:
            results.floor = asyncio.run(
                run_floor(nats_url, database_url, events=plan.floor_events)
            ).events_per_s
        asyncio.run(run_phases(target, plan, results, log))
    else:
        with tempfile.TemporaryDirectory(prefix="adfunnel-bench-") as tmp:
            _run_own_system(Path(tmp), plan, results, log, database_url, nats_url)
    figures = results.figures()
    print(table(figures))
    if json_path is not None:
        json_path.write_text(json.dumps(figures, indent=2) + "\n")
    return 0 if not results.lost and not results.duplicated and not results.failed_posts else 1


def _run_own_system(
    data_dir: Path,
    plan: BenchPlan,
    results: Results,
    log: Any,
    database_url: str | None,
    nats_url: str | None,
) -> None:
    """Servers (embedded unless given), floor, then the system on a local Ray cluster."""
    import ray  # noqa: PLC0415  # heavy; only this path needs it
    from ray import serve  # noqa: PLC0415

    from adfunnel import embedded, testing  # noqa: PLC0415

    with bench_system.servers(data_dir, nats_url, database_url) as servers:
        log(f"floor: {plan.floor_events:,} events, one per message")
        results.floor = asyncio.run(
            run_floor(servers.nats_url, servers.database_url, events=plan.floor_events)
        ).events_per_s
        sampler = bench_system.MemorySampler()
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
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            settings = {
                "nats_url": servers.nats_url,
                "database_url": servers.database_url,
                "data_dir": str(data_dir),
            }
            with sampler.running():
                deployed = testing.deploy(f"http://127.0.0.1:{port}", settings)
                target = Target(deployed.base_url, servers.database_url, servers.nats_url)
                asyncio.run(run_phases(target, plan, results, log))
            results.peak_pss_kb = sampler.peak_kb
            testing.undeploy()
            serve.shutdown()  # type: ignore[no-untyped-call]  # ray ships it unannotated
        finally:
            ray.shutdown()
