"""The gateway Serve deployment: `POST /webhook` and the health endpoints (SPEC §4).

A `202` is a promise: it is sent only after JetStream acknowledged every message carrying
the request's valid events (and its rejections, which must reach the rejected store too).
If the bus cannot take them the answer is `503` with `Retry-After`, and nothing is claimed.
"""

import asyncio
import contextlib
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from functools import partial
from typing import Any

import structlog
from fastapi import FastAPI, Request, Response
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from pydantic import BaseModel
from ray import serve
from ray.serve.config import BackpressureConfig
from ray.serve.handle import DeploymentHandle

from adfunnel import bus, http, logs, metrics
from adfunnel.errors import BusUnavailable, PayloadTooLarge
from adfunnel.ingest import (
    REPLAY_HEADER,
    SIGNATURE_HEADER,
    Triage,
    error_entries,
    prepare,
    verify_signature,
)
from adfunnel.settings import Settings

log = structlog.get_logger(component="gateway")

RETRY_AFTER_S = "2"


class EventError(BaseModel):
    """One rejected event of a batch."""

    index: int
    eventId: str | None
    reason: str


class WebhookResult(BaseModel):
    """The `202` answer to a webhook POST."""

    accepted: int
    duplicates: int
    rejected: int
    errors: list[EventError]
    correlationId: str


api = FastAPI(
    title="adfunnel gateway",
    summary="Accepts Facebook and TikTok funnel events (one object or an array per POST).",
    version="0.1.0",
)
http.install(api, "gateway")

