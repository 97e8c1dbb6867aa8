"""The reporter over HTTP on the real system: answers match the posted events, bad input is
a 400 naming the parameter, and the OpenAPI document lists every parameter."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest

from adfunnel import storage
from adfunnel.schema import dump_json, event_row
from adfunnel.testing import Deployed, db_fetch, wait_until
from adfunnel.tools.generator import Generator

pytestmark = pytest.mark.integration

REVENUE_TYPES = {"facebook": "checkout.complete", "tiktok": "purchase"}


def two_places(value: Decimal) -> str:
    return str(value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def test_reports_answer_for_the_posted_events(system: Deployed) -> None:
    generator = Generator(seed=41)
    events = generator.batch(3_000, out_of_order_share=0.2)
    bad = [
        generator.corrupt(generator.event(), kind) for kind in ("invalid_gender", "missing_adId")
    ]
    with system.client() as client:
        answer = client.post("/webhook", json=events + bad).json()
        assert answer["rejected"] == 2
        wait_until(lambda: system.total() >= 3_000, what="stored")

        purchases = [
            e
            for e in events
            if e["eventType"] == REVENUE_TYPES[e["source"]]
            and e["data"]["engagement"]["purchaseAmount"] is not None
        ]
        revenue = client.get("/reports/revenue").json()
        assert revenue["transactions"] == len(purchases)
        expected = sum(
            (Decimal(e["data"]["engagement"]["purchaseAmount"]) for e in purchases), Decimal(0)
        )
        assert revenue["total"] == two_places(expected)
        campaign = next(e for e in purchases if e["source"] == "facebook")["data"]["engagement"][
            "campaignId"
        ]
        only = client.get("/reports/revenue", params={"campaignId": campaign}).json()
        in_campaign = [
            e for e in purchases if e["data"]["engagement"].get("campaignId") == campaign
        ]
        assert only["transactions"] == len(in_campaign)
        assert [c["campaignId"] for c in only["byCampaign"]] == [campaign]

        demographics = client.get("/reports/demographics").json()
        for source in ("facebook", "tiktok"):
            users = {e["data"]["user"]["userId"] for e in events if e["source"] == source}
            assert demographics[source]["users"] == len(users)
        tiktok_only = client.get("/reports/demographics", params={"source": "tiktok"}).json()
        assert set(tiktok_only) == {"filters", "tiktok"}

        def rejected() -> Any:
            body = client.get("/reports/rejected").json()
            return body if body["total"] >= 2 else None

        summary = wait_until(rejected, what="rejected report")
        assert summary["total"] == 2
        assert sum(r["count"] for r in summary["byReason"]) == 2
        assert {s["correlationId"] for s in summary["samples"]} == {answer["correlationId"]}
        assert {s["payload"]["eventId"] for s in summary["samples"]} == {b["eventId"] for b in bad}


@pytest.mark.parametrize(
    ("path", "params", "parameter"),
    [
        ("/reports/events", {"source": "myspace"}, "source"),
        ("/reports/events", {"source": "tiktok", "eventType": "ad.click"}, "eventType"),
        ("/reports/events", {"eventType": "nonsense"}, "eventType"),
        ("/reports/events", {"funnelStage": "middle"}, "funnelStage"),
        ("/reports/events", {"from": "yesterday"}, "from"),
        ("/reports/events", {"to": "2026-13-01"}, "to"),
        ("/reports/events", {"from": "2026-01-02", "to": "2026-01-01"}, "from"),
        ("/reports/events", {"interval": "week"}, "interval"),
        ("/reports/revenue", {"source": "x"}, "source"),
        ("/reports/revenue", {"interval": "second"}, "interval"),
        ("/reports/revenue", {"from": "2026-01-01T00:00:00Z", "to": "2026-01-01"}, "from"),
        ("/reports/demographics", {"source": "instagram"}, "source"),
        ("/reports/demographics", {"to": "soon"}, "to"),
        ("/reports/rejected", {"from": "x"}, "from"),
        ("/reports/rejected", {"limit": "-1"}, "limit"),
    ],
)
def test_bad_report_parameters_are_400_naming_them(
    module_system: Deployed, path: str, params: dict[str, str], parameter: str
) -> None:
    with module_system.client() as client:
        response = client.get(path, params=params)
    assert response.status_code == 400, response.text
    body = response.json()
    assert set(body) == {"error", "message", "details"}
    assert parameter in body["message"]


def test_openapi_lists_every_report_parameter(module_system: Deployed) -> None:
    with module_system.client() as client:
        document = client.get("/reports/openapi.json").json()
    parameters = {
        path: {p["name"]: p for p in spec["get"].get("parameters", [])}
        for path, spec in document["paths"].items()
    }
    assert set(parameters["/events"]) == {
        "from",
        "to",
        "source",
        "funnelStage",
        "eventType",
        "interval",
    }
    assert set(parameters["/revenue"]) == {"from", "to", "source", "campaignId", "interval"}
    assert set(parameters["/demographics"]) == {"from", "to", "source"}
    source_schema = str(parameters["/events"]["source"]["schema"])
    assert "facebook" in source_schema and "tiktok" in source_schema
    assert "minute" in str(parameters["/revenue"]["interval"]["schema"])


def test_an_event_stored_without_its_trace_is_still_shown(system: Deployed) -> None:
    event = Generator(seed=43).facebook("ad.click")
    row = event_row(event)
    db_fetch(
        system.settings["database_url"],
        "INSERT INTO events (event_id, event_time, source, funnel_stage, event_type, user_id,"
        " purchase_amount, campaign_id, age, gender, country, city, followers, device,"
        " event_key, payload_json, received_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, now())"
        " RETURNING event_id",
        *row,
        storage.event_key(row.event_id),
        dump_json(event).decode(),
    )
    with system.client() as client:
        answer = client.get(f"/reports/events/{event['eventId']}")
    assert answer.status_code == 200
    body = answer.json()
    assert body["event"] == event
    assert (body["correlationId"], body["storedAt"]) == (None, None)
