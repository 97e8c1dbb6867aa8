"""End to end on real NATS JetStream, PostgreSQL and Ray: POST → bus → actors → rows."""

from __future__ import annotations

import copy
import uuid
from typing import Any

import httpx
import pytest
import ray

from actors.supervisor import ACTOR_NAMESPACE, actor_name
from adfunnel import storage
from adfunnel.testing import Deployed, db_fetch, wait_until
from adfunnel.tools.generator import Generator

pytestmark = pytest.mark.integration


def stored(system: Deployed, ids: list[str]) -> dict[str, Any]:
    """Stored rows of these event ids, by id (count per id included)."""
    rows = db_fetch(
        system.settings["database_url"],
        "SELECT event_id, user_id, event_time, count(*) OVER (PARTITION BY event_id) AS n,"
        " correlation_id, payload, payload_json FROM event_traces WHERE event_id = ANY($1)",
        ids,
    )
    return {row["event_id"]: {**row, "payload": storage.event_json(row).decode()} for row in rows}


def wait_for_total(system: Deployed, expected: int, timeout: float = 120) -> int:
    """Wait until the reporter's exact total reaches `expected` (and return it)."""
    wait_until(lambda: system.total() >= expected, timeout=timeout, what=f"total {expected}")
    return system.total()


def post(client: httpx.Client, body: Any, cid: str | None = None) -> httpx.Response:
    headers = {"x-correlation-id": cid} if cid else {}
    return client.post("/webhook", json=body, headers=headers)


def test_a_50000_event_post_is_stored_exactly_once(system: Deployed) -> None:
    events = Generator(seed=1).batch(50_000)
    with system.client() as client:
        response = post(client, events, "big-post")
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["accepted"] == 50_000
    assert body["rejected"] == 0 and body["errors"] == []
    assert body["correlationId"] == "big-post"
    assert response.headers["x-correlation-id"] == "big-post"
    assert wait_for_total(system, 50_000) == 50_000
    rows = stored(system, [e["eventId"] for e in events])
    assert len(rows) == 50_000
    assert {row["n"] for row in rows.values()} == {1}
    assert {row["correlation_id"] for row in rows.values()} == {"big-post"}


def test_corrupted_event_at_the_end_is_rejected_and_the_rest_stored(system: Deployed) -> None:
    generator = Generator(seed=2)
    events = generator.batch(999)
    events.append(generator.corrupt(generator.event(), "invalid_gender"))
    with system.client() as client:
        response = post(client, events)
    assert response.status_code == 202
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (999, 1)
    assert body["errors"][0]["index"] == 999
    assert body["errors"][0]["eventId"] == events[-1]["eventId"]
    assert body["errors"][0]["reason"].startswith("data.user.gender:")
    assert wait_for_total(system, 999) == 999
    assert len(stored(system, [e["eventId"] for e in events[:-1]])) == 999

    def rejected_rows() -> list[Any]:
        return db_fetch(
            system.settings["database_url"],
            "SELECT event_id, reason, correlation_id, payload::text FROM rejected_events",
        )

    rows = wait_until(rejected_rows, what="the rejected row")
    assert len(rows) == 1
    assert rows[0]["event_id"] == events[-1]["eventId"]
    assert rows[0]["correlation_id"] == body["correlationId"]
    assert '"alien"' in rows[0]["payload"]


def test_the_same_batch_twice_is_stored_once(system: Deployed) -> None:
    events = Generator(seed=3).batch(3_000)
    with system.client() as client:
        first = post(client, events).json()
        second = post(client, events).json()
    assert first["accepted"] == second["accepted"] == 3_000
    assert first["duplicates"] == 0
    # JetStream recognised every message of the re-sent batch inside its duplicate window.
    assert second["duplicates"] == 3_000
    assert wait_for_total(system, 3_000) == 3_000
    rows = stored(system, [e["eventId"] for e in events])
    assert len(rows) == 3_000 and {row["n"] for row in rows.values()} == {1}


