"""The `adfunnel` command: operator tools beside `serve run config.yaml`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import asyncpg

from adfunnel import bench_e2e, bench_reports, embedded, publish, storage
from adfunnel.seed import SeedPlan, seed
from adfunnel.settings import Settings


async def _migrate(database_url: str) -> list[int]:
    await storage.wait_for_database(database_url)
    conn = await asyncpg.connect(database_url)
    try:
        return await storage.migrate(conn)
    finally:
        await conn.close()


def cmd_migrate(args: argparse.Namespace) -> int:
    """Apply pending migrations to DATABASE_URL."""
    settings = Settings()
    if not settings.database_url:
        print("DATABASE_URL is not set", file=sys.stderr)
        return 2
    applied = asyncio.run(_migrate(settings.database_url))
    print(f"applied migrations: {applied or 'none (up to date)'}")
    return 0


@contextlib.contextmanager
def _database(explicit: str | None) -> Iterator[str]:
    """The database to work on: explicit, else DATABASE_URL, else the embedded one on
    DATA_DIR (started here, so the system itself must not be running)."""
    settings = Settings()
    url = explicit or settings.database_url
    if url is not None:
        yield url
        return
    server = embedded.start_postgres(settings.data_dir.resolve())
    try:
        yield asyncio.run(storage.prepared_database(server.url, embedded.DATABASE))
    finally:
        server.stop()


def cmd_seed(args: argparse.Namespace) -> int:
    """Load N realistic events straight into PostgreSQL (through the writers' storage path)."""
    try:
        plan = SeedPlan(
            events=args.events,
            days=args.days,
            seed=args.seed,
            batch=args.batch,
            returning_share=args.returning,
            hot_users=args.hot_users,
            hot_share=args.hot_share,
        )
    except ValueError as error:
        print(f"adfunnel seed: {error}", file=sys.stderr)
        return 2
    with _database(args.database_url) as database_url:
        result = asyncio.run(seed(database_url, plan))
    print(
        f"seeded {result.sent:,} events ({result.stored:,} new rows) over {plan.days:g} days"
        f" in {result.seconds:.1f} s: {result.events_per_s:,.0f} events/s"
    )
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Benchmarks: the pipeline end to end (default), or `reports`: report latency."""
    if args.what == "reports":
        with _database(args.database_url) as database_url:
            bench_reports.main(
                database_url, samples=args.samples, seed=args.seed, json_path=args.json
            )
        return 0
    # Only what was asked for: the publisher's defaults stay its own.
    mix = {"hot_users": args.hot_users, "returning_share": args.returning}
    return bench_e2e.main(
        quick=args.quick,
        url=args.url,
        database_url=args.database_url,
        nats_url=args.nats_url,
        json_path=args.json,
        soak_s=args.soak,
        publisher={name: value for name, value in mix.items() if value is not None},
    )


def cmd_publish(args: argparse.Namespace) -> int:
    """Simulate the ad platforms' publisher: POST generated batches to EVENT_ENDPOINT."""
    return publish.command(args)


def cmd_servers(args: argparse.Namespace) -> int:
    """Run the embedded NATS and PostgreSQL in the foreground until Ctrl-C."""
    settings = Settings()
    data_dir = settings.data_dir.resolve()
    nats = embedded.start_nats(data_dir)
    postgres = embedded.start_postgres(data_dir)
    print(f"NATS_URL={nats.url}\nDATABASE_URL={postgres.url}", flush=True)
    embedded.run_until_signalled(lambda: nats.alive() and postgres.alive())
    postgres.stop()
    nats.stop()
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """`serve run CONFIG` that also drains on SIGTERM (process managers send SIGTERM)."""
    serve = Path(sys.executable).parent / "serve"
    # `serve run` drains only on Ctrl-C; Ray's own SIGTERM handler tears the node down at
    # once. Run it as a child and turn SIGTERM into the SIGINT it handles gracefully.
    child = subprocess.Popen(
        [str(serve), "run", args.config],
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )

    def forward(signum: int, frame: object) -> None:
        child.send_signal(signal.SIGINT)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    return child.wait()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `adfunnel` console script."""
    parser = argparse.ArgumentParser(prog="adfunnel", description=__doc__)
    parser.add_argument("--version", action="version", version=version("adfunnel"))
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("migrate", help=cmd_migrate.__doc__).set_defaults(run=cmd_migrate)
    commands.add_parser("servers", help=cmd_servers.__doc__).set_defaults(run=cmd_servers)
    seeding = commands.add_parser("seed", help=cmd_seed.__doc__)
    seeding.add_argument("--events", type=int, required=True, help="how many events to send")
    seeding.add_argument("--days", type=float, default=7.0, help="time window, ending now")
    seeding.add_argument("--seed", type=int, default=1, help="random seed (reproducible data)")
    seeding.add_argument("--batch", type=int, default=20_000, help="events per transaction")
    seeding.add_argument("--database-url", help="default: DATABASE_URL, else the embedded one")
    publish.add_user_mix_arguments(seeding)
    seeding.set_defaults(run=cmd_seed)
    bench = commands.add_parser("bench", help=cmd_bench.__doc__)
    bench.add_argument("what", nargs="?", choices=["e2e", "reports"], default="e2e")
    bench.add_argument("--quick", action="store_true", help="e2e: a run of under 5 minutes")
    bench.add_argument(
        "--url", help="e2e: a running system's base URL (default: start one, embedded servers)"
    )
    bench.add_argument("--nats-url", help="e2e: its NATS (for the floors and the backlog)")
    bench.add_argument(
        "--soak",
        type=int,
        metavar="SECONDS",
        help="e2e: after the floors, only a soak of the real publisher's profile this long",
    )
    bench.add_argument(
        "--hot-users", type=int, metavar="N", help="e2e: users the publisher keeps coming back to"
    )
    bench.add_argument(
        "--returning", type=float, metavar="SHARE", help="e2e: share of events by a recent user"
    )
    bench.add_argument("--samples", type=int, default=100, help="reports: filter combinations")
    bench.add_argument("--seed", type=int, default=1)
    bench.add_argument("--json", type=Path, help="also write the figures here")
    bench.add_argument(
        "--database-url",
        help="reports: default DATABASE_URL, else the embedded one; e2e: the target's"
        " database (lost/duplicated accounting)",
    )
    bench.set_defaults(run=cmd_bench)
    publishing = commands.add_parser("publish", help=cmd_publish.__doc__)
    publish.add_arguments(publishing)
    publishing.set_defaults(run=cmd_publish)
    run = commands.add_parser("run", help=cmd_run.__doc__)
    run.add_argument("config", nargs="?", default="config.yaml")
    run.set_defaults(run=cmd_run)
    args = parser.parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