_WEBHOOK_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "One event object or a JSON array of them (SPEC §3 shapes).",
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [{"type": "object"}, {"type": "array", "items": {"type": "object"}}]
                }
            }
        },
    },
    "responses": {
        "400": {"model": http.ErrorBody, "description": "Not JSON, or not an object/array"},
        "401": {"model": http.ErrorBody, "description": "Missing or wrong x-signature"},
        "413": {"model": http.ErrorBody, "description": "Body or batch over the limit"},
        "503": {"model": http.ErrorBody, "description": "The bus cannot take events now"},
    },
}


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refused as soon as it is known to be over `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the body has {declared} bytes; the limit is {limit}")
    parts: list[bytes] = []
    size = 0
    async for part in request.stream():
        size += len(part)
        if size > limit:
            raise PayloadTooLarge(f"the body is over the limit of {limit} bytes")
        parts.append(part)
    return b"".join(parts)


def record_batch(sorted_out: Triage) -> None:
    """Count a batch the bus took: accepted by source, rejected by source and field."""
    for source, count in sorted_out.accepted_by_source().items():
        metrics.gateway_accepted(source, count)
    failed: Counter[tuple[str, str]] = Counter()
    for _, item in sorted_out.rejected:
        claimed = item.payload.get("source") if isinstance(item.payload, dict) else None
        failed[metrics.source_label(claimed), metrics.reason_label(item.reason)] += 1
    for (source, reason), count in failed.items():
        metrics.gateway_failed(source, reason, count)


def readiness_components(status: dict[str, Any]) -> dict[str, Any]:
    """Turn the supervisor's status into per-component readiness entries."""
    if "error" in status:
        return {"supervisor": {"ok": False, "error": status["error"]}}
    writers = status.get("writers", {})
    consumers = status.get("consumers", {})
    components: dict[str, Any] = {
        "postgres": {"ok": any(writers.values())},
        "writers": {"ok": bool(writers) and all(writers.values()), "pool": writers},
    }
    for lane in bus.LANES:
        mine = {k: v for k, v in consumers.items() if k.startswith(f"{lane}-")}
        ok = bool(mine) and all(v.get("connected") and v.get("loops") for v in mine.values())
        components[f"consumer:{lane}"] = {"ok": ok, "actors": mine}
    for url, alive in status.get("embedded", {}).items():
        components[f"embedded:{url}"] = {"ok": alive}
    return components


@serve.deployment(
    name="Gateway",
    num_replicas=1,
    ray_actor_options={"num_cpus": 0.3},
    # Room for the POSTs waiting for a slot (at most `admission_timeout_s`) and for the health
    # probes beside them; past that Serve's proxy refuses at once, also with 503 + Retry-After.
    max_ongoing_requests=16,
    max_queued_requests=16,
    backpressure_config=BackpressureConfig(status_code=503, retry_after_s=2),
    graceful_shutdown_wait_loop_s=1,
    graceful_shutdown_timeout_s=60,
    health_check_period_s=5,
    health_check_timeout_s=30,
)
@serve.ingress(api)
class Gateway:
    """Validates webhook batches and publishes them to JetStream."""

    def __init__(self, settings: Settings, supervisor: DeploymentHandle[Any]) -> None:
        logs.configure(settings.log_level)
        metrics.configure(settings.nats_stream)
        self.settings = settings
        self.supervisor = supervisor
        self._nc: NATS | None = None
        self._js: JetStreamContext | None = None
        self._slots = asyncio.Semaphore(settings.gateway_concurrent_posts)
        # One thread prepares bodies, one at a time, while other POSTs are read and published.
        # Two preparing at once cost 2.3x the CPU per event in no less wall time (the GIL),
        # likely because compressing each event releases the GIL: two threads hand it over.
        self._preparer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prepare")
        # Connecting waits for the supervisor (which may be starting embedded servers);
        # meanwhile the gateway answers 503 rather than blocking its own start-up.
        self._connecting = asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        endpoints = await self.supervisor.endpoints.remote()
        while self._nc is None:
            try:
                self._nc = await bus.connect(endpoints.nats_url, name="gateway")
            except Exception as error:  # noqa: BLE001  # NATS not reachable yet: retry
                log.warning("nats connect failed", error=repr(error))
                await asyncio.sleep(1.0)
        self._js = self._nc.jetstream()
        log.info("gateway connected", nats=endpoints.nats_url)

    @api.post("/webhook", status_code=202, response_model=WebhookResult, openapi_extra=_WEBHOOK_DOC)
    @api.post(
        "/webhook/events",
        status_code=202,
        response_model=WebhookResult,
        openapi_extra=_WEBHOOK_DOC,
        summary="Alias of POST /webhook",
    )
    async def webhook(self, request: Request) -> Response:
        """Accept a batch: valid events are published even when others are rejected."""
        started = time.perf_counter()
        bound = self.settings.admission_timeout_s
        try:
            async with asyncio.timeout(bound):
                await self._slots.acquire()
        except TimeoutError:
            log.warning("overloaded: POST refused", waited_s=bound)
            metrics.gateway_overloaded()
            return http.error_response(
                503,
                "overloaded",
                f"events not accepted: the gateway could not start on this request within"
                f" {bound:g} s; nothing was claimed, send it again later",
                headers={"Retry-After": RETRY_AFTER_S},
            )
        try:
            return await self._accept(request, started)
        finally:
            self._slots.release()

    async def _accept(self, request: Request, started: float) -> Response:
        cid = http.correlation_id(request)
        received_at = datetime.now(UTC)
        body = await read_body(request, self.settings.max_body_bytes)
        secret = self.settings.webhook_secret
        if secret is not None:
            verify_signature(secret.get_secret_value(), body, request.headers.get(SIGNATURE_HEADER))
        # CPU-bound for big batches: off the event loop, so acks of other requests flow.
        keep_rejected = REPLAY_HEADER not in request.headers
        prepared = await asyncio.get_running_loop().run_in_executor(
            self._preparer,
            partial(
                prepare,
                self.settings,
                body,
                correlation_id=cid,
                received_at=received_at,
                keep_rejected=keep_rejected,
            ),
        )
        items, sorted_out, chunks = prepared.items, prepared.sorted_out, prepared.chunks
        if self._nc is None or self._js is None:
            return self._unavailable("the gateway is still connecting to NATS")
        try:
            published = await bus.publish(self._js, self._nc, self.settings, chunks)
        except BusUnavailable as error:
            log.warning("bus unavailable", error=str(error), events=len(items))
            return self._unavailable(str(error))
        duplicates = sorted_out.repeated + published.duplicate_events
        record_batch(sorted_out)
        log.info(
            "batch accepted",
            events=len(items),
            accepted=sorted_out.accepted_count,
            duplicates=duplicates,
            rejected=len(sorted_out.rejected),
            messages=len(chunks),
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
        )
        return http.json_response(
            {
                "accepted": sorted_out.accepted_count,
                "duplicates": duplicates,
                "rejected": len(sorted_out.rejected),
                "errors": error_entries(sorted_out.rejected),
                "correlationId": cid,
            },
            status_code=202,
        )

    def _unavailable(self, message: str) -> Response:
        return http.error_response(
            503,
            "bus_unavailable",
            f"events not accepted: {message}",
            headers={"Retry-After": RETRY_AFTER_S},
        )

    @api.get("/health/live")
    async def live(self) -> dict[str, str]:
        """200 while the process serves."""
        return {"status": "live"}

    @api.get("/health/ready")
    async def ready(self) -> Response:
        """200 only when NATS, the stream, PostgreSQL, the consumers and the writers are up."""
        components: dict[str, Any] = {}
        nats_ok = bool(self._nc and self._nc.is_connected)
        components["nats"] = {"ok": nats_ok}
        stream_ok = False
        if nats_ok and self._js is not None:
            with contextlib.suppress(Exception):
                info = await self._js.stream_info(self.settings.nats_stream)
                stream_ok = True
                components["stream"] = {"ok": True, "messages": info.state.messages}
        components.setdefault("stream", {"ok": stream_ok})
        try:
            status = await asyncio.wait_for(self.supervisor.status.remote(), timeout=10)
        except Exception as error:  # noqa: BLE001  # the supervisor being away is a state
            status = {"error": repr(error)[:200]}
        components.update(readiness_components(status))
        ready = all(part.get("ok") for part in components.values())
        return http.json_response(
            {"status": "ready" if ready else "not_ready", "components": components},
            200 if ready else 503,
        )

    def check_health(self) -> None:
        """Unhealthy only if the connect task crashed; an outage is a 503, not a restart."""
        if self._connecting.done() and self._connecting.exception() is not None:
            raise RuntimeError(f"gateway connect task failed: {self._connecting.exception()!r}")
