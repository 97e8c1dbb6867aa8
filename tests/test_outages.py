"""The bus going away, or more POSTs than the gateway can take: it answers 503 with
Retry-After and claims nothing, then recovers by itself."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from adfunnel import embedded
from adfunnel.testing import Deployed, db_fetch, deploy, undeploy, unique_names, wait_until
from adfunnel.tools.generator import Generator

pytestmark = pytest.mark.integration


@pytest.fixture
def own_nats(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A NATS server this test may stop and start again on the same port and store."""
    holder = {"server": embedded.start_nats(tmp_path / "own-nats")}
    yield holder
    holder["server"].stop()


def test_nats_unreachable_is_503_and_nothing_claimed(
    ray_cluster: str, database: str, own_nats: dict[str, Any], tmp_path: Path
) -> None:
    server: embedded.EmbeddedServer = own_nats["server"]
    port = int(server.url.rsplit(":", 1)[1])
    settings = {
        "nats_url": server.url,
        "database_url": database,
        "data_dir": str(tmp_path),
        **unique_names(),
    }
    system: Deployed = deploy(ray_cluster, settings)
    generator = Generator(seed=11)
    try:
        with system.client() as client:
            before = generator.batch(500)
            assert client.post("/webhook", json=before).status_code == 202
            server.stop()
            during = generator.batch(500)
            refused = client.post("/webhook", json=during)
            assert refused.status_code == 503
            assert refused.headers["retry-after"]
            assert refused.json()["error"] == "bus_unavailable"
            assert "accepted" not in refused.json()
            not_ready = client.get("/health/ready")
            assert not_ready.status_code == 503
            assert not_ready.json()["components"]["nats"]["ok"] is False

            own_nats["server"] = embedded.start_nats(tmp_path / "own-nats", port=port)
            wait_until(
                lambda: client.get("/health/ready").status_code == 200,
                timeout=60,
                what="ready again after NATS came back",
            )
            after = generator.batch(500)
            assert client.post("/webhook", json=after).status_code == 202
        promised = [e["eventId"] for e in before + after]
        wait_until(lambda: system.total() >= len(promised), timeout=120, what="stored")
        rows = db_fetch(database, "SELECT event_id FROM events WHERE event_id = ANY($1)", promised)
        assert len(rows) == len(promised)
    finally:
        undeploy()


def test_more_posts_than_the_gateway_can_take_are_refused_fast_with_retry_after(
    ray_cluster: str, system_settings: dict[str, Any]
) -> None:
    """SPEC §4: overload answers 503 + Retry-After within the admission bound, never holds
    a POST for minutes. One slot and a half-second bound, eight 50,000-event POSTs at once:
    each takes the slot for longer than that, so some must be refused."""
    settings = {**system_settings, "gateway_concurrent_posts": 1, "admission_timeout_s": 0.5}
    system = deploy(ray_cluster, settings)
    generator = Generator(seed=12)
    batches = [generator.batch(50_000) for _ in range(8)]

    async def post_all() -> list[httpx.Response]:
        # The client's timeout is the bound of "answered": a POST held longer fails here.
        async with httpx.AsyncClient(base_url=system.base_url, timeout=90) as client:
            return await asyncio.gather(
                *(
                    client.post(
                        "/webhook",
                        content=orjson.dumps(batch),
                        headers={"content-type": "application/json"},
                    )
                    for batch in batches
                )
            )

    try:
        answers = asyncio.run(post_all())
        statuses = sorted(answer.status_code for answer in answers)
        assert set(statuses) <= {202, 503}, statuses
        refused = [a for a, _ in zip(answers, batches, strict=True) if a.status_code == 503]
        assert refused and len(refused) < len(answers), statuses
        for answer in refused:
            assert answer.headers["retry-after"]
            assert "accepted" not in answer.json()
        kept = [b for a, b in zip(answers, batches, strict=True) if a.status_code == 202]
        promised = {e["eventId"] for batch in kept for e in batch}
        wait_until(lambda: system.total() >= len(promised), timeout=180, what="stored")
        # A refused POST claimed nothing: none of its events was stored.
        dropped = {
            e["eventId"]
            for a, b in zip(answers, batches, strict=True)
            if a.status_code == 503
            for e in b
        } - promised
        rows = db_fetch(
            settings["database_url"],
            "SELECT count(*) AS n FROM events WHERE event_id = ANY($1)",
            sorted(dropped),
        )
        assert rows[0]["n"] == 0
        stored = db_fetch(
            settings["database_url"],
            "SELECT count(*) AS n FROM events WHERE event_id = ANY($1)",
            sorted(promised),
        )
        assert stored[0]["n"] == len(promised)
    finally:
        undeploy()