def test_a_resent_event_id_with_other_content_keeps_the_first(system: Deployed) -> None:
    generator = Generator(seed=4)
    first = generator.facebook("ad.view")
    changed = copy.deepcopy(first)
    changed["data"]["user"]["name"] = "Someone Else"
    companion = generator.tiktok("like")
    with system.client() as client:
        assert post(client, first, "first").status_code == 202
        wait_for_total(system, 1)
        # Inside one request too: the first copy of the id wins, the second is a duplicate.
        answer = post(client, [changed, companion, changed], "second").json()
    assert answer["accepted"] == 3 and answer["duplicates"] >= 1
    assert wait_for_total(system, 2) == 2
    rows = stored(system, [first["eventId"]])
    assert rows[first["eventId"]]["correlation_id"] == "first"
    assert "Someone Else" not in rows[first["eventId"]]["payload"]


def test_trace_of_one_event_and_404(system: Deployed) -> None:
    event = Generator(seed=5).tiktok("purchase")
    event["extraField"] = {"kept": True}
    cid = f"trace-{uuid.uuid4()}"
    with system.client() as client:
        assert post(client, event, cid).status_code == 202
        wait_for_total(system, 1)
        trace = client.get(f"/reports/events/{event['eventId']}").json()
        missing = client.get("/reports/events/ttk-not-there")
    assert trace["event"] == event
    assert trace["correlationId"] == cid
    assert trace["receivedAt"] <= trace["storedAt"]
    assert missing.status_code == 404
    assert missing.json()["error"] == "not_found"


def test_events_report_total_honours_filters(system: Deployed) -> None:
    events = Generator(seed=6).batch(2_000, out_of_order_share=0.3)
    with system.client() as client:
        assert post(client, events).status_code == 202
    wait_for_total(system, 2_000)
    facebook = sum(1 for e in events if e["source"] == "facebook")
    views = sum(1 for e in events if e["source"] == "tiktok" and e["eventType"] == "video.view")
    assert system.total(source="facebook") == facebook
    assert system.total(source="tiktok", eventType="video.view") == views
    with system.client() as client:
        bad = client.get("/reports/events", params={"source": "myspace"})
        backwards = client.get(
            "/reports/events", params={"from": "2026-01-02T00:00:00Z", "to": "2026-01-01"}
        )
    assert bad.status_code == 400 and "source" in bad.json()["message"]
    assert backwards.status_code == 400 and backwards.json()["message"].startswith("from")


def test_a_killed_writer_loses_and_duplicates_nothing(system: Deployed) -> None:
    generator = Generator(seed=7)
    stream = system.settings["nats_stream"]
    writer = ray.get_actor(actor_name(stream, "writer", 0), namespace=ACTOR_NAMESPACE)
    sent: list[str] = []
    with system.client() as client:
        for _ in range(3):
            events = generator.batch(20_000)
            response = post(client, events)
            assert response.status_code == 202
            sent += [e["eventId"] for e in events]
            # Right after the 202 the consumers are writing this batch: kill mid-write.
            ray.kill(writer, no_restart=False)
    assert wait_for_total(system, len(sent), timeout=240) == len(sent)
    rows = stored(system, sent)
    assert len(rows) == len(sent) and {row["n"] for row in rows.values()} == {1}


# Shares one deployment (module_system): keep these after every test that deploys its own.
@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "invalid_body"),
        (b"42", 400, "invalid_body"),
        (b'"text"', 400, "invalid_body"),
        (b"", 400, "invalid_body"),
        (b"[" + b",".join([b"{}"] * 50_001) + b"]", 413, "payload_too_large"),
        (b'[{"a": NaN}]', 400, "invalid_body"),
    ],
)
def test_bad_bodies(module_system: Deployed, body: bytes, status: int, code: str) -> None:
    with module_system.client() as client:
        response = client.post(
            "/webhook", content=body, headers={"content-type": "application/json"}
        )
    assert response.status_code == status, response.text
    assert response.json()["error"] == code
    assert response.headers["x-correlation-id"]
