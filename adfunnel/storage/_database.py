"""Connections: pools prepared for the project's sessions, waiting for a server, databases,
and what a server has stored (disk, WAL)."""

from __future__ import annotations

import asyncio
import contextlib
import re
from typing import TYPE_CHECKING, TypeAlias

import asyncpg

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    # A plain connection or one borrowed from a pool: every function here takes either.
    Conn: TypeAlias = asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]


def _jsonb_encode(text: str) -> bytes:
    return b"\x01" + text.encode()  # jsonb's binary format: version 1, then the JSON text


def _jsonb_decode(data: bytes) -> str:
    return data[1:].decode()


async def _json_text(conn: Conn) -> None:
    # Payloads are already JSON text: pass them through untouched, in the binary format
    # because COPY (the fast path) speaks only binary.
    await conn.set_type_codec(
        "jsonb", encoder=_jsonb_encode, decoder=_jsonb_decode, schema="pg_catalog", format="binary"
    )


async def create_pool(dsn: str, *, size: int, read_only: bool = False) -> asyncpg.Pool:
    """A small pool; each connection is prepared for staging writes, or can only read."""
    settings = {"jit": "off", "work_mem": "32MB"}
    if read_only:
        # The reporter's sessions: a write, whatever its origin, fails in PostgreSQL itself.
        settings["default_transaction_read_only"] = "on"
    pool = await asyncpg.create_pool(
        dsn,
        min_size=1,
        max_size=size,
        init=_json_text,
        command_timeout=120,
        # Every statement of the project runs in milliseconds over indexes and rollups; JIT
        # compiling one (chosen by estimated cost, which big tables inflate) takes a second.
        # Sorts of a few hundred thousand narrow rows (latest event per repeat user) fit in
        # memory with this, instead of spilling to disk.
        server_settings=settings,
    )
    assert pool is not None
    return pool


async def wait_for_database(dsn: str, *, max_wait_s: float = 60.0) -> None:
    """Wait until PostgreSQL accepts connections (a fresh server spends a moment starting)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max_wait_s
    while True:
        try:
            conn = await asyncpg.connect(dsn, timeout=5)
        except (OSError, asyncpg.CannotConnectNowError, asyncpg.PostgresConnectionError):
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.2)
        else:
            await conn.close()
            return


async def prepared_database(server_dsn: str, name: str) -> str:
    """Wait for a fresh server, create database `name` on it if needed; returns its URL."""
    await wait_for_database(server_dsn)
    await ensure_database(server_dsn, name)
    return server_dsn.rsplit("/", 1)[0] + f"/{name}"


def _check_name(name: str) -> None:
    # Database names go into DDL as identifiers, which cannot be bound as parameters.
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
        raise ValueError(f"unsafe database name {name!r}")


async def ensure_database(server_dsn: str, name: str) -> None:
    """Create database `name` on the server if it does not exist yet."""
    _check_name(name)
    conn = await asyncpg.connect(server_dsn)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            with contextlib.suppress(asyncpg.DuplicateDatabaseError):
                await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def drop_database(server_dsn: str, name: str) -> None:
    """Drop database `name` from the server if it exists, closing its connections first."""
    _check_name(name)
    conn = await asyncpg.connect(server_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def disk_usage(conn: Conn) -> tuple[int, dict[str, int], dict[str, int]]:
    """How many events are stored, the bytes on disk of every table of the project, its
    indexes and TOAST included (SPEC §9), and those of `events` apart: its rows (`heap`,
    TOAST included) and each of its indexes; each largest first."""
    events = await conn.fetchval("SELECT count(*) FROM events")
    rows = await conn.fetch(
        "SELECT c.relname AS name, pg_total_relation_size(c.oid) AS bytes FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')"
        " ORDER BY 2 DESC, 1"
    )
    parts = await conn.fetch(
        "SELECT 'heap' AS name, pg_table_size('events'::regclass) AS bytes"
        " UNION ALL SELECT i.indexrelid::regclass::text, pg_relation_size(i.indexrelid)"
        " FROM pg_index i WHERE i.indrelid = 'events'::regclass ORDER BY 2 DESC, 1"
    )
    return (
        int(events),
        {row["name"]: int(row["bytes"]) for row in rows},
        {row["name"]: int(row["bytes"]) for row in parts},
    )


async def wal_position(conn: Conn) -> int:
    """The server's WAL insert position in bytes. Two readings bound the WAL every database
    of the server wrote between them: a measure of write work that does not drift with the
    machine's speed, as CPU time does. Only a primary has one."""
    return int(await conn.fetchval("SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn"))
