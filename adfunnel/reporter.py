"""The reporter Serve deployment, mounted at `/reports` (SPEC §4 reporter)."""

import asyncio
import contextlib
import hmac
from datetime import UTC
from typing import Annotated, Any, Literal

import asyncpg
import orjson
import structlog
from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.responses import RedirectResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from ray import serve

from adfunnel import http, logs, metrics, reports, storage, ui
from adfunnel.errors import NotFound, NotReady, Unauthorized
from adfunnel.settings import Settings

log = structlog.get_logger(component="reporter")

api = FastAPI(
    title="adfunnel reporter",
    summary="Event counts, revenue and demographics over the stored events.",
    version="0.1.0",
)
http.install(api, "reporter")

# `auto_error=False`: a missing or malformed header is answered in the SPEC's error shape
# below, not FastAPI's. The scheme also puts the bearer requirement into the OpenAPI document.
_bearer = HTTPBearer(
    auto_error=False,
    description="One of REPORTS_API_KEYS; needed by every report when keys are set",
)


async def require_api_key(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Let the request through when no keys are configured or it carries one of them."""
    keys: tuple[bytes, ...] = request.app.state.api_keys
    if not keys:
        return
    if credentials is None:
        raise Unauthorized("this report needs an API key: Authorization: Bearer <key>")
    given = credentials.credentials.encode()
    # Every key is compared, in constant time each: neither the answer nor its timing says
    # which key, or how much of one, matched.
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(given, key)
    if not matched:
        raise Unauthorized("the API key is not one of REPORTS_API_KEYS")


_LOCKED = [Depends(require_api_key)]
_REFUSED: dict[int | str, dict[str, Any]] = {
    400: {"model": http.ErrorBody},
    401: {"model": http.ErrorBody},
}
_MISSING: dict[int | str, dict[str, Any]] = {
    401: {"model": http.ErrorBody},
    404: {"model": http.ErrorBody},
}

SourceParam = Annotated[
    Literal["facebook", "tiktok"] | None, Query(description="Only this platform's events")
]
StageParam = Annotated[Literal["top", "bottom"] | None, Query(alias="funnelStage")]
TypeParam = Annotated[
    str | None,
    Query(alias="eventType", description="An event type of the given source (or of either)"),
]
FromParam = Annotated[
    str | None, Query(alias="from", description="ISO-8601, inclusive; no offset means UTC")
]
ToParam = Annotated[
    str | None, Query(alias="to", description="ISO-8601, exclusive; no offset means UTC")
]
CampaignParam = Annotated[
    str | None, Query(alias="campaignId", description="Only this Facebook campaign")
]
IntervalParam = Annotated[
    Literal["minute", "hour", "day"] | None, Query(description="Adds a UTC `series`")
]


# Defined before the deployment: Serve serializes the class as it is decorated, with the
# module's names as they are at that point.
def _asset(name: str) -> Response:
    found = ui.asset(name)
    if found is None:
        raise NotFound(f"the report viewer has no file {name!r}")
    return Response(found.body, media_type=found.media_type, headers=ui.HEADERS)


@serve.deployment(
    name="Reporter",
    num_replicas=1,
    ray_actor_options={"num_cpus": 0.1},
    max_ongoing_requests=32,
    graceful_shutdown_timeout_s=30,
    health_check_period_s=5,
)
@serve.ingress(api)
class Reporter:
    """Answers reports from PostgreSQL."""

    def __init__(self, settings: Settings, ingest_app: str = "ingest") -> None:
        logs.configure(settings.log_level)
        metrics.configure(settings.nats_stream)
        self.settings = settings
        self.ingest_app = ingest_app
        api.state.api_keys = settings.api_keys()
        if not api.state.api_keys:
            log.warning(
                "reports are open to anyone who reaches the port: set REPORTS_API_KEYS",
                hint="reports carry personal data (names, ages, cities)",
            )
        self._pool: asyncpg.Pool | None = None
        self._connecting = asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        while True:
            try:
                supervisor = serve.get_deployment_handle("Supervisor", app_name=self.ingest_app)
                endpoints = await supervisor.endpoints.remote()
                self._pool = await storage.create_pool(
                    endpoints.database_url, size=4, read_only=True
                )
                log.info("reporter connected")
                return
            except Exception as error:  # noqa: BLE001  # the ingest app may still be starting
                log.warning("reporter not connected yet", error=repr(error)[:200])
                await asyncio.sleep(1.0)

    def _db(self) -> asyncpg.Pool:
        if self._pool is None:
            raise NotReady("the reporter is still connecting to PostgreSQL")
        return self._pool

    @api.get("/events/{event_id:path}", dependencies=_LOCKED, responses=_MISSING)
    async def event(self, event_id: str) -> Response:
        """One stored event with its trace: correlation id, received and stored times."""
        with metrics.report("event"):
            # PostgreSQL text cannot hold NUL, so no stored eventId has one (and asking
            # the database would be an error, not a miss).
            row = None
            if "\x00" not in event_id:
                async with self._db().acquire() as conn:
                    row = await storage.fetch_event(conn, event_id)
        if row is None:
            raise NotFound(f"no stored event with eventId {event_id!r}")
        body = (
            b'{"event":'
            + storage.event_json(row)
            + b',"correlationId":'
            + orjson.dumps(row["correlation_id"])
            + b',"receivedAt":'
            + orjson.dumps(reports.iso_utc(row["received_at"]))
            + b',"storedAt":'
            # null for a row written by hand, without its message's `deliveries` row
            + orjson.dumps(row["stored_at"] and reports.iso_utc(row["stored_at"]))
            + b"}"
        )
        return Response(body, media_type="application/json")

    @api.get("/events", dependencies=_LOCKED, responses=_REFUSED)
    async def events(
        self,
        start: FromParam = None,
        end: ToParam = None,
        source: SourceParam = None,
        funnel_stage: StageParam = None,
        event_type: TypeParam = None,
        interval: IntervalParam = None,
    ) -> Response:
        """Event counts: exact total, breakdown by source/stage/type, optional series."""
        filters = reports.event_filters(start, end, source, funnel_stage, event_type)
        bucket = reports.interval_param(interval)
        with metrics.report("events"):
            async with self._db().acquire() as conn:
                breakdown = await storage.event_breakdown(conn, filters)
                series = await storage.event_series(conn, filters, bucket) if bucket else None
        answer: dict[str, Any] = {
            "filters": reports.filters_echo(filters, bucket),
            "total": sum(r["count"] for r in breakdown),
            "breakdown": [
                {
                    "source": r["source"],
                    "funnelStage": r["funnel_stage"],
                    "eventType": r["event_type"],
                    "count": r["count"],
                }
                for r in breakdown
            ],
        }
        if series is not None:
            answer["series"] = [
                {"bucket": reports.iso_utc(r["bucket"].replace(tzinfo=UTC)), "count": r["count"]}
                for r in series
            ]
        return http.json_response(answer)

    @api.get("/revenue", dependencies=_LOCKED, responses=_REFUSED)
    async def revenue(
        self,
        start: FromParam = None,
        end: ToParam = None,
        source: SourceParam = None,
        campaign_id: CampaignParam = None,
        interval: IntervalParam = None,
    ) -> Response:
        """Exact revenue (two-decimal strings) by source and campaign, optional series."""
        filters = reports.revenue_filters(start, end, source, campaign_id)
        bucket = reports.interval_param(interval)
        with metrics.report("revenue"):
            async with self._db().acquire() as conn:
                groups = await storage.revenue_groups(conn, filters)
                series = await storage.revenue_series(conn, filters, bucket) if bucket else None
        return http.json_response(reports.revenue_answer(filters, groups, series, bucket))

    @api.get("/demographics", dependencies=_LOCKED, responses=_REFUSED)
    async def demographics(
        self, start: FromParam = None, end: ToParam = None, source: SourceParam = None
    ) -> Response:
        """Distinct users in range by their latest attributes; one source's section if asked."""
        filters = reports.event_filters(start, end, source, None, None)
        answer: dict[str, Any] = {"filters": reports.filters_echo(filters)}
        for name in ("funnelStage", "eventType"):
            answer["filters"].pop(name)
        with metrics.report("demographics"):
            found = await storage.demographics(self._db(), filters, source)
        if found.facebook is not None:
            answer["facebook"] = reports.facebook_section(found.facebook)
        if found.tiktok_followers is not None and found.tiktok_engagement is not None:
            answer["tiktok"] = reports.tiktok_section(
                found.tiktok_followers, found.tiktok_engagement
            )
        return http.json_response(answer)

    @api.get("/rejected", dependencies=_LOCKED, responses=_REFUSED)
    async def rejected(
        self,
        start: Annotated[
            str | None, Query(alias="from", description="Received at or after (ISO-8601)")
        ] = None,
        end: Annotated[
            str | None, Query(alias="to", description="Received before (ISO-8601)")
        ] = None,
        limit: Annotated[int, Query(ge=0, le=1000, description="How many samples")] = 20,
    ) -> Response:
        """Rejected events kept for inspection and replay: totals by reason and by replay
        state, the newest samples with theirs."""
        filters = reports.event_filters(start, end, None, None, None)
        echo = reports.filters_echo(filters)
        with metrics.report("rejected"):
            async with self._db().acquire() as conn:
                found = await storage.rejected_summary(conn, filters, reasons=100, samples=limit)
        body = (
            b'{"filters":'
            + orjson.dumps({"from": echo["from"], "to": echo["to"]})
            + b',"total":'
            + orjson.dumps(found.total)
            + b',"replay":'
            + orjson.dumps({"replayed": found.replayed, "notReplayed": found.not_replayed})
            + b',"byReason":'
            + orjson.dumps([dict(r) for r in found.by_reason])
            + b',"samples":['
            + b",".join(
                b'{"receivedAt":'
                + orjson.dumps(reports.iso_utc(r["received_at"]))
                + b',"reason":'
                + orjson.dumps(r["reason"])
                + b',"correlationId":'
                + orjson.dumps(r["correlation_id"])
                + b',"replay":'
                + orjson.dumps(reports.replay_state(r))
                + b',"payload":'
                + (r["payload"] or "null").encode()
                + b"}"
                for r in found.samples
            )
            + b"]}"
        )
        return Response(body, media_type="application/json")

    # The viewer's files carry no data: they load without a key, and the page asks for one
    # when a report needs it. Left out of the OpenAPI document, which describes the API.
    @api.get("/ui", include_in_schema=False)
    async def viewer(self) -> Response:
        """The report viewer's page."""
        return _asset("index.html")

    @api.get("/ui/", include_in_schema=False)
    async def viewer_slash(self) -> Response:
        """The page's relative links assume no trailing slash."""
        return RedirectResponse("../ui", status_code=308)

    @api.get("/ui/{name}", include_in_schema=False)
    async def viewer_file(self, name: str) -> Response:
        """The page's script and style sheet."""
        if name == "index.html":  # the page only works at /ui, where its links resolve
            return RedirectResponse("../ui", status_code=308)
        return _asset(name)

    @api.get("/health/live")
    async def live(self) -> dict[str, str]:
        """200 while the process serves."""
        return {"status": "live"}

    @api.get("/health/ready")
    async def ready(self) -> Response:
        """200 when PostgreSQL answers."""
        ok = False
        if self._pool is not None:
            with contextlib.suppress(Exception):
                ok = await asyncio.wait_for(self._pool.fetchval("SELECT 1"), 5) == 1
        body = {"status": "ready" if ok else "not_ready", "components": {"postgres": {"ok": ok}}}
        return http.json_response(body, 200 if ok else 503)

    def check_health(self) -> None:
        """The connect loop never gives up; a crash of it is the only unhealthy state."""
        if self._connecting.done() and self._connecting.exception() is not None:
            raise RuntimeError("reporter connect task failed")
