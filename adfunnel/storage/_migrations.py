"""Versioned schema migrations (`migrations/NNNN_name.sql`), applied once, under a lock."""

from __future__ import annotations

import re
from importlib import resources
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from adfunnel.storage._database import Conn

# Any constant works; it only has to be the same for every process of the project.
MIGRATION_LOCK_ID = 0x0ADF0001


def _migrations() -> list[tuple[int, str, str]]:
    found = []
    for entry in resources.files("adfunnel.storage.migrations").iterdir():
        match = re.fullmatch(r"(\d{4})_(\w+)\.sql", entry.name)
        if match:
            found.append((int(match[1]), match[2], entry.read_text()))
    return sorted(found)


async def migrate(conn: Conn, *, until: int | None = None) -> list[int]:
    """Apply pending migrations under an advisory lock; returns the versions applied now.
    `until` stops after that version (tests of an upgrade start from an older schema)."""
    applied: list[int] = []
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_ID)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, name, sql in _migrations():
            if version in done or (until is not None and version > until):
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name
                )
            applied.append(version)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_ID)
    return applied
