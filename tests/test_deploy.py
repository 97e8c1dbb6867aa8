"""The files under deploy/ parse, and agree with each other and with the code."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from importlib.metadata import version
from pathlib import Path
from typing import Any

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


# -- docker-compose, profiles, Dockerfile, Kubernetes ----------------------------------------

ROOT = DEPLOY.parent


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _env_file(path: Path) -> dict[str, str]:
    pairs = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


COMPOSE = _yaml(ROOT / "docker-compose.yml")
COMPOSE_DEV = _yaml(ROOT / "docker-compose.dev.yml")
SERVE_CONFIG = _yaml(ROOT / "config.yaml")


def test_every_compose_service_has_a_healthcheck_and_waits_for_healthy_dependencies() -> None:
    services = COMPOSE["services"]
    assert {"nats", "postgres", "app", "prometheus", "grafana", "publisher"} <= set(services)
    for name, service in services.items():
        assert "healthcheck" in service, name
        for dependency, condition in service.get("depends_on", {}).items():
            assert dependency in services, (name, dependency)
            assert "healthcheck" in services[dependency], dependency
            assert condition == {"condition": "service_healthy"}, (name, dependency)


def test_compose_keeps_data_in_named_volumes() -> None:
    declared = set(COMPOSE["volumes"])
    for name in ("nats", "postgres", "prometheus", "grafana"):
        mounts = COMPOSE["services"][name]["volumes"]
        named = {mount.split(":", 1)[0] for mount in mounts if not mount.startswith(".")}
        assert named and named <= declared, name


def test_every_file_compose_mounts_or_reads_exists() -> None:
    for name, service in {**COMPOSE["services"], **COMPOSE_DEV["services"]}.items():
        for mount in service.get("volumes", []):
            source = mount.split(":", 1)[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), (name, source)
    for env_file in COMPOSE["services"]["app"]["env_file"]:
        if env_file == ".env":
            assert (ROOT / ".env.example").exists()
            continue
        for profile in ("development", "staging", "production"):
            assert (ROOT / env_file.replace("${ADFUNNEL_PROFILE:-production}", profile)).exists()


def test_compose_ports_agree_with_the_serve_config_and_prometheus() -> None:
    app = COMPOSE["services"]["app"]
    published = {int(port.split(":")[1]) for port in app["ports"]}
    container = _yaml(ROOT / "config" / "container.yaml")
    assert container["http_options"]["port"] in published
    assert container["http_options"]["host"] == "0.0.0.0"
    metrics_port = int(app["environment"]["RAY_METRICS_EXPORT_PORT"])
    assert metrics_port in published
    scrape = _yaml(DEPLOY / "prometheus" / "prometheus.yml")["scrape_configs"][0]
    assert scrape["static_configs"][0]["targets"] == [f"app:{metrics_port}"]
    assert "app:8000/webhook" in COMPOSE["services"]["publisher"]["environment"]["EVENT_ENDPOINT"]
    assert COMPOSE["services"]["publisher"]["platform"] == "linux/arm64"
    grafana = COMPOSE["services"]["grafana"]
    assert grafana["environment"]["PROMETHEUS_URL"] == "http://prometheus:9090"
    assert app["shm_size"]


def test_the_container_serve_config_runs_the_same_applications() -> None:
    container = _yaml(ROOT / "config" / "container.yaml")
    assert container["applications"] == SERVE_CONFIG["applications"]


def test_every_serve_config_gives_the_controller_the_same_options() -> None:
    from ray.serve.schema import ServeDeploySchema  # noqa: PLC0415  # heavy import

    service = _yaml(K8S / "rayservice.yaml")
    configs = {
        "config.yaml": SERVE_CONFIG,
        "config/container.yaml": _yaml(ROOT / "config" / "container.yaml"),
        "rayservice.yaml": yaml.safe_load(service["spec"]["serveConfigV2"]),
    }
    for name, config in configs.items():
        options = ServeDeploySchema.model_validate(config).controller_options
        assert options is not None, name
        assert options.runtime_env == SERVE_CONFIG["controller_options"]["runtime_env"], name
    interval = SERVE_CONFIG["controller_options"]["runtime_env"]["env_vars"]
    assert float(interval["RAY_SERVE_CONTROL_LOOP_INTERVAL_S"]) <= 1.0


def test_the_dev_override_mounts_the_source_and_drops_the_publisher() -> None:
    app = COMPOSE_DEV["services"]["app"]
    assert any(mount.startswith("./adfunnel:") for mount in app["volumes"])
    assert app["environment"]["LOG_LEVEL"] == "DEBUG"
    assert COMPOSE_DEV["services"]["publisher"]["profiles"] == ["publisher"]


def test_each_profile_sets_every_required_variable_and_only_known_ones() -> None:
    from adfunnel.settings import Settings  # noqa: PLC0415  # only this test needs it

    known = {name.upper() for name in Settings.model_fields}
    required = {"NATS_STREAM", "NATS_SUBJECT_PREFIX", "LOG_LEVEL", "STREAM_MAX_BYTES"}
    for profile in ("development", "staging", "production"):
        values = _env_file(ROOT / "config" / f"{profile}.env")
        assert required <= set(values), profile
        assert set(values) <= known, (profile, set(values) - known)
        external = {"NATS_URL", "DATABASE_URL"} <= set(values)
        assert external == (profile != "development"), profile
        Settings.model_validate({key.lower(): value for key, value in values.items()})


def test_the_env_example_documents_what_compose_interpolates() -> None:
    example = (ROOT / ".env.example").read_text()
    compose_text = (ROOT / "docker-compose.yml").read_text()
    for name in set(re.findall(r"\$\{([A-Z_]+)", compose_text)):
        assert name in example, name


def test_the_dockerfile_is_pinned_non_root_and_checks_readiness() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    base = re.search(r"^FROM (\S+)", dockerfile, re.MULTILINE)
    assert base and re.fullmatch(r"python:3\.11\.\d+-slim-\w+", base[1])
    assert re.search(r"^USER (?!root)\w+", dockerfile, re.MULTILINE)
    assert "/health/ready" in dockerfile
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"ray[serve]==' in pyproject  # Ray pinned through the project
    for copied in re.findall(r"^COPY (\S+)", dockerfile, re.MULTILINE):
        assert (ROOT / copied).exists(), copied
    assert (ROOT / "deploy" / "docker" / "entrypoint.sh").stat().st_mode & 0o111


K8S = DEPLOY / "k8s"


def test_the_kustomization_lists_existing_manifests() -> None:
    kustomization = _yaml(K8S / "kustomization.yaml")
    for resource in kustomization["resources"]:
        assert (K8S / resource).exists(), resource


def test_the_rayservice_serve_config_is_valid_for_the_pinned_ray() -> None:
    from ray.serve.schema import ServeDeploySchema  # noqa: PLC0415  # heavy import

    service = _yaml(K8S / "rayservice.yaml")
    assert service["kind"] == "RayService" and service["apiVersion"] == "ray.io/v1"
    config = ServeDeploySchema.model_validate(yaml.safe_load(service["spec"]["serveConfigV2"]))
    apps = {app.name: app for app in config.applications}
    local = {app["name"]: app for app in SERVE_CONFIG["applications"]}
    assert apps.keys() == local.keys()
    for name, app in apps.items():
        assert app.import_path == local[name]["import_path"]
        assert app.route_prefix == local[name]["route_prefix"]
    gateway = next(d for d in apps["ingest"].deployments if d.name == "Gateway")
    assert isinstance(gateway.autoscaling_config, dict)
    assert gateway.autoscaling_config["min_replicas"] >= 2

    assert service["spec"]["rayClusterConfig"]["rayVersion"] == version("ray")


def test_the_rayservice_pods_are_scraped_and_sized() -> None:
    cluster = _yaml(K8S / "rayservice.yaml")["spec"]["rayClusterConfig"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    for group in groups:
        annotations = group["template"]["metadata"]["annotations"]
        port = group["rayStartParams"]["metrics-export-port"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == port
        for container in group["template"]["spec"]["containers"]:
            assert container["resources"]["requests"]["cpu"]
            assert container["resources"]["requests"]["memory"]
            refs = {next(iter(ref.values()))["name"] for ref in container["envFrom"]}
            assert refs == {"adfunnel-config", "adfunnel-secrets"}


def test_the_k8s_config_map_is_the_production_profile_on_a_jetstream_cluster() -> None:
    config_map = _yaml(K8S / "configmap.yaml")["data"]
    production = _env_file(ROOT / "config" / "production.env")
    assert {k: v for k, v in config_map.items() if k != "STREAM_REPLICAS"} == production
    assert config_map["STREAM_REPLICAS"] == "3"
    nats = _yaml(K8S / "nats-values.yaml")
    assert nats["config"]["cluster"]["replicas"] == 3 and nats["config"]["jetstream"]["enabled"]
    secret = _yaml(K8S / "secret.example.yaml")
    assert secret["metadata"]["name"] == "adfunnel-secrets"
    # The secrets the pods need, reports' keys included (SPEC §4: production sets them).
    assert {"PGPASSWORD", "WEBHOOK_SECRET", "REPORTS_API_KEYS"} <= secret["stringData"].keys()
