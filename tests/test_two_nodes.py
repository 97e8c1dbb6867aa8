"""Scale-out on one machine: a two-node Ray cluster (`ray start --head` and a second
`ray start --address=…`, each with its own resources), the pipeline's replicas and actors
on both nodes, every posted event stored exactly once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from adfunnel import embedded
from adfunnel.testing import unique_names, wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).parent / "ray")
# Ray 2.60 turns token authentication on by default and keeps the token in one file per
# user; this private cluster on 127.0.0.1 goes without, so it cannot disturb the test
# session's own cluster (or be disturbed by it).
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled"}
CURRENT_CLUSTER = Path("/tmp/ray/ray_current_cluster")


def _start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    # --block: the node lives as long as this process, and stops with it (no `ray stop`,
    # which would also stop the test session's own cluster).
    return subprocess.Popen(
        [RAY, "start", "--block", "--node-ip-address=127.0.0.1", "--disable-usage-stats", *args],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        env=ENV,
    )


@pytest.fixture
def two_nodes(tmp_path: Path) -> Iterator[str]:
    port = embedded.free_port()
    address = f"127.0.0.1:{port}"
    head = _start(
        [
            "--head",
            f"--port={port}",
            f"--dashboard-port={embedded.free_port()}",
            "--num-cpus=2",
            '--resources={"node_a": 1}',
        ],
        tmp_path / "head.log",
    )
    nodes = [head]
    try:
        wait_until(lambda: _alive_nodes(address) >= 1, timeout=120, what="the head node")
        nodes.append(
            _start(
                [f"--address={address}", "--num-cpus=2", '--resources={"node_b": 1}'],
                tmp_path / "worker.log",
            )
        )
        wait_until(lambda: _alive_nodes(address) >= 2, timeout=120, what="the second node")
        yield address
    finally:
        for node in reversed(nodes):
            node.terminate()
            try:
                node.wait(timeout=60)
            except subprocess.TimeoutExpired:
                node.kill()
        # `ray start --head` records its address for later `ray.init()` / `serve run` calls
        # without an address, and a SIGTERM'd head leaves it behind: a later `serve run`
        # would wait for this dead cluster instead of starting its own.
        current = CURRENT_CLUSTER.read_text().strip() if CURRENT_CLUSTER.exists() else ""
        if current.endswith(f":{port}"):
            CURRENT_CLUSTER.unlink()


def _alive_nodes(address: str) -> int:
    checked = subprocess.run(
        [RAY, "status", f"--address={address}"],
        capture_output=True,
        text=True,
        check=False,
        env=ENV,
    )
    return checked.stdout.count(" node_") if checked.returncode == 0 else 0


def test_replicas_and_actors_on_both_nodes_store_every_event_once(
    two_nodes: str, servers: Any, database: str
) -> None:
    settings = {
        "nats_url": servers.nats_url,
        "database_url": database,
        "writer_pool_size": 2,
        **unique_names(),
    }
    driver = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tests" / "two_nodes_driver.py"),
            two_nodes,
            str(embedded.free_port()),
            json.dumps(settings),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=ENV,
        timeout=600,
        check=False,
    )
    assert driver.returncode == 0, driver.stderr[-4000:]
    found = json.loads(driver.stdout.strip().splitlines()[-1])
    assert len(found["nodes"]) == 2
    used = {node for nodes in found["placed"].values() for node in nodes}
    assert used == set(found["nodes"]), found["placed"]
    assert len(set(found["placed"]["Writer"])) == 2, "the writer pool spans both nodes"
    assert len(found["placed"]["ServeReplica:ingest:Gateway"]) == 2
    assert found["stored"] == found["distinct"] == found["promised"] == 30_000
    assert found["total"] == 30_000
