"""Faults under load (SPEC §5): every event that got a `202` is stored exactly once.

Each test runs the publisher simulator against the pipeline, breaks something in the
middle, lets the system recover by itself, then checks every promised eventId against the
database and the reporter's total against the rows (nothing counted twice). With
`ADFUNNEL_CHAOS_REPORT=FILE` each test appends its figures to FILE as JSON lines (the
fault table of docs/reliability.md).

`ADFUNNEL_CHAOS_LOAD` picks the load: `ci` (the default) sends 3,000 events/s in POSTs of
500 to 3,000, a pace a shared CI runner carries beside the suite; `publisher` is the real
publisher at its maximum (a POST every second of 1,000 to 50,000 events, never waiting for an
answer, made ahead by a separate process), for the fault table. `ADFUNNEL_CHAOS_READ_ONLY_S`
sets how long PostgreSQL stays read-only (default 20).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
import ray
import yaml

from actors.supervisor import ACTOR_NAMESPACE, actor_name
from adfunnel import embedded, storage
from adfunnel.testing import (
    Deployed,
    db_fetch,
    deploy,
    run,
    undeploy,
    unique_names,
    wait_until,
)
from adfunnel.tools.bench.e2e import SoakBatches
from adfunnel.tools.generator import Generator
from adfunnel.tools.publish import Progress, PublishOptions, PublishSummary, publish

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

ROOT = Path(__file__).resolve().parents[1]


LOAD_PROFILE = os.environ.get("ADFUNNEL_CHAOS_LOAD", "ci")
FULL_LOAD = LOAD_PROFILE == "publisher"
assert LOAD_PROFILE in ("ci", "publisher"), f"ADFUNNEL_CHAOS_LOAD={LOAD_PROFILE!r}"
READ_ONLY_S = float(os.environ.get("ADFUNNEL_CHAOS_READ_ONLY_S", "20"))
# A backlog built at the publisher's pace takes minutes to drain once the load stops.
SETTLE_S = 900 if FULL_LOAD else 240
# The publisher never waits for an answer; the client's deadline is how long it would.
CLIENT_TIMEOUT_S = 120 if FULL_LOAD else 60
# Sizes for ten minutes of POSTs: more than any fault test runs.
_FULL_LOAD_POSTS = 600


def load_options(base_url: str, seed: int) -> PublishOptions:
    """What the fault tests send (see the module's docstring for the two profiles)."""
    if FULL_LOAD:
        return PublishOptions(
            endpoint=f"{base_url}/webhook",
            interval_s=1.0,
            min_batch=1_000,
            max_batch=50_000,
            concurrency=256,
            timeout_s=CLIENT_TIMEOUT_S,
            seed=seed,
        )
    return PublishOptions(
        endpoint=f"{base_url}/webhook",
        rate=3_000,
        min_batch=500,
        max_batch=3_000,
        duplicate_share=0.02,
        invalid_share=0.005,
        concurrency=4,
        timeout_s=CLIENT_TIMEOUT_S,
        seed=seed,
    )


class Load:
    """The publisher simulator in a thread, sending until `stop`; `progress` is its latest
    running count."""

    def __init__(self, base_url: str, seed: int) -> None:
        self.options = load_options(base_url, seed)
        self.progress: Progress | None = None
        self._ready = threading.Event()
        self._summary: PublishSummary | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self._thread.start()
        assert self._ready.wait(120)

    def _track(self, progress: Progress) -> None:
        self.progress = progress

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        if not FULL_LOAD:
            self._ready.set()
            self._summary = await publish(self.options, stop=self._stop, on_progress=self._track)
            return
        # Generating 25,000 events/s takes half a core: another process makes them ahead.
        rng = random.Random(self.options.seed)
        low, high = self.options.min_batch, self.options.max_batch
        sizes = [rng.randint(low, high) for _ in range(_FULL_LOAD_POSTS)]
        with SoakBatches(self.options, sizes, keep_ids=True) as source:
            source.wait_ahead(10, timeout_s=120)
            self._ready.set()
            self._summary = await publish(
                self.options, stop=self._stop, on_progress=self._track, batches=source
            )

    def wait_for(self, condition: Callable[[Progress], bool], what: str, timeout: float) -> None:
        """Until the running count meets `condition` (the load goes on meanwhile)."""
        wait_until(
            lambda: self.progress is not None and condition(self.progress),
            timeout=timeout,
            interval=0.2,
            what=what,
        )

    def run_for(self, seconds: float) -> None:
        """Let the load run for a while (the fault happens between these)."""
        time.sleep(seconds)

    def stop(self) -> PublishSummary:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(240)
        assert self._summary is not None, "the publisher did not finish"
        return self._summary


@dataclass
class Outcome:
    """One fault's figures."""

    fault: str
    sent: int
    accepted: int
    stored: int
    lost: int
    duplicated: int
    statuses: dict[str, int]


def settle(
    fault: str,
    database_url: str,
    base_url: str,
    summary: PublishSummary,
    *,
    also: tuple[str, ...] = (),
) -> Outcome:
    """Wait until every promised event is stored, then count lost and double-counted.
    `also`: the classes of POSTs sent beside the load (none of them promised anything)."""
    promised = sorted(summary.accepted_ids())

    def stored_count() -> int:
        rows = db_fetch(
            database_url,
            "SELECT count(*) AS n FROM events WHERE event_id = ANY($1)",
            promised,
        )
        return int(rows[0]["n"])

    with contextlib.suppress(TimeoutError):  # what is missing then is reported as lost
        wait_until(lambda: stored_count() == len(promised), timeout=SETTLE_S, interval=1)
    stored = stored_count()
    rows = int(db_fetch(database_url, "SELECT count(*) AS n FROM events")[0]["n"])
    with httpx.Client(base_url=base_url, timeout=60) as client:
        total = int(client.get("/reports/events").json()["total"])
    statuses: dict[str, int] = {}
    for post in summary.posts:
        key = str(post.status) if post.status is not None else "transport error"
        if post.status == 503 and not post.retry_after:
            key = "503 without Retry-After"
        if post.status == 500 and post.error == PROXY_500:
            key = PROXY_500_CLASS
        statuses[key] = statuses.get(key, 0) + 1
    for key in also:
        statuses[key] = statuses.get(key, 0) + 1
    outcome = Outcome(
        fault=fault,
        sent=summary.sent,
        accepted=len(promised),
        stored=stored,
        lost=len(promised) - stored,
        # A row is stored once by its primary key; counted twice would show in the reports.
        duplicated=total - rows,
        statuses=statuses,
    )
    report = os.environ.get("ADFUNNEL_CHAOS_REPORT")
    if report:
        with open(report, "a") as out:
            out.write(json.dumps(asdict(outcome)) + "\n")
    return outcome


# A Serve replica that dies while it works on a request leaves Ray Serve's proxy to answer
# it, and the proxy answers 500 with this plain-text body (never the gateway's JSON error
# shape): the gateway's own death, seen through the proxy, like a reset connection.
PROXY_500 = "HTTP 500 Internal Server Error"
PROXY_500_CLASS = "500 from Serve's proxy (replica died)"


def assert_kept(outcome: Outcome, *, gateway_died: bool = False) -> None:
    """Every 202's events stored once, and every POST answered with a class the fault table
    counts: 202, or 503 with Retry-After (nothing claimed); only where the fault killed the
    gateway, a transport error (no answer within the client's deadline, a connection reset)
    or the proxy's plain 500 for the request the dead replica held."""
    assert outcome.accepted > 0, outcome
    assert (outcome.lost, outcome.duplicated) == (0, 0), outcome
    allowed = {"202", "503"} | ({"transport error", PROXY_500_CLASS} if gateway_died else set())
    assert set(outcome.statuses) <= allowed, outcome


def actor_call(method: Any) -> Any:
    """Call an actor method and wait for its answer (Ray's stubs type this poorly). An
    actor Ray is still restarting after an earlier kill is asked again until it answers:
    on a busy machine the next round of a test can reach it first."""

    def answer() -> tuple[Any] | None:
        try:
            return (ray.get(method.remote(), timeout=30),)
        except ray.exceptions.ActorUnavailableError:
            return None

    return wait_until(answer, timeout=120, interval=1, what=f"an answer from {method}")[0]


def ready(base_url: str) -> bool:
    try:
        return httpx.get(f"{base_url}/health/ready", timeout=10).status_code == 200
    except httpx.HTTPError:
        return False


def test_writers_killed_with_sigkill_mid_batch_three_times(system: Deployed) -> None:
    stream = system.settings["nats_stream"]
    load = Load(system.base_url, seed=101)
    for round_ in range(3):
        load.run_for(4)
        writer = ray.get_actor(actor_name(stream, "writer", round_ % 2), namespace=ACTOR_NAMESPACE)
        os.kill(actor_call(writer.pid), signal.SIGKILL)
    load.run_for(4)
    summary = load.stop()
    # Ray restarted each writer (max_restarts) without anyone asking.
    wait_until(lambda: ready(system.base_url), timeout=120, what="ready after the kills")
    assert_kept(
        settle(
            "writer killed (SIGKILL) 3 times",
            system.settings["database_url"],
            system.base_url,
            summary,
        )
    )


def test_a_consumer_killed_with_sigkill_comes_back_by_itself(system: Deployed) -> None:
    stream = system.settings["nats_stream"]
    consumer = ray.get_actor(actor_name(stream, "consumer-facebook", 0), namespace=ACTOR_NAMESPACE)
    load = Load(system.base_url, seed=102)
    load.run_for(5)
    old_pid = actor_call(consumer.status)["pid"]
    os.kill(old_pid, signal.SIGKILL)
    load.run_for(8)
    summary = load.stop()

    def restarted() -> bool:
        try:
            state = actor_call(consumer.status)
        except Exception:  # still restarting
            return False
        return bool(state["pid"] != old_pid and state["loops"] > 0)

    wait_until(restarted, timeout=120, what="the consumer restarted with its fetch loops")
    wait_until(lambda: ready(system.base_url), timeout=120, what="ready after the kill")
    assert_kept(
        settle(
            "consumer killed (SIGKILL)", system.settings["database_url"], system.base_url, summary
        )
    )


@pytest.fixture
def own_servers(tmp_path: Path) -> Iterator[dict[str, embedded.EmbeddedServer]]:
    """NATS and PostgreSQL this test may stop and start again on the same port and data."""
    servers = {
        "nats": embedded.start_nats(tmp_path / "own"),
        "postgres": embedded.start_postgres(tmp_path / "own"),
    }
    yield servers
    for server in servers.values():
        server.stop()


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/", 1)[0])


def _own_system(
    ray_cluster: str, servers: dict[str, embedded.EmbeddedServer], tmp_path: Path
) -> Deployed:
    run(storage.wait_for_database(servers["postgres"].url))
    settings = {
        "nats_url": servers["nats"].url,
        "database_url": servers["postgres"].url,
        "data_dir": str(tmp_path / "data"),
        **unique_names(),
    }
    return deploy(ray_cluster, settings)


def test_nats_stopped_for_seconds_then_started_again(
    ray_cluster: str, own_servers: dict[str, embedded.EmbeddedServer], tmp_path: Path
) -> None:
    system = _own_system(ray_cluster, own_servers, tmp_path)
    try:
        load = Load(system.base_url, seed=103)
        load.run_for(5)
        nats = own_servers["nats"]
        nats.stop()
        load.run_for(2)
        with httpx.Client(base_url=system.base_url, timeout=30) as client:
            refused = client.post("/webhook", json=Generator(seed=9).batch(10))
            readiness = client.get("/health/ready")
        load.run_for(3)
        own_servers["nats"] = embedded.start_nats(tmp_path / "own", port=_port(nats.url))
        wait_until(lambda: ready(system.base_url), timeout=120, what="ready after NATS came back")
        load.run_for(5)
        summary = load.stop()
        outcome = settle(
            "NATS stopped ~5 s", system.settings["database_url"], system.base_url, summary
        )
    finally:
        undeploy()
    assert refused.status_code == 503 and refused.headers["retry-after"]
    assert readiness.status_code == 503 and readiness.json()["components"]["nats"]["ok"] is False
    # While NATS was away some POSTs got 503 and claimed nothing; the rest were kept.
    assert outcome.statuses.get("503", 0) > 0, outcome
    assert_kept(outcome)


def test_postgresql_stopped_for_30_seconds_then_started_again(
    ray_cluster: str, own_servers: dict[str, embedded.EmbeddedServer], tmp_path: Path
) -> None:
    system = _own_system(ray_cluster, own_servers, tmp_path)
    try:
        load = Load(system.base_url, seed=104)
        load.run_for(5)
        postgres = own_servers["postgres"]
        postgres.stop()
        load.run_for(5)
        with httpx.Client(base_url=system.base_url, timeout=30) as client:
            readiness = client.get("/health/ready")
        load.run_for(25)
        own_servers["postgres"] = embedded.start_postgres(
            tmp_path / "own", port=_port(postgres.url)
        )
        wait_until(lambda: ready(system.base_url), timeout=180, what="ready after PostgreSQL")
        load.run_for(5)
        summary = load.stop()
        outcome = settle(
            "PostgreSQL stopped 30 s", system.settings["database_url"], system.base_url, summary
        )
    finally:
        undeploy()
    assert readiness.status_code == 503, readiness.text
    assert readiness.json()["components"]["postgres"]["ok"] is False
    # The gateway kept accepting while JetStream had room: the outage cost no POST.
    assert set(outcome.statuses) == {"202"}, outcome
    assert_kept(outcome)


def _set_read_only(database_url: str, on: bool) -> None:
    """A managed PostgreSQL's failover, as the writers see it: their sessions are cut and
    new ones are read-only (then, after the spell, writable again)."""
    name = database_url.rsplit("/", 1)[1]
    value = "on" if on else "off"

    async def flip() -> None:
        conn = await asyncpg.connect(
            database_url, server_settings={"default_transaction_read_only": "off"}
        )
        try:
            await conn.execute(
                f'ALTER DATABASE "{name}" SET default_transaction_read_only = {value}'
            )
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        finally:
            await conn.close()

    run(flip())


def test_postgresql_read_only_for_longer_than_max_deliver_misfiles_nothing(
    ray_cluster: str, system_settings: dict[str, Any]
) -> None:
    """SPEC §5: a failover is an outage, never bad data. Read-only for far longer than the
    three deliveries' backoff that make a message poison: no valid event may reach the
    rejected store, and every 202 is stored once."""
    settings = {**system_settings, "max_deliver": 3}
    database = settings["database_url"]
    system = deploy(ray_cluster, settings)
    try:
        load = Load(system.base_url, seed=105)
        load.run_for(5)
        _set_read_only(database, True)
        load.run_for(READ_ONLY_S)
        _set_read_only(database, False)
        wait_until(lambda: ready(system.base_url), timeout=180, what="ready after read-only")
        load.run_for(5)
        summary = load.stop()
        outcome = settle(
            f"PostgreSQL read-only {READ_ONLY_S:g} s", database, system.base_url, summary
        )
    finally:
        undeploy()
    assert_kept(outcome)
    # Every POST was answered, and as accepted: the stream had room the whole time.
    assert set(outcome.statuses) == {"202"}, outcome
    rejected = db_fetch(database, "SELECT event_id, reason FROM rejected_events")
    accepted = summary.accepted_ids()
    misfiled = [row for row in rejected if row["event_id"] in accepted]
    assert misfiled == [], misfiled[:3]
    # What is there is what the publisher sent invalid, each with its field named.
    assert all(not row["reason"].startswith(("undeliverable", "storage:")) for row in rejected)


def test_a_full_stream_answers_503_until_the_writers_drain_it(
    ray_cluster: str, system_settings: dict[str, Any]
) -> None:
    """SPEC §4: when JetStream cannot take a request's events the gateway answers 503 with
    Retry-After and claims nothing; once the writers make room, 202 again. The store is
    small (16 MiB) and PostgreSQL read-only meanwhile, so that it fills for certain."""
    settings = {**system_settings, "stream_max_bytes": 16 * 1024 * 1024}
    database = settings["database_url"]
    system = deploy(ray_cluster, settings)
    try:
        load = Load(system.base_url, seed=106)
        load.run_for(3)
        _set_read_only(database, True)
        load.wait_for(lambda p: p.failed_posts > 0, "a POST refused: the store full", 180)
        full = load.progress
        assert full is not None
        load.run_for(3)
        _set_read_only(database, False)
        load.wait_for(
            lambda p: p.accepted > full.accepted, "a POST accepted again after the drain", 180
        )
        load.run_for(5)
        summary = load.stop()
        outcome = settle(
            "JetStream store full (16 MiB, PostgreSQL read-only until it is)",
            database,
            system.base_url,
            summary,
        )
    finally:
        undeploy()
    assert_kept(outcome)
    assert outcome.statuses.get("503", 0) > 0, outcome
    refused = [post for post in summary.posts if post.status == 503]
    accepted_after = [post for post in summary.posts if post.ok and post.index > refused[0].index]
    assert accepted_after, "no POST was accepted after the first refusal"


def _gateway_replica_pids() -> list[int]:
    """Processes of the gateway's Serve replicas (Ray titles them by deployment)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            title = (entry / "cmdline").read_bytes().split(b"\0", 1)[0]
            if title.startswith(b"ray::ServeReplica:ingest:Gateway"):
                pids.append(int(entry.name))
    return pids


def test_a_gateway_replica_killed_with_sigkill_mid_post(system: Deployed) -> None:
    """The gateway's own death: a POST it was working on may get no answer (a transport
    error), never a 202 for events it did not publish; Serve starts a new replica and every
    202 before and after is kept."""
    load = Load(system.base_url, seed=107)
    load.run_for(4)
    (victim,) = _gateway_replica_pids()
    # A 50,000-event POST keeps the replica busy for a second or more: killed inside it.
    big = orjson.dumps(Generator(seed=108).batch(50_000))
    answer: list[httpx.Response | Exception] = []

    def post_big() -> None:
        try:
            answer.append(httpx.post(f"{system.base_url}/webhook", content=big, timeout=120))
        except httpx.HTTPError as error:
            answer.append(error)

    poster = threading.Thread(target=post_big)
    poster.start()
    time.sleep(0.5)
    os.kill(victim, signal.SIGKILL)
    poster.join(150)
    wait_until(
        lambda: [pid for pid in _gateway_replica_pids() if pid != victim],
        timeout=120,
        what="a new gateway replica",
    )
    wait_until(lambda: ready(system.base_url), timeout=120, what="ready after the kill")
    answered = load.progress.posts_answered if load.progress else 0
    load.wait_for(lambda p: p.posts_answered > answered + 2, "POSTs answered again", 120)
    summary = load.stop()
    # The POST the replica died in: no answer, or the proxy's plain 500; never a 202.
    (died_in,) = answer
    if isinstance(died_in, httpx.Response):
        assert (died_in.status_code, died_in.text) == (500, "Internal Server Error"), died_in
    assert_kept(
        settle(
            "gateway replica killed (SIGKILL) mid-POST",
            system.settings["database_url"],
            system.base_url,
            summary,
            also=(PROXY_500_CLASS if isinstance(died_in, httpx.Response) else "transport error",),
        ),
        gateway_died=True,
    )


def _start_system(config: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "adfunnel"), "run", str(config)],
        cwd=ROOT,
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def test_sigterm_to_the_whole_system_mid_load_then_a_restart_on_the_same_data(
    servers: Any, database: str, tmp_path: Path
) -> None:
    port = embedded.free_port()
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["http_options"]["port"] = port
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    env = {
        **os.environ,
        # Its own Ray, not the test session's: SIGTERM must end everything it started.
        "RAY_ADDRESS": "local",
        "NATS_URL": servers.nats_url,
        "DATABASE_URL": database,
        "DATA_DIR": str(tmp_path / "data"),
        **{key.upper(): value for key, value in unique_names().items()},
    }
    base_url = f"http://127.0.0.1:{port}"
    log = tmp_path / "system.log"
    process = _start_system(config_path, env, log)
    try:
        wait_until(lambda: ready(base_url), timeout=240, what=f"the system up ({log})")
        load = Load(base_url, seed=105)
        load.run_for(8)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=180) == 0, log.read_text()[-3000:]
        summary = load.stop()
        process = _start_system(config_path, env, log)
        wait_until(lambda: ready(base_url), timeout=240, what="the system up again")
        outcome = settle("SIGTERM to the whole system, restart", database, base_url, summary)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=180)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
    # The gateway itself went away: POSTs sent after it stopped had no one to answer.
    assert_kept(outcome, gateway_died=True)
