"""`adfunnel bench` (end to end): its accounting of lost and duplicated events, checked on a
small run against the real pipeline, and its CPU ledger and soak arithmetic on made-up
samples. Timings are printed by the benchmark, never asserted."""

from __future__ import annotations

import subprocess
import sys

import asyncpg
import httpx
import pytest

from adfunnel.testing import Deployed
from adfunnel.tools.bench import e2e as bench_e2e
from adfunnel.tools.bench.e2e import BenchPlan, PhaseCpu, Results, Sample, SoakRun, Target, growth
from adfunnel.tools.bench.system import (
    COMPONENTS,
    CpuMeter,
    ProcSample,
    component,
    ledger,
    split_scope,
)
from adfunnel.tools.publish import BatchMaker, PublishOptions, publish

TINY = BenchPlan(
    e2e_events=2_500,
    ack_posts=2,
    sustained_s=3,
    floor_events=0,
    big_batch=1_000,
    sustained_batches=(200, 800),
    freshness_ids_per_post=10,
)


def test_backlog_growth_is_the_least_squares_slope() -> None:
    samples = [Sample(t, 1_000 * t + 500, 0, None) for t in range(5)]
    assert growth(samples) == pytest.approx(1_000)
    flat = [Sample(t, 100, 100, None) for t in range(5)]
    assert growth(flat) == 0
    assert growth(flat[:1]) is None


@pytest.mark.integration
async def test_a_small_run_accounts_every_accepted_event(system: Deployed) -> None:
    database_url = system.settings["database_url"]
    target = Target(system.base_url, database_url, system.settings["nats_url"])
    target.stream = system.settings["nats_stream"]
    results = Results()
    await bench_e2e.run_phases(target, TINY, results, lambda message: None)
    figures = results.figures()
    assert results.failed_posts == 0
    assert results.lost == 0 and results.duplicated == 0
    conn = await asyncpg.connect(database_url)
    try:
        stored = await conn.fetchval("SELECT count(*) FROM events")
    finally:
        await conn.close()
    # Every stored row is an accepted event and every accepted event is stored.
    assert stored == len(results.accepted_ids) == figures["accepted"]
    assert results.e2e_events > 0 and len(results.ack_latencies) == TINY.ack_posts
    assert results.samples and results.freshness
    assert all(value > 0 for value in results.freshness)
    assert set(figures["cpu_ledger"]) == {"e2e", "acks", "sustained"}
    assert figures["cpu_ledger"]["e2e"]["events"] == results.e2e_events
    # Every stored event's row reaches the WAL: in each phase, at least 100 bytes an event.
    assert all(phase["wal_bytes_per_event"] > 100 for phase in figures["cpu_ledger"].values())
    # Bytes on disk per stored event, from the real tables: the events table's own share
    # is most of it, and the shares add up to the total.
    by_table = figures["disk_bytes_per_event_by_table"]
    assert results.stored_events == stored and by_table["events"] > 0
    assert sum(by_table.values()) == pytest.approx(figures["disk_bytes_per_event"], abs=1)
    assert by_table["events"] == max(by_table.values())
    # `events` apart: its rows and each index, adding up to its share.
    parts = figures["events_bytes_per_event"]
    assert {"heap", "events_pkey", "events_time_idx"} <= set(parts)
    assert sum(parts.values()) == pytest.approx(by_table["events"], abs=1)


def test_jetstream_bytes_per_event_are_read_at_the_largest_backlog() -> None:
    samples = [
        Sample(0, 5_000, 0, 5, 4_000_000),  # too small a backlog to say much
        Sample(1, 30_000, 10_000, 20, 12_000_000),
        Sample(2, 50_000, 10_000, 40, 20_000_000),
        Sample(3, 60_000, 50_000, 10, None),
    ]
    assert bench_e2e.jetstream_bytes_per_event(samples) == 500.0
    assert bench_e2e.jetstream_bytes_per_event(samples[:1]) is None


@pytest.mark.integration
async def test_the_accounting_sees_a_lost_and_an_extra_event(system: Deployed) -> None:
    database_url = system.settings["database_url"]
    target = Target(system.base_url, database_url, system.settings["nats_url"])
    results = Results()
    plan = BenchPlan(0, 1, 0, 0, big_batch=500)
    async with httpx.AsyncClient(base_url=system.base_url, timeout=60) as client:
        await bench_e2e.phase_acks(client, target, plan, results)
    accepted = set(results.accepted_ids)
    assert await bench_e2e.account(database_url, accepted, len(accepted)) == (0, 0)
    # An accepted id that was never stored is lost; a stored row nobody accepted is extra.
    assert await bench_e2e.account(database_url, accepted | {"never-stored"}, len(accepted)) == (
        1,
        0,
    )
    assert await bench_e2e.account(database_url, accepted, len(accepted) + 1) == (0, 1)


