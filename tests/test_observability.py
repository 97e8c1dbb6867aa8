"""Metrics, dashboards and logs against a real Prometheus and the real pipeline (SPEC §6).

Prometheus runs the project's local config (`deploy/prometheus/prometheus.local.yml`) with
its service-discovery file pointed at the test cluster's metrics port. Every panel query of
every dashboard in `deploy/grafana/dashboards` must return data, and the counters must
equal what the database holds.
"""

from __future__ import annotations

import asyncio
import json
import math
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from adfunnel.testing import (
    Deployed,
    Prometheus,
    dashboard_queries,
    db_fetch,
    ray_logs_dir,
    start_prometheus,
    wait_until,
)
from adfunnel.tools.generator import Generator
from adfunnel.tools.publish import PublishOptions, publish

pytestmark = pytest.mark.integration

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def counts(system: Deployed) -> dict[str, int]:
    """Rows stored and rejected, straight from the database."""
    url = system.settings["database_url"]
    events = db_fetch(url, "SELECT count(*) AS n FROM events")[0]["n"]
    rejected = db_fetch(url, "SELECT count(*) AS n FROM rejected_events")[0]["n"]
    return {"events": int(events), "rejected": int(rejected)}


def counter_sums(prometheus: Prometheus, pipeline: str) -> dict[str, float | None]:
    """The pipeline's counters as Prometheus last scraped them."""
    sel = f'{{pipeline="{pipeline}"}}'
    failed = [
        prometheus.value(f"sum(ray_{name}_events_failed_total{sel})")
        for name in ("gateway", "fb_collector", "ttk_collector")
    ]
    return {
        "accepted": prometheus.value(f"sum(ray_gateway_events_accepted_total{sel})"),
        "processed": prometheus.value(f"sum(ray_gateway_events_processed_total{sel})"),
        "collectors_processed": sum(
            prometheus.value(f"sum(ray_{name}_events_processed_total{sel})") or 0.0
            for name in ("fb_collector", "ttk_collector")
        ),
        "failed": sum(value or 0.0 for value in failed),
    }


def panel_gaps(prometheus: Prometheus, pipeline: str) -> list[str]:
    """Panel queries that return no series, or only NaN, for this pipeline."""
    gaps = []
    for dashboard, title, expr in dashboard_queries(DEPLOY / "grafana" / "dashboards"):
        result = prometheus.query(expr.replace("$pipeline", pipeline))
        values = [float(series["value"][1]) for series in result]
        if not any(math.isfinite(value) for value in values):
            gaps.append(f"{dashboard} / {title}: {expr} -> {values}")
    return gaps


def ask_every_report(system: Deployed, event_id: str) -> None:
    with system.client() as client:
        for path in (
            "/reports/events?interval=minute",
            "/reports/revenue",
            "/reports/demographics",
            "/reports/rejected",
            f"/reports/events/{event_id}",
        ):
            assert client.get(path).status_code == 200, path


@pytest.fixture
def prometheus(metrics_port: int, tmp_path: Path) -> Any:
    server = start_prometheus(
        DEPLOY / "prometheus" / "prometheus.local.yml", [f"127.0.0.1:{metrics_port}"], tmp_path
    )
    yield server
    server.stop()


def test_dashboard_queries_are_found() -> None:
    queries = dashboard_queries(DEPLOY / "grafana" / "dashboards")
    assert len(queries) >= 15
    assert all("$pipeline" in expr for _, _, expr in queries)


