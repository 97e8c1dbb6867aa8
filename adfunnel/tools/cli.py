"""The tools' subcommands of `adfunnel`: `publish`, `seed` and `bench`."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from adfunnel import embedded
from adfunnel.tools import publish
from adfunnel.tools.bench import e2e as bench_e2e
from adfunnel.tools.bench import reports as bench_reports
from adfunnel.tools.seed import SeedPlan, seed


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
    with embedded.database(args.database_url) as database_url:
        result = asyncio.run(seed(database_url, plan))
    print(
        f"seeded {result.sent:,} events ({result.stored:,} new rows) over {plan.days:g} days"
        f" in {result.seconds:.1f} s: {result.events_per_s:,.0f} events/s"
    )
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Benchmarks: the pipeline end to end (default), or `reports`: report latency."""
    if args.what == "reports":
        with embedded.database(args.database_url) as database_url:
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


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `seed`, `bench` and `publish` to the `adfunnel` command's subparsers."""
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
