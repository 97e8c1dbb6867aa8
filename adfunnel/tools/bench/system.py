"""What `adfunnel bench` measures around the pipeline: the system it starts, its memory, its
backlog and its CPU ledger. Kept apart from the benchmark's phases so each piece stays small."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from collections.abc import Set as AbstractSet
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, NamedTuple

import nats
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from adfunnel import embedded, storage
from adfunnel.bus import LANES


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` (Linux /proc)."""
    pending, seen = _children(pid), []
    while pending:
        child = pending.pop()
        seen.append(child)
        pending += _children(child)
    return seen


def pss_kb(pid: int) -> int:
    """Proportional set size: shared pages (PostgreSQL's buffers, Ray's object store) are
    split between the processes that map them, so a sum over processes is not inflated."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


@dataclass
class MemorySampler:
    """Samples the summed PSS of every process below this one, in a thread."""

    interval_s: float = 1.0
    peak_kb: int = 0
    # The benchmark's helpers (its batch generator): not the system's memory.
    exclude: set[int] = field(default_factory=set)
    _stop: threading.Event = field(default_factory=threading.Event)

    def sample(self) -> int:
        total = sum(pss_kb(pid) for pid in descendants(os.getpid()) if pid not in self.exclude)
        self.peak_kb = max(self.peak_kb, total)
        return total

    @contextmanager
    def running(self) -> Iterator[MemorySampler]:
        thread = threading.Thread(target=self._loop, name="pss-sampler", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()


@dataclass
class Servers:
    """NATS and PostgreSQL for a benchmark run: external, or embedded ones started here."""

    nats_url: str
    database_url: str


@contextmanager
def servers(data_dir: Path, nats_url: str | None, database_url: str | None) -> Iterator[Servers]:
    """The servers to use, started under `data_dir` when not given."""
    started: list[embedded.EmbeddedServer] = []
    try:
        if nats_url is None:
            started.append(embedded.start_nats(data_dir))
            nats_url = started[-1].url
        if database_url is None:
            started.append(embedded.start_postgres(data_dir))
            server_url = started[-1].url
            database_url = asyncio.run(storage.prepared_database(server_url, embedded.DATABASE))
        yield Servers(nats_url, database_url)
    finally:
        for server in reversed(started):
            server.stop()


@asynccontextmanager
async def jetstream(nats_url: str | None) -> AsyncIterator[JetStreamContext | None]:
    """One JetStream connection for a phase's samples (None without a NATS URL)."""
    if nats_url is None:
        yield None
        return
    nc = await nats.connect(nats_url, name="adfunnel-bench-backlog")
    try:
        yield nc.jetstream()
    finally:
        await nc.close()


async def pending_messages(js: JetStreamContext, stream: str) -> int:
    """JetStream messages not yet acknowledged (pending plus in flight), over every lane."""
    total = 0
    for lane in LANES:
        try:
            info = await js.consumer_info(stream, f"{stream}-{lane}")
        except NotFoundError:
            continue
        total += int(info.num_pending or 0) + int(info.num_ack_pending or 0)
    return total


async def stream_bytes(js: JetStreamContext, stream: str) -> int | None:
    """Bytes the stream holds on disk now (its backlog: acked messages leave a work queue)."""
    try:
        info = await js.stream_info(stream)
    except NotFoundError:
        return None
    return int(info.state.bytes)


# -- CPU ledger ------------------------------------------------------------------------------
#
# CPU seconds of every process of the system, read from /proc, summed per component over a
# phase. Processes come and go during a phase (Ray starts workers, PostgreSQL backends
# end), so a phase is sampled about every second, not only at its ends: a process first seen
# after the phase's first sample counts from 0, one that is gone counts up to its last sample,
# so a death loses at most about a second of its CPU.
#
# That second, and processes that lived between two samples (a connection's backend), are
# found again in the parent that reaped them: its cutime + cstime grew by the child's whole
# CPU. A tracked parent's growth there is booked to the parent's component, minus what was
# already booked or came before the phase for each tracked child it reaped (that child's CPU
# and reaped CPU at its last sample). Children reaped by a process outside the system (init,
# after their parent died) keep the at-most-a-second loss.

COMPONENTS: Final = (
    "gateway",
    "reporter",
    "supervisor",
    "proxy",
    "serve_controller",
    "consumers",
    "writers",
    "postgres",
    "nats",
    "ray_own",
    "other",
)
# The components a title alone names; "other" needs ancestry to be ours.
NAMED_COMPONENTS: Final = frozenset(COMPONENTS) - {"other"}


class ProcSample(NamedTuple):
    """One process at one moment."""

    title: str
    cpu_s: float  # utime + stime since it started
    reaped_s: float = 0.0  # cutime + cstime: the whole CPU of the children it has reaped
    ppid: int = 0