def test_figures_have_the_issue_keys() -> None:
    results = Results(floor=10_000.0, e2e_events=20_000, e2e_seconds=1.0)
    results.ack_latencies = [0.5, 1.0]
    results.samples = [Sample(0, 0, 0, 0), Sample(1, 10, 0, 1)]
    figures = results.figures()
    for key in (
        "e2e_events_per_s",
        "floor_events_per_s",
        "ratio_vs_floor",
        "sustained_events_per_s",
        "backlog_growth_events_per_s",
        "ack_p50_ms",
        "ack_p99_ms",
        "freshness_p50_ms",
        "freshness_p99_ms",
        "peak_rss_mb",
        "lost",
        "duplicated",
    ):
        assert key in figures
    assert figures["ratio_vs_floor"] == 2.0
    assert figures["ack_p99_ms"] == 1000.0
    assert figures["backlog_growth_events_per_s"] == 10


def test_the_figures_carry_the_batched_floor_and_the_cpu_ledger() -> None:
    results = Results(floor=10_000.0, floor_batched=40_000.0, e2e_events=20_000, e2e_seconds=1.0)
    system = dict.fromkeys(COMPONENTS, 0.0) | {"gateway": 0.5, "postgres": 0.25}
    outside = dict.fromkeys(COMPONENTS, 0.0) | {"other": 1.0}
    results.cpu["sustained"] = PhaseCpu(25_000, 10.0, system, outside, wal_bytes=20_000_000)
    figures = results.figures()
    assert figures["ratio_vs_floor"] == 2.0
    assert figures["floor_batched_events_per_s"] == 40_000
    assert figures["ratio_vs_batched_floor"] == 0.5
    # 0.75 CPU seconds over 25,000 events: 30 µs each; the rest of the machine apart.
    assert figures["cpu_us_per_event"] == 30.0
    assert figures["cpu_us_per_event_by_component"]["gateway"] == 20.0
    assert figures["cpu_us_per_event_by_component"]["postgres"] == 10.0
    sustained = figures["cpu_ledger"]["sustained"]
    assert sustained["events"] == 25_000 and sustained["outside_us_per_event"] == 40.0
    printed = bench_e2e.cpu_table(figures["cpu_ledger"])
    assert "| gateway | 20.0 |" in printed and "| **total** | 30.0 |" in printed
    # 20 MB of WAL over 25,000 events.
    assert figures["wal_bytes_per_event"] == sustained["wal_bytes_per_event"] == 800.0
    assert "| WAL bytes/event | 800.0 |" in printed
    assert "cpu_ledger" not in bench_e2e.table(figures)


def test_without_a_phase_the_cpu_figures_are_empty() -> None:
    figures = Results().figures()
    assert figures["cpu_us_per_event"] is None and figures["cpu_ledger"] == {}
    assert figures["wal_bytes_per_event"] is None
    assert bench_e2e.cpu_table({}) == ""


@pytest.mark.parametrize(
    ("title", "expected"),
    [
        ("ray::ServeReplica:ingest:Gateway", "gateway"),
        ("ray::ServeReplica:ingest:Gateway.__call__", "gateway"),
        ("ray::ServeReplica:reports:Reporter", "reporter"),
        ("ray::ServeReplica:ingest:Supervisor", "supervisor"),
        ("ray::ServeReplica:other:Unknown", "other"),
        ("ray::ProxyActor", "proxy"),
        ("ray::ServeController", "serve_controller"),
        ("ray::Consumer", "consumers"),
        ("ray::Consumer.run", "consumers"),
        ("ray::Writer", "writers"),
        ("ray::IDLE", "ray_own"),
        ("/venv/lib/python3.11/site-packages/ray/core/src/ray/gcs/gcs_server --port=1", "ray_own"),
        ("/venv/lib/python3.11/site-packages/ray/core/src/ray/raylet/raylet --x", "ray_own"),
        (
            "/venv/bin/python -u /venv/lib/python3.11/site-packages/ray/dashboard/agent.py",
            "ray_own",
        ),
        ("/usr/lib/postgresql/15/bin/postgres -D /data", "postgres"),
        ("postgres: 15/main: walwriter", "postgres"),
        ("postgres: postgres adfunnel 127.0.0.1(5432) idle", "postgres"),
        ("/venv/bin/nats-server -a 127.0.0.1 -p 4222 -js", "nats"),
        ("/venv/bin/python -m adfunnel.embedded guard 42 -- /pg/bin/postgres -D x", "postgres"),
        ("/venv/bin/python -m adfunnel.embedded guard 42 -- /venv/bin/nats-server -js", "nats"),
        ("sshd: root@pts/0", "other"),
        ("kworker/0:1", "other"),
        ("", "other"),
    ],
)
def test_process_titles_name_their_component(title: str, expected: str) -> None:
    assert component(title) == expected


