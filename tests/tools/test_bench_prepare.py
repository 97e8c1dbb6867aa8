"""`python -m adfunnel.tools.bench.prepare` prepares what it counts (no timings asserted)."""

from __future__ import annotations

import orjson

from adfunnel.tools.bench import prepare


def test_a_body_holds_the_events_asked_for() -> None:
    events = orjson.loads(prepare.body(400, returning=0.3, hot_users=0))
    assert len(events) == 400


def test_every_body_is_prepared_by_the_threads_and_counted() -> None:
    payload = prepare.body(300, returning=0.3, hot_users=2)
    per_event, events = prepare.measure(payload, bodies=5, threads=2)
    assert events == 5 * 300
    assert per_event >= 0
