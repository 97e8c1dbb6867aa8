"""Time one burst against a running system: POST → 202 → last row committed → visible.

    python -m adfunnel.tools.bench.first_post [--url http://127.0.0.1:8000] [--events 50000]
        [--posts 1]

The database is found in `/health/ready` (the embedded PostgreSQL's URL) or DATABASE_URL.
"Committed" is the newest `stored_at` of the posted events, so the figure is
first POST → last row committed, measured by PostgreSQL's clock on this same machine.
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import UTC, datetime

import asyncpg
import httpx
import orjson

from adfunnel import embedded, storage
from adfunnel.testing import run, wait_until
from adfunnel.tools.generator import Generator


def database_url(base_url: str) -> str:
    found = os.environ.get("DATABASE_URL") or embedded.running_database(base_url)
    if found is None:
        raise SystemExit(f"no database: set DATABASE_URL (the system at {base_url} has none)")
    return found


async def _last_stored(dsn: str, ids: list[str]) -> datetime:
    conn = await asyncpg.connect(dsn)
    try:
        last: datetime = max(row["stored_at"] for row in await storage.stored_traces(conn, ids))
        return last
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--posts", type=int, default=1)
    args = parser.parse_args()
    generator = Generator(seed=time.time_ns() % 2**32)
    batches = [generator.batch(args.events) for _ in range(args.posts)]
    bodies = [orjson.dumps(batch) for batch in batches]
    ids = [event["eventId"] for batch in batches for event in batch]
    with httpx.Client(base_url=args.url, timeout=300) as client:
        dsn = database_url(args.url)
        before = client.get("/reports/events").json()["total"]
        started = datetime.now(UTC)
        t0 = time.perf_counter()
        acks = []
        for body in bodies:
            t = time.perf_counter()
            response = client.post(
                "/webhook", content=body, headers={"content-type": "application/json"}
            )
            response.raise_for_status()
            acks.append(time.perf_counter() - t)
        total = before + len(ids)
        wait_until(
            lambda: client.get("/reports/events").json()["total"] >= total,
            timeout=600,
            interval=0.05,
            what="all events visible",
        )
        visible = time.perf_counter() - t0
    committed = (run(_last_stored(dsn, ids)) - started).total_seconds()
    mb = sum(len(b) for b in bodies) / 1e6
    print(
        f"events={len(ids)} posts={args.posts} body_MB={mb:.1f} "
        f"ack_s={[round(a, 2) for a in acks]} last_commit_s={committed:.2f} "
        f"visible_s={visible:.2f} events_per_s_to_last_commit={len(ids) / committed:,.0f}"
    )


if __name__ == "__main__":
    main()