def test_the_ledger_books_each_process_inside_the_window() -> None:
    gateway, walwriter, worker, backend = 11, 12, 13, 14
    start = {
        gateway: ("ray::ServeReplica:ingest:Gateway", 10.0),
        walwriter: ("postgres: 15/main: walwriter", 1.0),
        worker: ("ray::IDLE", 5.0),
    }
    middle = start | {walwriter: ("postgres: 15/main: walwriter", 1.5)}
    end = {
        gateway: ("ray::ServeReplica:ingest:Gateway", 12.5),
        # The same process, retitled once an actor lives in it: booked under its last title.
        worker: ("ray::Consumer", 6.0),
        # Born during the window: counts from 0.
        backend: ("postgres: postgres adfunnel 127.0.0.1(1) idle", 0.75),
    }
    seconds = ledger(start, middle, end)
    assert set(seconds) == set(COMPONENTS)
    assert seconds["gateway"] == 2.5
    assert seconds["consumers"] == 1.0
    assert seconds["ray_own"] == 0.0
    # The walwriter, gone by the end, counts up to its last sample.
    assert seconds["postgres"] == 0.5 + 0.75
    # Without the middle sample its half second is lost: what sampling each second bounds.
    assert ledger(start, end)["postgres"] == 0.75
    assert sum(ledger(start).values()) == 0.0


def test_a_reused_pid_is_a_new_process() -> None:
    first = {7: ("ray::Writer", 30.0)}
    # CPU seconds went down: the writer died and a new process took its pid.
    then = {7: ("postgres: postgres adfunnel 127.0.0.1(1) idle", 2.0)}
    again = {7: ("postgres: postgres adfunnel 127.0.0.1(1) idle", 3.0)}
    seconds = ledger(first, then, again)
    assert seconds["writers"] == 0.0 and seconds["postgres"] == 3.0


def test_the_scope_is_our_descendants_and_external_servers() -> None:
    bench, raylet, writer, generator, its_child = 100, 101, 102, 150, 151
    machine_pg, other_ray = 200, 300
    procs = {
        1: ProcSample("/sbin/init", 50.0, ppid=0),
        bench: ProcSample("python -m adfunnel bench", 9.0, ppid=1),
        raylet: ProcSample("/ray/core/src/ray/raylet/raylet", 1.0, ppid=bench),
        writer: ProcSample("ray::Writer", 2.0, ppid=raylet),
        generator: ProcSample("python -c from multiprocessing.spawn import", 3.0, ppid=bench),
        its_child: ProcSample("python", 4.0, ppid=generator),
        machine_pg: ProcSample("postgres: 15/main: checkpointer", 5.0, ppid=1),
        other_ray: ProcSample("ray::Writer", 6.0, ppid=1),
    }
    system, outside = split_scope(procs, bench, {generator}, frozenset())
    assert set(system) == {raylet, writer}
    # Another session's writer is not ours, whatever its title.
    assert set(outside) == {1, machine_pg, other_ray}
    system, outside = split_scope(procs, bench, {generator}, frozenset({"postgres"}))
    assert set(system) == {raylet, writer, machine_pg}
    assert system[machine_pg].cpu_s == 5.0


def test_children_that_died_are_found_in_their_reaping_parent() -> None:
    postmaster, backend = 500, 501
    start = {
        postmaster: ProcSample("postgres -D /data", 3.0, 10.0, ppid=1),
        backend: ProcSample("postgres: postgres adfunnel idle", 1.0, ppid=postmaster),
    }
    last_seen = start | {backend: ProcSample("postgres: postgres adfunnel idle", 1.5, ppid=500)}
    # The backend ended at 1.8 s, and another lived and died between two samples (0.4 s):
    # the postmaster reaped both, its reaped CPU grew by their whole lives.
    end = {postmaster: ProcSample("postgres -D /data", 3.0, 10.0 + 1.8 + 0.4, ppid=1)}
    assert ledger(start, last_seen, end)["postgres"] == pytest.approx(0.8 + 0.4)
    # A reaper outside the system (init) books nothing: the tail after the last sample is lost.
    assert ledger({backend: start[backend]}, {backend: last_seen[backend]}, {})[
        "postgres"
    ] == pytest.approx(0.5)


