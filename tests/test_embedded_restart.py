"""The embedded default (no NATS_URL/DATABASE_URL): an outside client's mixed traffic is
stored exactly, every event is traceable to its POST, and a restart keeps all of it."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from adfunnel.testing import db_fetch, deploy, undeploy, unique_names, wait_until
from adfunnel.tools.generator import CAMPAIGN_IDS, Generator

pytestmark = pytest.mark.integration


def mixed_posts(seed: int, total: int) -> tuple[list[Any], dict[str, str], int]:
    """POST bodies (arrays and single objects) with duplicates, corruptions, late events.

    Returns the posts as (body, correlation id, expected accepted, expected rejected), the
    correlation id each unique valid event must be stored with (its first POST's), and the
    number of unique valid events.
    """
    rng = random.Random(seed)
    generator = Generator(seed=seed)
    first_cid: dict[str, str] = {}
    sent_valid: list[dict[str, Any]] = []
    posts: list[Any] = []
    produced = 0
    while produced < total:
        cid = f"client-{uuid.UUID(int=rng.getrandbits(128))}"
        size = 1 if rng.random() < 0.2 else rng.randint(50, 2_000)
        body: list[dict[str, Any]] = []
        accepted = rejected = 0
        for _ in range(size):
            roll = rng.random()
            if roll < 0.05 and sent_valid:
                body.append(rng.choice(sent_valid))  # a re-sent event (retry / other sender)
                accepted += 1
            elif roll < 0.10:
                body.append(generator.corrupt(generator.event()))
                rejected += 1
            else:
                # A quarter of the new events are out of order: up to hours in the past.
                late = timedelta(hours=rng.uniform(0.1, 12)) if roll < 0.25 else timedelta(0)
                event = generator.event(at=datetime.now(UTC) - late)
                body.append(event)
                sent_valid.append(event)
                first_cid[event["eventId"]] = cid
                accepted += 1
            produced += 1
        posts.append((body[0] if len(body) == 1 else body, cid, accepted, rejected))
    return posts, first_cid, len({e["eventId"] for e in sent_valid})


def snapshot_reports(client: httpx.Client, now: datetime) -> list[Any]:
    """Every report under a dozen filter combinations, at fixed filter times."""
    hour_ago = (now - timedelta(hours=1, seconds=17)).isoformat()
    day_ago = (now - timedelta(days=1)).isoformat()
    queries: list[tuple[str, dict[str, str | int]]] = [
        ("/reports/events", {}),
        ("/reports/events", {"source": "facebook", "interval": "hour"}),
        ("/reports/events", {"from": hour_ago, "interval": "minute"}),
        ("/reports/events", {"source": "tiktok", "funnelStage": "top", "eventType": "like"}),
        ("/reports/events", {"from": day_ago, "to": hour_ago, "interval": "day"}),
        ("/reports/revenue", {}),
        ("/reports/revenue", {"source": "tiktok", "interval": "hour"}),
        ("/reports/revenue", {"campaignId": CAMPAIGN_IDS[0], "from": day_ago}),
        ("/reports/demographics", {}),
        ("/reports/demographics", {"source": "facebook", "from": hour_ago}),
        ("/reports/demographics", {"source": "tiktok", "to": hour_ago}),
        ("/reports/rejected", {"limit": 0}),
    ]
    answers = []
    with client:
        for path, params in queries:
            response = client.get(path, params=params)
            assert response.status_code == 200, response.text
            answers.append(response.json())
    return answers


def test_mixed_traffic_then_restart_on_the_same_data(ray_cluster: str, tmp_path: Path) -> None:
    settings: dict[str, Any] = {
        "nats_url": None,
        "database_url": None,
        "data_dir": str(tmp_path / "data"),
        **unique_names(),
    }
    posts, first_cid, unique_valid = mixed_posts(seed=21, total=20_000)
    system = deploy(ray_cluster, settings)
    try:
        with system.client() as client:
            for body, cid, accepted, rejected in posts:
                response = client.post("/webhook", json=body, headers={"x-correlation-id": cid})
                assert response.status_code == 202, response.text
                answer = response.json()
                assert (answer["accepted"], answer["rejected"]) == (accepted, rejected)
                assert len(answer["errors"]) == rejected
                assert answer["correlationId"] == cid
        wait_until(lambda: system.total() >= unique_valid, timeout=180, what="all stored")
        assert system.total() == unique_valid
        database_url = system.endpoints().database_url
        rows = db_fetch(database_url, "SELECT event_id, correlation_id FROM event_traces")
        assert {r["event_id"]: r["correlation_id"] for r in rows} == first_cid
        rejected_total = sum(post[3] for post in posts)
        wait_until(
            lambda: (
                db_fetch(database_url, "SELECT count(*) AS n FROM rejected_events")[0]["n"]
                >= rejected_total
            ),
            what="rejected stored",
        )
        taken_at = datetime.now(UTC)
        reports_before = snapshot_reports(system.client(), taken_at)
        sample = random.Random(5).sample(sorted(first_cid), 100)
        with system.client() as client:
            for event_id in sample:
                trace = client.get(f"/reports/events/{event_id}").json()
                assert trace["correlationId"] == first_cid[event_id]
    finally:
        undeploy()

    assert (tmp_path / "data" / "postgres" / "PG_VERSION").exists()
    system = deploy(ray_cluster, settings)
    try:
        assert system.total() == unique_valid
        assert snapshot_reports(system.client(), taken_at) == reports_before
        with system.client() as client:
            for event_id in sample[:20]:
                trace = client.get(f"/reports/events/{event_id}")
                assert trace.status_code == 200
                assert trace.json()["correlationId"] == first_cid[event_id]
    finally:
        undeploy()
