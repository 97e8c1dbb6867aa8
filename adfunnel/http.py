"""What the gateway and reporter share over HTTP: correlation ids and the error shape (SPEC §4).

Every response carries `x-correlation-id` (the caller's when it is sane, else a new one).
Every error is `{"error", "message", "details"}`; a 5xx never carries a trace.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import orjson
import structlog
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from adfunnel import metrics
from adfunnel.errors import NotReady, RequestError

CORRELATION_HEADER = "x-correlation-id"
_SANE_ID = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")

log = structlog.get_logger(component="http")


class ErrorBody(BaseModel):
    """The body of every 4xx/5xx answer."""

    error: str
    message: str
    details: list[Any] = []


def json_response(
    body: Any, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """A JSON response serialized with orjson (big batches answer with big error lists)."""
    return Response(orjson.dumps(body), status_code, headers, media_type="application/json")


def error_response(
    status_code: int,
    code: str,
    message: str,
    details: list[Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """The SPEC §4 error shape."""
    body = {"error": code, "message": message, "details": details or []}
    return json_response(body, status_code, headers)


def correlation_id(request: Request) -> str:
    """The request's correlation id, set by `CorrelationIdMiddleware`."""
    return str(request.scope.get("state", {}).get("correlation_id") or uuid.uuid4())


class CorrelationIdMiddleware:
    """Pure ASGI middleware: no body buffering, so 25 MB webhook bodies stream through.

    It also counts every answer by status: the one place that sees all of them, errors
    raised before a route runs included.
    """

    def __init__(self, app: ASGIApp, name: str) -> None:
        self.app = app
        self.name = name

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = (
            dict(scope.get("headers") or []).get(CORRELATION_HEADER.encode(), b"").decode("latin-1")
        )
        cid = given if _SANE_ID.fullmatch(given) else str(uuid.uuid4())
        scope.setdefault("state", {})["correlation_id"] = cid

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                metrics.http_response(self.name, message["status"])
                headers = [
                    (k, v)
                    for k, v in message.get("headers", [])
                    if k != CORRELATION_HEADER.encode()
                ]
                headers.append((CORRELATION_HEADER.encode(), cid.encode()))
                message["headers"] = headers
            await send(message)

        with structlog.contextvars.bound_contextvars(correlation_id=cid):
            await self.app(scope, receive, send_with_id)


def install(app: FastAPI, name: str) -> None:
    """Correlation ids, the error shape and status counts for every route and failure."""
    app.add_middleware(CorrelationIdMiddleware, name=name)

    @app.exception_handler(RequestError)
    async def request_error(request: Request, exc: RequestError) -> Response:
        return error_response(exc.status_code, exc.code, exc.message, exc.details, exc.headers)

    @app.exception_handler(NotReady)
    async def not_ready(request: Request, exc: NotReady) -> Response:
        return error_response(503, "not_ready", str(exc), headers={"Retry-After": "2"})

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        details = [
            {
                "parameter": ".".join(str(p) for p in e["loc"][1:]) or str(e["loc"][0]),
                "message": e["msg"],
            }
            for e in exc.errors()
        ]
        names = ", ".join(d["parameter"] for d in details)
        return error_response(400, "invalid_parameter", f"invalid parameter: {names}", details)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = "not_found" if exc.status_code == 404 else "http_error"
        return error_response(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.error("unhandled error", error=repr(exc), path=request.url.path)
        return error_response(500, "internal_error", "internal error; see the server logs")
