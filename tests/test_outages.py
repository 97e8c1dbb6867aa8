"""The bus going away: the gateway answers 503 and claims nothing, then recovers by itself."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from adfunnel import embedded
from adfunnel.generator import Generator
from adfunnel.testing import Deployed, db_fetch, deploy, undeploy, unique_names, wait_until

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
