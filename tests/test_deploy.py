"""The files under deploy/ parse, and agree with each other and with the code."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from adfunnel.testing import dashboard_queries

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
METRICS_SOURCE = (Path(__file__).resolve().parents[1] / "adfunnel" / "metrics.py").read_text()


@pytest.mark.parametrize("name", ["prometheus.yml", "prometheus.local.yml"])
def test_prometheus_configs_pass_promtool(name: str) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool comes with Debian's prometheus package (.ci/test-deps)"
    checked = subprocess.run(
        [promtool, "check", "config", str(DEPLOY / "prometheus" / name)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_local_config_reads_rays_service_discovery_file() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.local.yml").read_text())
    files = [
        f for job in config["scrape_configs"] for sd in job["file_sd_configs"] for f in sd["files"]
    ]
    assert files == ["/tmp/ray/prom_metrics_service_discovery.json"]


def test_dashboards_use_the_provisioned_data_source() -> None:
    sources = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    uids = {source["uid"] for source in sources["datasources"]}
    provider = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "dashboards" / "adfunnel.yml").read_text()
    )
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    for path in (DEPLOY / "grafana" / "dashboards").glob("*.json"):
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            if panel["type"] != "row":
                assert panel["datasource"]["uid"] in uids, panel["title"]


def test_every_metric_a_panel_reads_is_recorded_by_the_code() -> None:
    used = {
        name
        for _, _, expr in dashboard_queries(DEPLOY / "grafana" / "dashboards")
        for name in re.findall(r"\bray_([a-z_]+?)(?:_total|_bucket)?\{", expr)
    }
    assert used
    for name in used:
        # Collector metrics are named from a per-source prefix.
        plain = re.sub(r"^(fb|ttk)_collector_", "{prefix}_", name)
        assert f'"{name}"' in METRICS_SOURCE or f'f"{plain}"' in METRICS_SOURCE, name
