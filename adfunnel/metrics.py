"""The Prometheus metrics of SPEC §6, recorded through Ray's metrics API.

Ray's metrics agent on each node serves what every process of the node recorded on one
port (`metrics_export_port`), adding a `ray_` prefix to every name and `_total` to
counters: one scrape target per node covers the gateway, collectors, writers and reporter.
Metrics are created on first use, in the process that records them, so importing this
module needs no running Ray.

What the counters mean (docs/operations.md, Observability, has the table):
- `gateway_events_accepted{source}`: events answered as accepted in a `202` (duplicates
  included, as in the answer);
- `gateway_events_failed{source,reason}`: events the gateway rejected, by field;
- `gateway_events_processed{source}` and `<collector>_events_processed`: events stored as
  new rows, counted when their transaction committed and their messages were acked;
- `<collector>_events_accepted`: events taken off the bus and settled (stored,
  duplicate or poison); `<collector>_events_failed{reason}`: poison events of the source
  moved to the rejected store.
So after a run: processed = rows in `events`; gateway failed + collectors' failed = rows
in `rejected_events`.

Every series carries `pipeline`, the deployment's stream name (`NATS_STREAM`): several
deployments may share one Ray cluster, and their counts must not mix.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator
from contextlib import contextmanager

from ray.util import metrics as ray_metrics

COLLECTOR_PREFIX = {"facebook": "fb_collector", "tiktok": "ttk_collector"}

# Events per write call: from one isolated poison event up to a full fetch of messages.
BATCH_EVENT_BOUNDARIES = [1.0, 10, 100, 500, 1_000, 2_500, 5_000, 10_000, 16_000, 25_000, 50_000]
SECONDS_BOUNDARIES = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]

_common = {"pipeline": "EVENTS"}

_REASON_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def reason_label(reason: str) -> str:
    """A bounded label for a rejection reason: the field path every reason starts with."""
    head = reason.split(":", 1)[0].strip()
    if not head or len(head) > 64 or not set(head) <= _REASON_CHARS:
        return "other"
    return head


def source_label(source: object) -> str:
    """A bounded label for an event's claimed source (rejected events claim anything)."""
    return source if isinstance(source, str) and source in COLLECTOR_PREFIX else "unknown"


def configure(pipeline: str) -> None:
    """Label this process's series with its deployment (call once, at start-up)."""
    _common["pipeline"] = pipeline


def _tags(tags: dict[str, str]) -> tuple[tuple[str, ...], dict[str, str]]:
    merged = {**_common, **tags}
    return tuple(sorted(merged)), merged


@functools.cache
def _counter(name: str, description: str, tags: tuple[str, ...]) -> ray_metrics.Counter:
    return ray_metrics.Counter(name, description=description, tag_keys=tags)


@functools.cache
def _gauge(name: str, description: str, tags: tuple[str, ...]) -> ray_metrics.Gauge:
    return ray_metrics.Gauge(name, description=description, tag_keys=tags)


@functools.cache
def _histogram(
    name: str, description: str, boundaries: tuple[float, ...], tags: tuple[str, ...]
) -> ray_metrics.Histogram:
    return ray_metrics.Histogram(
        name, description=description, boundaries=list(boundaries), tag_keys=tags
    )


def _inc(name: str, description: str, value: float, **tags: str) -> None:
    if value:
        keys, merged = _tags(tags)
        _counter(name, description, keys).inc(value, tags=merged)


def gateway_accepted(source: str, events: int) -> None:
    _inc("gateway_events_accepted", "Events accepted in a 202 answer.", events, source=source)


def gateway_overloaded() -> None:
    _inc("gateway_posts_overloaded", "POSTs refused with 503: no slot within the bound.", 1)


def gateway_failed(source: str, reason: str, events: int) -> None:
    _inc(
        "gateway_events_failed",
        "Events the gateway rejected, by the field at fault.",
        events,
        source=source,
        reason=reason,
    )


def http_response(app: str, status: int) -> None:
    _inc("http_responses", "HTTP answers by status code.", 1, app=app, code=str(status))


def collector_settled(source: str, stored: int, duplicates: int, poison: int) -> None:
    """One acked batch of a source lane: what its events became."""
    prefix = COLLECTOR_PREFIX[source]
    _inc(
        f"{prefix}_events_accepted",
        f"{source} events taken off the bus and settled.",
        stored + duplicates + poison,
    )
    _inc(f"{prefix}_events_processed", f"{source} events stored as new rows.", stored)
    _inc(
        "gateway_events_processed",
        "Accepted events stored as new rows (counted at commit).",
        stored,
        source=source,
    )
    collector_failed(source, "storage", poison)


def collector_failed(source: str, reason: str, events: int) -> None:
    prefix = COLLECTOR_PREFIX[source]
    _inc(
        f"{prefix}_events_failed",
        f"{source} events that could never be written (moved to the rejected store).",
        events,
        reason=reason,
    )


def consumer_lag(lane: str, pending: int, ack_pending: int) -> None:
    """The durable consumer's backlog, as JetStream reports it."""
    keys, tags = _tags({"lane": lane})
    _gauge("consumer_pending_messages", "Messages not yet delivered.", keys).set(pending, tags=tags)
    _gauge("consumer_ack_pending_messages", "Messages delivered, not yet acked.", keys).set(
        ack_pending, tags=tags
    )


def writer_batch(lane: str, events: int, seconds: float) -> None:
    """One write call: its size and how long decoding and the transaction took."""
    keys, tags = _tags({"lane": lane})
    _histogram(
        "writer_batch_events", "Events per write call.", tuple(BATCH_EVENT_BOUNDARIES), keys
    ).observe(events, tags=tags)
    _histogram(
        "writer_write_seconds", "Duration of one write call.", tuple(SECONDS_BOUNDARIES), keys
    ).observe(seconds, tags=tags)


@contextmanager
def report(category: str) -> Iterator[None]:
    """Time one report; count it as generated only when it was answered."""
    started = time.perf_counter()
    yield
    keys, tags = _tags({"category": category})
    _histogram(
        "reporter_report_latency_seconds",
        "Time to compute one report.",
        tuple(SECONDS_BOUNDARIES),
        keys,
    ).observe(time.perf_counter() - started, tags=tags)
    _counter("reporter_reports_generated", "Reports answered.", keys).inc(1, tags=tags)
