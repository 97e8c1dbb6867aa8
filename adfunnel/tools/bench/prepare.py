"""The gateway's CPU per event for a body, without Ray, HTTP or servers.

    python -m adfunnel.tools.bench.prepare [--events 50000] [--bodies 6] [--threads 1]

A publisher's body (1 % duplicates, 5 % out of order, 0.5 % corrupted) goes through
`ingest.prepare`, all the gateway does with it before publishing: parse, validate, build the
bus messages. `--bodies` copies are prepared by `--threads` threads at once, after one
warm-up body per thread, and the process's CPU time is read around them. More than one
thread is what the gateway did before it prepared one body at a time.
"""

from __future__ import annotations

import argparse
import os
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import orjson

from adfunnel.ingest import prepare
from adfunnel.settings import Settings
from adfunnel.tools.bench.system import cpu_seconds
from adfunnel.tools.generator import DEFAULT_RETURNING_SHARE, Generator

_AT = datetime(2026, 12, 1, 10, 0, 0, 123_000, tzinfo=UTC)


def body(events: int, *, returning: float = DEFAULT_RETURNING_SHARE, hot_users: int = 0) -> bytes:
    """One POST body of `events` events, stamped at a fixed moment, of the publisher's users
    unless told otherwise."""
    generator = Generator(seed=1, clock=lambda: _AT, returning_share=returning, hot_users=hot_users)
    batch = generator.batch(
        events, duplicate_share=0.01, out_of_order_share=0.05, invalid_share=0.005
    )
    return orjson.dumps(batch)


def measure(payload: bytes, *, bodies: int, threads: int) -> tuple[float, int]:
    """µs of CPU of this process per event prepared, and the events prepared."""
    settings = Settings()

    def one(_: int) -> int:
        prepared = prepare(settings, payload, correlation_id="bench", received_at=_AT)
        return len(prepared.items)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, range(threads)))  # each thread's compressor and caches
        before = cpu_seconds(os.getpid())
        events = sum(pool.map(one, range(bodies)))
        spent = cpu_seconds(os.getpid()) - before
    return spent / max(events, 1) * 1e6, events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=50_000, help="events per body")
    parser.add_argument("--bodies", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1, help="bodies prepared at once")
    args = parser.parse_args()
    if min(args.events, args.bodies, args.threads) < 1:
        parser.error("--events, --bodies and --threads must be at least 1")
    payload = body(args.events)
    per_event, events = measure(payload, bodies=args.bodies, threads=args.threads)
    print(
        f"gateway preparation: {per_event:.2f} us of CPU per event over {events:,} events"
        f" ({args.threads} at once, {args.events:,} per body)"
    )


if __name__ == "__main__":
    main()
