"""Driver of tests/test_two_nodes.py, run in its own process (one Ray driver per process).

Connects to the two-node cluster the test started, deploys the pipeline with two gateway
replicas, posts events, waits for them, and prints one JSON line: where the replicas and
actors run, and what was stored.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import httpx
import ray
from ray import serve
from ray.util.state import list_actors

from adfunnel.testing import db_fetch, deploy, undeploy, wait_until
from adfunnel.tools.generator import Generator

PIPELINE_CLASSES = ("Writer", "Consumer", "ServeReplica:ingest:Gateway")


def main(address: str, http_port: int, settings_json: str) -> dict[str, Any]:
    settings = json.loads(settings_json)
    ray.init(address=address, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": http_port, "location": "HeadOnly"})
    base_url = f"http://127.0.0.1:{http_port}"
    system = deploy(base_url, settings, gateway_replicas=2)
    try:
        placed: dict[str, list[str]] = {}
        for actor in list_actors(filters=[("state", "=", "ALIVE")], limit=1000):
            name = actor.class_name
            if name in PIPELINE_CLASSES and actor.node_id:
                placed.setdefault(name, []).append(actor.node_id)
        events = Generator(seed=2).batch(30_000)
        promised: list[str] = []
        with httpx.Client(base_url=base_url, timeout=120) as client:
            for start in range(0, len(events), 5_000):
                batch = events[start : start + 5_000]
                response = client.post("/webhook", json=batch)
                response.raise_for_status()
                promised += [event["eventId"] for event in batch]
        wait_until(lambda: system.total() >= len(promised), timeout=240, what="every event")
        rows = db_fetch(
            settings["database_url"],
            "SELECT count(*) AS n, count(DISTINCT event_id) AS d FROM events"
            " WHERE event_id = ANY($1)",
            promised,
        )
        return {
            "nodes": sorted(node["NodeID"] for node in ray.nodes() if node["Alive"]),  # type: ignore[no-untyped-call]  # unannotated in Ray
            "placed": placed,
            "promised": len(promised),
            "stored": int(rows[0]["n"]),
            "distinct": int(rows[0]["d"]),
            "total": system.total(),
        }
    finally:
        undeploy()
        serve.shutdown()  # type: ignore[no-untyped-call]  # ray ships it unannotated
        ray.shutdown()


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]), sys.argv[3])), flush=True)
