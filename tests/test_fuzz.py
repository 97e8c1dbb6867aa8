"""Hostile input against the running system: never a 5xx, never a hang, always SPEC §4's shape.

Hypothesis sends random bytes, random JSON, mutated real events, random headers and random
report parameters to every endpoint of one deployed pipeline.
"""

from __future__ import annotations

import copy
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adfunnel.testing import Deployed
from adfunnel.tools.generator import Generator

pytestmark = pytest.mark.integration

FUZZ = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=16,
)

EVENTS = Generator(seed=77).batch(40)


def check(response: httpx.Response) -> Any:
    """Every answer: below 500, the correlation id, and the error shape on a 4xx."""
    assert response.status_code < 500, response.text[:500]
    assert response.headers.get("x-correlation-id")
    body = response.json()
    if response.status_code >= 400:
        assert set(body) == {"error", "message", "details"}, body
        assert isinstance(body["error"], str) and isinstance(body["message"], str)
        assert isinstance(body["details"], list)
    return body


def _paths(event: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(event, dict):
        for key, value in event.items():
            found += _paths(value, (*prefix, key))
    return found


@st.composite
def mutated_events(draw: st.DrawFn) -> Any:
    """A real event with one field replaced by anything, or removed."""
    event = copy.deepcopy(draw(st.sampled_from(EVENTS)))
    path = draw(st.sampled_from(_paths(event)))
    parent = event
    for key in path[:-1]:
        parent = parent[key]
    if draw(st.booleans()):
        del parent[path[-1]]
    else:
        parent[path[-1]] = draw(json_values)
    return event


@FUZZ
@given(body=st.binary(max_size=400))
def test_random_bytes_to_the_webhook(module_system: Deployed, body: bytes) -> None:
    with module_system.client(timeout=30) as client:
        check(client.post("/webhook", content=body))


@FUZZ
@given(body=json_values)
def test_random_json_to_the_webhook(module_system: Deployed, body: Any) -> None:
    with module_system.client(timeout=30) as client:
        answer = check(client.post("/webhook", json=body))
    if isinstance(body, list) and all(isinstance(item, dict) for item in body):
        assert answer["accepted"] + answer["rejected"] == len(body)


@FUZZ
@given(
    batch=st.lists(mutated_events(), min_size=1, max_size=5),
    # Any value a client can send as a header (visible ASCII).
    signature=st.from_regex(r"[!-~]{0,80}", fullmatch=True),
)
def test_mutated_events_are_accepted_or_rejected_one_by_one(
    module_system: Deployed, batch: list[Any], signature: str
) -> None:
    # No secret is configured: a stray signature header must change nothing.
    headers = {"x-signature": signature} if signature else {}
    with module_system.client(timeout=30) as client:
        answer = check(client.post("/webhook", json=batch, headers=headers))
    assert answer["accepted"] + answer["rejected"] == len(batch)
    assert [error["index"] for error in answer["errors"]] == sorted(
        error["index"] for error in answer["errors"]
    )


report_values = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        [
            "facebook",
            "tiktok",
            "top",
            "bottom",
            "ad.click",
            "purchase",
            "minute",
            "hour",
            "day",
            "2026-01-01",
            "2026-01-01T00:00:00Z",
            "2026-13-45T99:00:00",
            "-1",
            "1000000",
            "",
        ]
    ),
)
report_params = st.dictionaries(
    st.sampled_from(
        ["from", "to", "source", "funnelStage", "eventType", "interval", "campaignId", "limit"]
    ),
    report_values,
    max_size=5,
)


@FUZZ
@given(
    path=st.sampled_from(["/events", "/revenue", "/demographics", "/rejected"]),
    params=report_params,
)
def test_random_report_parameters(
    module_system: Deployed, path: str, params: dict[str, str]
) -> None:
    with module_system.client(timeout=60) as client:
        response = client.get(f"/reports{path}", params=params)
    body = check(response)
    assert response.status_code in (200, 400), body
    if response.status_code == 400:
        assert body["details"] or body["message"]


@FUZZ
@given(event_id=st.text(min_size=1, max_size=60))
def test_random_event_ids_to_look_up(module_system: Deployed, event_id: str) -> None:
    with module_system.client(timeout=30) as client:
        response = client.get(f"/reports/events/{quote(event_id, safe='')}")
    check(response)
    assert response.status_code in (200, 404)
