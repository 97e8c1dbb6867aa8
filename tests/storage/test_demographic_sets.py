"""The rollups' grouping sets (migration 0025) give the rows of `adfunnel_demographic_keys`,
the definition the reports spell edge users out with: the same dimensions, keys and sums."""

from __future__ import annotations

import random
from typing import Any

import asyncpg
import pytest

from adfunnel import storage

pytestmark = pytest.mark.integration

_COLUMNS = "bucket, source, funnel_stage, age, gender, country, city, device, sign"
_AGES = [None, 0, 12, 13, 17, 18, 24, 25, 34, 35, 44, 45, 54, 55, 64, 65, 120]
_STAGES = ["top", "middle", "bottom"]


def _rows(count: int) -> list[tuple[Any, ...]]:
    """Rows over every age boundary, absent attributes, both sources and every stage, some
    of them taken back (sign -1)."""
    pick = random.Random(25)
    rows = []
    for _ in range(count):
        rows.append(
            (
                pick.randrange(3),
                pick.choice(["facebook", "tiktok"]),
                pick.choice(_STAGES),
                pick.choice(_AGES),
                pick.choice([None, "female", "male", "non-binary"]),
                pick.choice([None, "PL", "US", "DE"]),
                pick.choice([None, "Kraków", "Austin", "Berlin"]),
                pick.choice([None, "ios", "android", "desktop"]),
                pick.choice([1, 1, 1, -1]),
            )
        )
    return rows


def _users_by_key(rows: list[asyncpg.Record]) -> dict[tuple[Any, ...], int]:
    return {(r["bucket"], r["source"], r["dim"], r["key1"], r["key2"]): r["users"] for r in rows}


async def test_grouping_sets_match_the_keys_of_the_reports(database: str) -> None:
    conn = await asyncpg.connect(database)
    try:
        await storage.migrate(conn)
        await conn.execute(
            "CREATE TEMP TABLE people (bucket integer, source text, funnel_stage text,"
            " age integer, gender text, country text, city text, device text, sign integer)"
        )
        await conn.executemany(
            f"INSERT INTO people ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            _rows(3000),
        )
        sets = await conn.fetchval("SELECT adfunnel_demographic_sets('people', 'bucket', 'bucket')")
        by_sets = _users_by_key(await conn.fetch(sets))
        by_keys = _users_by_key(
            await conn.fetch(
                "SELECT p.bucket, p.source, k.dim, k.key1, k.key2, sum(p.sign) AS users"
                " FROM people p CROSS JOIN LATERAL adfunnel_demographic_keys(p.source,"
                " p.funnel_stage, p.age, p.gender, p.country, p.city, p.device) k"
                " GROUP BY 1, 2, 3, 4, 5"
            )
        )
    finally:
        await conn.close()
    assert by_sets == by_keys
    # The data reach every dimension, absent keys included.
    assert {key[2] for key in by_keys} == {"age", "gender", "country", "city", "device"}
    assert any(key[3] is None for key in by_keys)