def test_every_panel_returns_data_and_counters_agree_with_the_database(
    system: Deployed, prometheus: Prometheus
) -> None:
    pipeline = system.settings["nats_stream"]
    # A first batch creates the series; Prometheus must have seen them before the load,
    # as it has on a long-running system, or rates over the load would start from nothing.
    warm_up = Generator(seed=3).batch(100)
    with system.client() as client:
        assert client.post("/webhook", json=warm_up).status_code == 202
    wait_until(lambda: counts(system)["events"] == 100, what="the warm-up batch stored")
    ask_every_report(system, warm_up[0]["eventId"])
    wait_until(
        lambda: prometheus.value(f'sum(ray_writer_batch_events_count{{pipeline="{pipeline}"}})'),
        timeout=60,
        what="the first scrape of the pipeline's series",
    )
    options = PublishOptions(
        endpoint=f"{system.base_url}/webhook",
        count=20_000,
        interval_s=0.5,
        min_batch=1_000,
        max_batch=4_000,
        duplicate_share=0.05,
        invalid_share=0.02,
        seed=7,
    )
    summary = asyncio.run(publish(options))
    assert summary.failed_posts == 0 and summary.rejected > 0 and summary.duplicates > 0
    with system.client() as client:  # errors for the HTTP panels
        assert client.post("/webhook", content=b"{not json").status_code == 400
        assert client.get("/reports/events?source=myspace").status_code == 400

    expected_rows = len(summary.accepted_ids()) + len(warm_up)
    wait_until(
        lambda: counts(system)["events"] >= expected_rows,
        timeout=120,
        what=f"{expected_rows} stored rows",
    )
    ask_every_report(system, next(iter(summary.accepted_ids())))

    # Ray exports every couple of seconds and Prometheus scrapes each second: the counters
    # must settle on exactly the database's numbers.
    def settled() -> dict[str, float | None] | None:
        stored = counts(system)
        sums = counter_sums(prometheus, pipeline)
        wanted = {
            "processed": stored["events"],
            "collectors_processed": stored["events"],
            "failed": stored["rejected"],
        }
        return sums if all(sums[key] == value for key, value in wanted.items()) else None

    sums = wait_until(settled, timeout=90, interval=1, what="counters equal to the database")
    assert sums["accepted"] == summary.accepted + len(warm_up)
    assert counts(system) == {"events": expected_rows, "rejected": summary.rejected}

    ask_every_report(system, next(iter(summary.accepted_ids())))
    gaps: list[str] = []

    def no_gaps() -> bool:
        gaps[:] = panel_gaps(prometheus, pipeline)
        return not gaps

    try:
        wait_until(no_gaps, timeout=60, interval=2, what="every panel query to return data")
    except TimeoutError:
        pytest.fail("panel queries without data:\n" + "\n".join(gaps))


def _log_lines(session_logs: Path, needle: str) -> list[dict[str, Any]]:
    found = []
    for path in session_logs.glob("worker-*.err"):
        for line in path.read_text(errors="replace").splitlines():
            if needle in line and line.startswith("{"):
                try:
                    found.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
    return found


def test_one_correlation_id_is_followed_from_the_post_to_the_stored_row(
    system: Deployed,
) -> None:
    cid = f"trace-{uuid.uuid4().hex}"
    events = Generator(seed=31).batch(300)
    with system.client() as client:
        response = client.post("/webhook", json=events, headers={"x-correlation-id": cid})
    assert response.status_code == 202 and response.json()["accepted"] == 300
    ids = [event["eventId"] for event in events]

    def rows() -> list[Any] | None:
        found = db_fetch(
            system.settings["database_url"],
            "SELECT correlation_id FROM event_traces WHERE event_id = ANY($1)",
            ids,
        )
        return found if len(found) == 300 else None

    assert {row["correlation_id"] for row in wait_until(rows, what="300 rows")} == {cid}
    with httpx.Client(base_url=system.base_url) as client:
        traced = client.get(f"/reports/events/{ids[0]}").json()
    assert traced["correlationId"] == cid

    session_logs = ray_logs_dir()

    def lines_of_every_component() -> dict[str, list[dict[str, Any]]] | None:
        by_component: dict[str, list[dict[str, Any]]] = {}
        for line in _log_lines(session_logs, cid):
            by_component.setdefault(line.get("component", "?"), []).append(line)
        needed = {"gateway", "consumer", "writer"}
        return by_component if needed <= by_component.keys() else None

    found = wait_until(lines_of_every_component, timeout=30, what=f"log lines of {cid}")
    gateway = [line for line in found["gateway"] if line["message"] == "batch accepted"]
    assert len(gateway) == 1 and gateway[0]["correlation_id"] == cid
    assert gateway[0]["accepted"] == 300 and gateway[0]["duration_ms"] >= 0
    consumer = [line for line in found["consumer"] if line["message"] == "batch acked"]
    writer = [line for line in found["writer"] if line["message"] == "batch written"]
    assert consumer and all(cid in line["correlation_ids"] for line in consumer)
    assert writer and all(cid in line["correlation_ids"] for line in writer)
    # One line per batch, not per event: 300 events travel in a handful of messages.
    assert len(consumer) <= 10 and len(writer) <= 10
    assert {line["lane"] for line in consumer} <= {"facebook", "tiktok"}
