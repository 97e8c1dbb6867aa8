"""`python -m adfunnel.tools.bench.backend` stores what it measures (no timings asserted)."""

from __future__ import annotations

import argparse
import os
from typing import Any

import pytest

from adfunnel.testing import database_names
from adfunnel.tools.bench import backend
from adfunnel.tools.bench.system import read_proc


def test_the_cpu_time_of_this_process_is_read_and_grows() -> None:
    def cpu() -> float:
        sample = read_proc(os.getpid())
        assert sample is not None
        return sample.cpu_s

    before = cpu()
    while cpu() == before:
        sum(range(100_000))
    assert cpu() > before >= 0


@pytest.mark.integration
async def test_every_batch_is_stored_and_only_the_measured_ones_counted(database: str) -> None:
    measured = await backend.run(
        database, batches=3, batch=1_500, warmup=1, returning=0.3, hot_users=2
    )
    assert measured.stored == 3 * 1_500
    assert measured.cpu_us > 0
    # Every stored event's row reaches the WAL.
    assert measured.wal_bytes > 100


@pytest.mark.integration
async def test_the_tool_leaves_the_server_without_its_database(servers: Any) -> None:
    before = await database_names(servers.postgres_url)
    options = argparse.Namespace(batches=2, batch=500, warmup=1)
    assert (await backend.measure(servers.postgres_url, options, (0.3, 0))).cpu_us > 0
    assert await database_names(servers.postgres_url) == before
