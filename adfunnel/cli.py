"""The `adfunnel` command: `run` and the operator commands beside `serve run config.yaml`,
plus the subcommands of the tools that drive and measure it (`adfunnel.tools.cli`)."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

import asyncpg

from adfunnel import embedded, replay, reports, storage
from adfunnel.errors import ReplayRefused, RequestError
from adfunnel.settings import Settings
from adfunnel.tools import cli as tools_cli


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


async def _expire(database_url: str, cutoff: datetime, dry_run: bool) -> storage.Expired:
    await storage.wait_for_database(database_url)
    conn = await asyncpg.connect(database_url)
    try:
        return await storage.expire(conn, cutoff, dry_run=dry_run)
    finally:
        await conn.close()


def cmd_retention(args: argparse.Namespace) -> int:
    """Remove raw events and rejected rows past RETENTION_DAYS once (the rollups stay)."""
    settings = Settings()
    cutoff = settings.retention_cutoff(datetime.now(UTC))
    if cutoff is None:
        print("RETENTION_DAYS is not set: every event is kept", file=sys.stderr)
        return 2
    with embedded.database(args.database_url) as database_url:
        expired = asyncio.run(_expire(database_url, cutoff, args.dry_run))
    verb = "would remove" if args.dry_run else "removed"
    print(
        f"{verb} {expired.events:,} events (event time before {expired.before.isoformat()})"
        f" and {expired.rejected:,} rejected rows (received before it)"
    )
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    """Send rejected events through the gateway again, edited; each row records the outcome."""
    settings = Settings()
    endpoint = args.endpoint or os.environ.get("EVENT_ENDPOINT") or replay.DEFAULT_ENDPOINT
    database_url = args.database_url or settings.database_url or embedded.running_database(endpoint)
    if database_url is None:
        print(
            "adfunnel replay: no database: give --database-url or DATABASE_URL (or run the"
            f" system with its embedded PostgreSQL behind {endpoint})",
            file=sys.stderr,
        )
        return 2
    try:
        edits = tuple(
            [replay.parse_set(text) for text in args.set]
            + [replay.parse_unset(text) for text in args.unset]
        )
        selection = storage.ReplaySelection(
            start=reports.parse_bound("from", args.start),
            end=reports.parse_bound("to", args.end),
            source=args.source,
            reason=args.reason,
            again=args.again,
        )
    except (ValueError, RequestError) as error:
        print(f"adfunnel replay: {error}", file=sys.stderr)
        return 2
    options = replay.ReplayOptions(
        database_url=database_url,
        endpoint=endpoint,
        selection=selection,
        edits=edits,
        limit=args.limit,
        batch=args.batch,
        dry_run=args.dry_run,
        secret=settings.webhook_secret.get_secret_value() if settings.webhook_secret else None,
        oldest=settings.retention_cutoff(datetime.now(UTC)),
    )

    def progress(summary: replay.ReplaySummary, total: int) -> None:
        print(f"  {summary.selected:,} of {total:,} rows", file=sys.stderr, flush=True)

    try:
        summary = asyncio.run(replay.replay(options, on_progress=progress))
    except ReplayRefused as error:
        print(f"adfunnel replay: {error}", file=sys.stderr)
        return 1
    print(replay.summary_text(summary, dry_run=args.dry_run))
    return 0 if not summary.errors else 1


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
    retention = commands.add_parser("retention", help=cmd_retention.__doc__)
    retention.add_argument("--dry-run", action="store_true", help="count, remove nothing")
    retention.add_argument("--database-url", help="default: DATABASE_URL, else the embedded one")
    retention.set_defaults(run=cmd_retention)
    replaying = commands.add_parser("replay", help=cmd_replay.__doc__)
    replaying.add_argument("--database-url", help="default: DATABASE_URL, else the system's own")
    replaying.add_argument(
        "--endpoint", help=f"default: $EVENT_ENDPOINT, else {replay.DEFAULT_ENDPOINT}"
    )
    replaying.add_argument("--from", dest="start", metavar="ISO", help="received at or after")
    replaying.add_argument("--to", dest="end", metavar="ISO", help="received before")
    replaying.add_argument("--source", choices=["facebook", "tiktok"])
    replaying.add_argument("--reason", metavar="TEXT", help="rows whose reason contains TEXT")
    replaying.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="PATH=JSON",
        help="""e.g. data.user.gender='"female"'""",
    )
    replaying.add_argument("--unset", action="append", default=[], metavar="PATH")
    replaying.add_argument("--limit", type=int, metavar="N", help="at most N rows")
    replaying.add_argument("--batch", type=int, default=1_000, help="events per POST")
    replaying.add_argument(
        "--again", action="store_true", help="also rows an earlier replay stored (duplicates now)"
    )
    replaying.add_argument(
        "--dry-run", action="store_true", help="validate the edited events here; send nothing"
    )
    replaying.set_defaults(run=cmd_replay)
    tools_cli.add_commands(commands)
    run = commands.add_parser("run", help=cmd_run.__doc__)
    run.add_argument("config", nargs="?", default="config.yaml")
    run.set_defaults(run=cmd_run)
    args = parser.parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
