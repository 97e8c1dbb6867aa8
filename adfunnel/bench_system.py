"""What `adfunnel bench` measures around the pipeline: the system it starts, its memory, and
its backlog. Kept apart from the benchmark's phases so each piece stays small."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

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
    _stop: threading.Event = field(default_factory=threading.Event)

    def sample(self) -> int:
        total = sum(pss_kb(pid) for pid in descendants(os.getpid()))
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
