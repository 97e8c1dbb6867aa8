"""A locked reporter (SPEC §4): with REPORTS_API_KEYS set, every report needs one of the keys
as a bearer token; health stays open; the webhook keeps its own check (HMAC, when set)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from adfunnel.settings import Settings
from adfunnel.testing import deploy, undeploy, wait_until
from adfunnel.tools.generator import Generator

pytestmark = pytest.mark.integration

KEYS = ("first-key", "second-key")


def test_keys_are_read_comma_separated_and_trimmed() -> None:
    settings = Settings(reports_api_keys=" first-key, second-key ,,")
    assert settings.api_keys() == (b"first-key", b"second-key")
    assert Settings().api_keys() == ()


def _refused(answer: httpx.Response) -> bool:
    return (
        answer.status_code == 401
        and answer.json()["error"] == "unauthorized"
        and answer.headers["www-authenticate"].startswith("Bearer")
    )


def test_every_report_needs_one_of_the_keys(
    ray_cluster: str, system_settings: dict[str, Any]
) -> None:
    system = deploy(ray_cluster, {**system_settings, "reports_api_keys": ",".join(KEYS)})
    event = Generator(seed=51).event()
    reports = [
        "/reports/events",
        "/reports/revenue",
        "/reports/demographics",
        "/reports/rejected",
        f"/reports/events/{event['eventId']}",
    ]
    try:
        with system.client() as client:
            # The webhook is not the reporter's: no key needed to post.
            assert client.post("/webhook", json=[event]).status_code == 202
            for path in reports:
                assert _refused(client.get(path)), path
                assert _refused(client.get(path, headers={"Authorization": "Bearer nope"})), path
                assert _refused(client.get(path, headers={"Authorization": "Bearer"})), path
                # The right key in another scheme is still no bearer token.
                assert _refused(client.get(path, headers={"Authorization": f"Basic {KEYS[0]}"}))
            for key in KEYS:
                auth = {"Authorization": f"Bearer {key}"}

                def stored(auth: dict[str, str] = auth) -> bool:
                    return client.get(reports[-1], headers=auth).status_code == 200

                wait_until(stored, what="the posted event, read with a key")
                for path in reports:
                    assert client.get(path, headers=auth).status_code == 200, (path, key)
            for path in ("/reports/health/live", "/reports/health/ready"):
                assert client.get(path).status_code == 200, path
            document = client.get("/reports/openapi.json").json()
    finally:
        undeploy()
    schemes = document["components"]["securitySchemes"]
    assert [scheme["scheme"] for scheme in schemes.values()] == ["bearer"]
    for path, operations in document["paths"].items():
        locked = "security" in operations["get"]
        assert locked == (not path.startswith("/health")), path


def test_reports_are_open_without_keys(ray_cluster: str, system_settings: dict[str, Any]) -> None:
    system = deploy(ray_cluster, system_settings)
    try:
        with system.client() as client:
            assert client.get("/reports/events").status_code == 200
            assert client.get("/reports/rejected").status_code == 200
    finally:
        undeploy()