# {pid: (title, CPU seconds)}, or a full `ProcSample` (reaped children and parent too).
Snapshot = Mapping[int, tuple[str, float] | ProcSample]

_REPLICAS: Final = {"Gateway": "gateway", "Reporter": "reporter", "Supervisor": "supervisor"}
_RAY_ACTORS: Final = (
    ("ray::ProxyActor", "proxy"),
    ("ray::ServeController", "serve_controller"),
    ("ray::Consumer", "consumers"),
    ("ray::Writer", "writers"),
)
_RAY_PROGRAMS: Final = frozenset({"gcs_server", "raylet", "plasma_store"})
_GUARD: Final = "adfunnel.embedded guard"
_CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")


def component(title: str) -> str:
    """The component a process belongs to, from its title (`/proc/<pid>/cmdline`)."""
    if _GUARD in title and " -- " in title:
        # The embedded servers' guard: counted with the server it watches.
        return component(title.split(" -- ", 1)[1])
    first = title.split(maxsplit=1)[0] if title.strip() else ""
    program = first.rsplit("/", 1)[-1]
    # Backends and helpers retitle themselves `postgres: 15/main: walwriter`.
    if program in ("postgres", "postgres:"):
        return "postgres"
    if program == "nats-server":
        return "nats"
    if first.startswith("ray::ServeReplica:"):
        # `ray::ServeReplica:<app>:<Deployment>`, maybe with `.<method>` while it runs one.
        deployment = first.rsplit(":", 1)[-1].split(".", 1)[0]
        return _REPLICAS.get(deployment, "other")
    for prefix, name in _RAY_ACTORS:
        if first.startswith(prefix):
            return name
    # Idle workers (`ray::IDLE`), the GCS, raylet, dashboard and agents, log monitor, and
    # a worker that has not set its title yet (`…/ray/_private/workers/default_worker.py`).
    if first.startswith("ray::") or program in _RAY_PROGRAMS or "/ray/" in title:
        return "ray_own"
    return "other"


@dataclass(slots=True)
class _Seen:
    """One process over the window (one pid's life: a reused pid starts another)."""

    title: str
    ppid: int
    base: float  # its CPU and reaped CPU when the window began (0 for one born during it)
    base_reaped: float
    latest: float
    latest_reaped: float
    owed: float = 0.0  # what its tracked dead children brought to its reaped CPU, booked

    def booked(self) -> float:
        reaped = max(0.0, self.latest_reaped - self.base_reaped - self.owed)
        return self.latest - self.base + reaped


class Ledger:
    """CPU seconds each component used over a window, from successive snapshots."""

    def __init__(self) -> None:
        self._open: dict[int, _Seen] = {}
        self._closed: dict[str, float] = dict.fromkeys(COMPONENTS, 0.0)
        self._samples = 0

    def add(self, snapshot: Snapshot) -> None:
        """One more sample: processes new since the first sample count from 0."""
        first = self._samples == 0
        samples = {pid: ProcSample(*value) for pid, value in snapshot.items()}
        for pid in self._open.keys() - samples.keys():
            self._close(pid, samples)
        for pid, now in samples.items():
            seen = self._open.get(pid)
            if seen is not None and now.cpu_s >= seen.latest:
                # The latest title wins: a `ray::IDLE` worker becomes `ray::Consumer`.
                seen.title, seen.ppid = now.title, now.ppid
                seen.latest, seen.latest_reaped = now.cpu_s, now.reaped_s
                continue
            if seen is not None:  # CPU went down: the pid was reused by a new process
                self._close(pid, samples)
            base, base_reaped = (now.cpu_s, now.reaped_s) if first else (0.0, 0.0)
            self._open[pid] = _Seen(now.title, now.ppid, base, base_reaped, now.cpu_s, now.reaped_s)
        self._samples += 1

    def _close(self, pid: int, now: Mapping[int, ProcSample]) -> None:
        """`pid` is gone (reaped) by the sample `now`."""
        seen = self._open.pop(pid)
        self._closed[component(seen.title)] += seen.booked()
        parent = self._open.get(seen.ppid)
        if parent is not None and seen.ppid in now:
            # Its parent, alive now, reaped it: the parent's reaped CPU holds all of it, what
            # we booked, what came before the window and the unseen tail; only the tail is
            # still to book. (A parent gone too read its reaped CPU before this reaping.)
            parent.owed += seen.latest + seen.latest_reaped

    def seconds(self) -> dict[str, float]:
        """{component: CPU seconds} so far, every component present."""
        totals = dict(self._closed)
        for seen in self._open.values():
            totals[component(seen.title)] += seen.booked()
        return totals


def ledger(*snapshots: Snapshot) -> dict[str, float]:
    """{component: CPU seconds} used between the first and the last snapshot."""
    book = Ledger()
    for snapshot in snapshots:
        book.add(snapshot)
    return book.seconds()


