"""RETENTION_DAYS on the running system (SPEC §10): the supervisor removes what expired at
start, the events report keeps that day's count, and the gateway refuses events older than
the window with a reason naming `timestamp`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from adfunnel import storage
from adfunnel.schema import event_row
from adfunnel.storage import StagedEvent
from adfunnel.testing import db_fetch, deploy, run, undeploy, wait_until
from adfunnel.tools.generator import Generator

pytestmark = pytest.mark.integration


async def _store_old(database: str, events: list[dict[str, Any]]) -> None:
    """Events stored before the window was set (it would refuse them at the door now)."""
    pool = await storage.create_pool(database, size=1)
    async with pool.acquire() as conn:
        await storage.migrate(conn)
        received = datetime.now(UTC) - timedelta(days=10)
        staged = [
            StagedEvent(event_row(e), orjson.dumps(e).decode(), "old", received, i)
            for i, e in enumerate(events)
        ]
        async with conn.transaction():
            await storage.insert_events(conn, staged)
    await pool.close()


def test_a_ten_day_old_event_leaves_and_its_day_keeps_its_count(
    ray_cluster: str, system_settings: dict[str, Any]
) -> None:
    database = system_settings["database_url"]
    day = (datetime.now(UTC) - timedelta(days=10)).replace(hour=0, minute=0, second=0)
    day = day.replace(microsecond=0)
    generator = Generator(seed=71)
    old = [generator.event(at=day + timedelta(hours=h)) for h in range(1, 4)]
    run(_store_old(database, old))
    system = deploy(ray_cluster, {**system_settings, "retention_days": 5})
    try:

        def stored() -> int:
            return int(db_fetch(database, "SELECT count(*) AS n FROM events")[0]["n"])

        wait_until(lambda: stored() == 0, what="the supervisor's retention run at start")
        window = {"from": day.isoformat(), "to": (day + timedelta(days=1)).isoformat()}
        with system.client() as client:
            assert client.get("/reports/events", params=window).json()["total"] == 3
            assert client.get(f"/reports/events/{old[0]['eventId']}").status_code == 404
            late = generator.event(at=datetime.now(UTC) - timedelta(days=6))
            fresh = generator.event()
            answer = client.post("/webhook", json=[late, fresh]).json()
    finally:
        undeploy()
    assert answer["accepted"] == 1
    (error,) = answer["errors"]
    assert error["index"] == 0 and error["eventId"] == late["eventId"]
    assert error["reason"].startswith("timestamp: ") and "retention window" in error["reason"]