def test_the_meter_books_a_child_process_as_ours() -> None:
    burn = (
        "import sys, time\n"
        "while time.process_time() < 0.2: pass\n"
        "print('burnt', flush=True)\n"
        "sys.stdin.read()\n"
    )
    meter = CpuMeter(external=frozenset(), interval_s=0.05)
    with meter.phase() as window:
        child = subprocess.Popen(
            [sys.executable, "-c", burn], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        try:
            assert child.stdout is not None and child.stdout.readline() == "burnt\n"
        except BaseException:
            child.kill()
            raise
    assert child.stdin is not None
    child.stdin.close()
    child.wait()
    assert window.system.seconds()["other"] > 0
    assert window.totals and window.wall_s > 0


def test_per_minute_interpolates_the_minute_marks() -> None:
    # 100 events a second for two and a half minutes, sampled every 7 s.
    series = [(1000.0 + t, 100.0 * t) for t in range(0, 151, 7)]
    assert bench_e2e.per_minute(series, 1000.0) == pytest.approx([6000.0, 6000.0])
    assert bench_e2e.per_minute([], 0.0) == []
    assert bench_e2e.per_minute(series[:3], 1000.0) == []


def test_the_soak_figures_compare_the_last_minute_with_the_first() -> None:
    stored = [(float(t), 100.0 * t if t <= 60 else 6000.0 + 90.0 * (t - 60)) for t in range(181)]
    soak = SoakRun(stored=stored, cpu=[(float(t), 0.001 * t) for t in range(181)])
    soak.seconds, soak.sent, soak.expected, soak.stored_total = 180.0, 16_800, 16_800, 16_799
    figures = soak.figures()
    assert figures["soak_stored_per_minute"] == [6000, 5400, 5400]
    assert figures["soak_decay_ratio"] == 0.9
    assert figures["soak_cpu_us_per_event_per_minute"][0] == 10.0
    assert figures["soak_lost"] == 1 and figures["soak_duplicated"] == 0
    results = Results(soak=soak)
    assert results.figures()["soak_decay_ratio"] == 0.9
    assert results.failed()


def test_soak_sizes_repeat_one_minute() -> None:
    plan = BenchPlan(0, 0, 0, 0, soak_s=150)
    sizes = bench_e2e.soak_sizes(plan)
    assert len(sizes) == 150 and sizes[:60] == sizes[60:120] and sizes[120:] == sizes[:30]
    assert all(1_000 <= size <= 50_000 for size in sizes)


def test_soak_batches_come_from_another_process_without_their_ids() -> None:
    options = PublishOptions(endpoint="http://127.0.0.1:9/webhook", seed=5, record_ids=False)
    with bench_e2e.SoakBatches(options, [40, 60, 50]) as source:
        assert source.pid != 0
        batches = list(source)
    assert [b.events for b in batches] == [40, 60, 50]
    assert all(b.valid_ids == () and b.body for b in batches)
    maker = BatchMaker(options)
    expected, previous = [], set[str]()
    for size in (40, 60, 50):
        ids = set(maker.make(size).valid_ids)
        expected.append(len(ids - previous))
        previous = ids
    assert [source.new_events[b.index] for b in batches] == expected


def test_publisher_options_the_publisher_lacks_are_refused() -> None:
    assert bench_e2e.publisher_problem({}) is None
    problem = bench_e2e.publisher_problem({"no_such_field": 1})
    assert problem is not None and "no_such_field" in problem


async def test_the_publisher_posts_the_soak_batches() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        events = len(request.content.split(b'"eventId"'))  # about right: only a 202 matters
        return httpx.Response(202, json={"accepted": events, "duplicates": 0, "rejected": 0})

    options = PublishOptions(
        endpoint="http://bench.invalid/webhook", interval_s=0.0, seed=6, record_ids=False
    )
    with bench_e2e.SoakBatches(options, [30, 20]) as source:
        summary = await publish(options, batches=source, transport=httpx.MockTransport(answer))
    assert [post.events for post in summary.posts] == [30, 20]
    assert summary.failed_posts == 0 and set(source.new_events) == {0, 1}