def read_proc(pid: int) -> ProcSample | None:
    """Title, CPU seconds, reaped children's CPU seconds and parent of `pid`; None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    # `pid (comm) state ppid …`: comm may hold spaces and parentheses, so split at the last ')'.
    head, _, tail = stat.rpartition(")")
    fields = tail.split()
    # Ray sets the process title in cmdline; kernel threads have none, comm names them.
    title = raw.replace(b"\0", b" ").decode(errors="replace").strip()
    title = title or head.partition("(")[2]
    # Fields 14-17 of proc(5): utime, stime, cutime, cstime, in clock ticks.
    cpu, reaped = int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])
    return ProcSample(title, cpu / _CLOCK_TICKS, reaped / _CLOCK_TICKS, int(fields[1]))


def cpu_seconds(pid: int) -> float:
    """The CPU seconds `pid` has used; RuntimeError when it is not a process of this machine."""
    sample = read_proc(pid)
    if sample is None:
        raise RuntimeError(f"no process {pid} on this machine: what is measured must run here")
    return sample.cpu_s


def all_processes() -> dict[int, ProcSample]:
    """Every process of the machine that could be read."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (sample := read_proc(int(entry.name))) is not None:
            found[int(entry.name)] = sample
    return found


def split_scope(
    procs: Mapping[int, ProcSample],
    root: int,
    exclude: AbstractSet[int],
    external: AbstractSet[str],
) -> tuple[dict[int, ProcSample], dict[int, ProcSample]]:
    """(system, outside): the system is every descendant of `root` plus, anywhere on the
    machine, the processes of the `external` components (servers we did not start).

    Ancestry keeps other sessions' PostgreSQL, NATS and Ray (a shared machine runs them)
    out of the components we started; `root` itself and the `exclude`d processes (the
    benchmark, its batch generator) and their descendants are in neither.
    """
    owner = dict.fromkeys(exclude, "excluded")
    owner[root] = "ours"  # its descendants are; itself is skipped below

    def owned(pid: int) -> str:
        chain = []
        while pid not in owner:
            chain.append(pid)
            sample = procs.get(pid)
            if sample is None or sample.ppid <= 0:  # reached init or the kernel: not ours
                owner[pid] = "foreign"
                break
            pid = sample.ppid
        verdict = owner[pid]
        owner.update(dict.fromkeys(chain, verdict))
        return verdict

    system: dict[int, ProcSample] = {}
    outside: dict[int, ProcSample] = {}
    for pid, sample in procs.items():
        verdict = owned(pid)
        if verdict == "excluded" or pid == root:
            continue
        if verdict == "ours" or component(sample.title) in external:
            system[pid] = sample
        else:
            outside[pid] = sample
    return system, outside


@dataclass
class CpuWindow:
    """One phase's CPU books, fed by `CpuMeter.phase`: the system's and, apart, the rest of
    the machine's (other sessions, the desktop: not counted, shown to judge the noise)."""

    started: float = field(default_factory=time.monotonic)
    ended: float | None = None
    system: Ledger = field(default_factory=Ledger)
    outside: Ledger = field(default_factory=Ledger)
    # (monotonic time, system CPU seconds so far) after each sample: per-minute figures.
    totals: list[tuple[float, float]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, system: Snapshot, outside: Snapshot) -> None:
        """One sample of both books."""
        with self._lock:
            self.system.add(system)
            self.outside.add(outside)
            self.totals.append((time.monotonic(), sum(self.system.seconds().values())))

    @property
    def wall_s(self) -> float:
        return (self.ended or time.monotonic()) - self.started


@dataclass
class CpuMeter:
    """Finds the system's processes and books their CPU per phase.

    `external`: components whose processes count wherever they run on the machine (servers
    given by URL, a system we did not start); everything else counts only below `root`.
    `exclude`: the benchmark's own helper processes (its batch generator); `root` (this
    process: the load generator and the driver) never counts.
    """

    external: frozenset[str] = NAMED_COMPONENTS
    exclude: set[int] = field(default_factory=set)
    root: int = field(default_factory=os.getpid)
    interval_s: float = 1.0

    def snapshot(self) -> tuple[Snapshot, Snapshot]:
        """(system, outside) right now."""
        return split_scope(all_processes(), self.root, set(self.exclude), self.external)

    @contextmanager
    def phase(self) -> Iterator[CpuWindow]:
        """Samples at entry, every `interval_s` in a thread, and at exit."""
        window = CpuWindow()
        window.add(*self.snapshot())
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(self.interval_s):
                window.add(*self.snapshot())

        thread = threading.Thread(target=loop, name="cpu-ledger", daemon=True)
        thread.start()
        try:
            yield window
        finally:
            stop.set()
            thread.join()
            window.add(*self.snapshot())
            window.ended = time.monotonic()
