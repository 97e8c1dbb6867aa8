"""The gateway replica's own scheduling of a POST's work, outside Serve (SPEC §4, §8).

The replica is built from its class with a supervisor that never answers, so it stays
"connecting to NATS": every POST is prepared in full, then answered 503 with nothing claimed.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, cast

import orjson
import pytest
from starlette.requests import Request

from adfunnel import ingest
from adfunnel.gateway import Gateway
from adfunnel.settings import Settings
from adfunnel.tools.generator import Generator


class _Endpoints:
    async def remote(self) -> Any:
        await asyncio.Event().wait()


class _SilentSupervisor:
    """A supervisor handle whose endpoints never come: the replica never connects."""

    endpoints = _Endpoints()


def _post(body: bytes) -> Request:
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/webhook",
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
    }
    return Request(scope, receive)


def _replica(settings: Settings) -> Any:
    # At run time `Gateway` is the Deployment, whose class `serve.ingress` subclassed (with
    # an async constructor) from the one the module wrote.
    written = cast(Any, Gateway).func_or_class.__mro__[1]
    assert written.__module__ == "adfunnel.gateway"
    return written(settings, _SilentSupervisor())


async def test_bodies_are_prepared_one_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    replica = _replica(Settings(gateway_concurrent_posts=4))
    lock = threading.Lock()
    running = peak = calls = 0

    def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal running, peak, calls
        with lock:
            running, calls = running + 1, calls + 1
            peak = max(peak, running)
        try:
            time.sleep(0.05)  # long enough for the other POSTs to be waiting
            return ingest.prepare(*args, **kwargs)
        finally:
            with lock:
                running -= 1

    # `serve.ingress` made its own copy of the class, whose methods read their own globals.
    monkeypatch.setitem(replica._accept.__globals__, "prepare", counted)
    body = orjson.dumps(Generator(seed=3).batch(200))
    answers = await asyncio.gather(
        *(replica.webhook(_post(body)) for _ in range(4)),
    )
    assert calls == 4
    assert peak == 1
    assert [answer.status_code for answer in answers] == [503] * 4
    replica._connecting.cancel()
