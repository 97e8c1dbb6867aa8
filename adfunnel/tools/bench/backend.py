"""PostgreSQL's CPU per stored event on one connection: the writers' statements without Ray.

    python -m adfunnel.tools.bench.backend [DATABASE_URL] [--batches 16] [--batch 16000]
        [--returning SHARE] [--hot-users N] [--warmup 4]

Generated events, stamped 3.75 ms apart (a 16,000-event batch covers a minute), go through
`storage.insert_events` on one connection with the writers' session settings, one
transaction per batch of messages of 1,000 events, into a new database on the server (or
on the embedded PostgreSQL in a temporary directory). The backend's CPU time is read from
`/proc` around each batch, so the server must run on this machine, and with it the WAL the
server wrote (its insert position: all of the server's databases); the first `--warmup`
batches are left out. What a change to the writers' SQL costs, apart from the gateway, Ray
and the other writer; the other PostgreSQL processes (WAL writer, checkpointer,
autovacuum) are not in it. Against a server run under `valgrind --tool=callgrind` it makes
the same statements for an instruction count, which does not drift with the machine.
Figures belong in docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

import orjson

from adfunnel import embedded, storage
from adfunnel.schema import event_row
from adfunnel.storage import StagedEvent
from adfunnel.tools.bench.system import cpu_seconds
from adfunnel.tools.generator import DEFAULT_RETURNING_SHARE, Generator, user_mix

_PER_MESSAGE = 1_000
_STEP = timedelta(microseconds=3_750)


class Measured(NamedTuple):
    """What the batches after the warm-up cost, per event, and the events stored in all."""

    cpu_us: float  # the backend's CPU
    wal_bytes: float  # the server's WAL
    stored: int


async def run(
    target: str, *, batches: int, batch: int, warmup: int, returning: float, hot_users: int
) -> Measured:
    """Store the batches in database `target` (migrated here)."""
    moment = datetime(2026, 12, 1, tzinfo=UTC)

    def clock() -> datetime:
        nonlocal moment
        moment += _STEP
        return moment

    generator = Generator(seed=7, clock=clock, returning_share=returning, hot_users=hot_users)
    pool = await storage.create_pool(target, size=1)
    spent, wal, counted = 0.0, 0, 0
    try:
        async with pool.acquire() as conn:
            await storage.migrate(conn)
            pid = int(await conn.fetchval("SELECT pg_backend_pid()"))
            for number in range(batches):
                events = []
                for message in range(0, batch, _PER_MESSAGE):
                    received = moment
                    sequence = number * batch + message + 1
                    for _ in range(min(_PER_MESSAGE, batch - message)):
                        made = generator.event()
                        events.append(
                            StagedEvent(
                                event_row(made),
                                orjson.dumps(made).decode(),
                                "bench",
                                received,
                                sequence,
                            )
                        )
                wal_before = await storage.wal_position(conn)
                before = cpu_seconds(pid)
                async with conn.transaction():
                    await storage.insert_events(conn, events)
                if number >= warmup:
                    spent += cpu_seconds(pid) - before
                    wal += await storage.wal_position(conn) - wal_before
                    counted += len(events)
            stored = int(await conn.fetchval("SELECT count(*) FROM events"))
    finally:
        await pool.close()
    return Measured(spent / max(counted, 1) * 1e6, wal / max(counted, 1), stored)


async def measure(dsn: str, options: argparse.Namespace, mix: tuple[float, int]) -> Measured:
    """`run` on a database of its own on the server at `dsn`, dropped after."""
    name = f"bench_backend_{uuid.uuid4().hex[:12]}"
    target = await storage.prepared_database(dsn, name)
    try:
        return await run(
            target,
            batches=options.batches,
            batch=options.batch,
            warmup=options.warmup,
            returning=mix[0],
            hot_users=mix[1],
        )
    finally:
        # A server given on the command line is the user's: leave it as it was.
        await storage.drop_database(dsn, name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("database_url", nargs="?", help="a server on this machine")
    parser.add_argument("--batches", type=int, default=16)
    parser.add_argument("--batch", type=int, default=16_000, help="events per transaction")
    parser.add_argument("--warmup", type=int, default=4, help="batches left out")
    parser.add_argument("--returning", type=float, default=DEFAULT_RETURNING_SHARE)
    parser.add_argument("--hot-users", type=int, default=0)
    args = parser.parse_args()
    try:
        returning, hot_users, _ = user_mix(args.returning, args.hot_users)
    except ValueError as error:
        parser.error(str(error))
    if args.batches <= args.warmup:
        parser.error("--batches must be more than --warmup")
    with tempfile.TemporaryDirectory() as folder:
        server = None
        dsn = args.database_url
        if dsn is None:
            server = embedded.start_postgres(Path(folder) / "bench")
            dsn = server.url
        try:
            measured = asyncio.run(measure(dsn, args, (returning, hot_users)))
        finally:
            if server is not None:
                server.stop()
    counted = (args.batches - args.warmup) * args.batch
    print(
        f"PostgreSQL backend: {measured.cpu_us:.2f} us of CPU per event over {counted:,} events"
        f" (returning {returning}, hot users {hot_users}, {args.batch:,} per batch);"
        f" {measured.wal_bytes:,.1f} bytes of WAL per event"
    )


if __name__ == "__main__":
    main()
