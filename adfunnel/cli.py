"""The `adfunnel` command: `run` and the operator commands beside `serve run config.yaml`,
plus the subcommands of the tools that drive and measure it (`adfunnel.tools.cli`)."""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import asyncpg

from adfunnel import embedded, storage
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
    tools_cli.add_commands(commands)
    run = commands.add_parser("run", help=cmd_run.__doc__)
    run.add_argument("config", nargs="?", default="config.yaml")
    run.set_defaults(run=cmd_run)
    args = parser.parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
