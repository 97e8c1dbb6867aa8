"""`python -m adfunnel.tools.bench.backend` stores what it measures (no timings asserted)."""

from __future__ import annotations

import os

import pytest

from adfunnel.tools.bench import backend


def test_the_cpu_time_of_this_process_is_read_and_grows() -> None:
    before = backend.cpu_seconds(os.getpid())
    while backend.cpu_seconds(os.getpid()) == before:
        sum(range(100_000))
    assert backend.cpu_seconds(os.getpid()) > before >= 0


@pytest.mark.integration
async def test_every_batch_is_stored_and_only_the_measured_ones_counted(database: str) -> None:
    per_event, stored = await backend.run(
        database, batches=3, batch=1_500, warmup=1, returning=0.3, hot_users=2
    )
    assert stored == 3 * 1_500
    assert per_event > 0
