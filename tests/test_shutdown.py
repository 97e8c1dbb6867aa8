"""Graceful shutdown: deleting the applications mid-load breaks no promise.

In-flight requests finish, fetched batches are written and acked, and whatever got a
`202` is stored exactly once once the system is back on the same stream and database.
"""

from __future__ import annotations

import threading
from typing import Any

import httpx
import pytest

from adfunnel.testing import db_fetch, deploy, undeploy, wait_until
from adfunnel.tools.generator import Generator

pytestmark = pytest.mark.integration


def test_shutdown_mid_load_keeps_every_promise(
    ray_cluster: str, system_settings: dict[str, Any]
) -> None:
    system = deploy(ray_cluster, system_settings)
    generator = Generator(seed=31)
    batches = [generator.batch(20_000) for _ in range(6)]
    promised: list[str] = []
    statuses: list[int | str] = []
    first_accepted = threading.Event()

    def publisher() -> None:
        with httpx.Client(base_url=system.base_url, timeout=120) as client:
            for batch in batches:
                try:
                    response = client.post("/webhook", json=batch)
                except httpx.HTTPError as error:
                    statuses.append(type(error).__name__)
                    continue
                statuses.append(response.status_code)
                if response.status_code == 202:
                    promised.extend(e["eventId"] for e in batch)
                first_accepted.set()

    thread = threading.Thread(target=publisher)
    thread.start()
    assert first_accepted.wait(120)
    undeploy()  # while the publisher keeps posting
    thread.join(300)
    assert promised, statuses
    assert all(status in (202, 404, 503) or isinstance(status, str) for status in statuses)

    system = deploy(ray_cluster, system_settings)
    try:
        wait_until(lambda: system.total() >= len(promised), timeout=180, what="promises kept")
        rows = db_fetch(
            system_settings["database_url"],
            "SELECT event_id, count(*) AS n FROM events WHERE event_id = ANY($1) GROUP BY 1",
            promised,
        )
        assert len(rows) == len(promised)
        assert {row["n"] for row in rows} == {1}
    finally:
        undeploy()
