"""The consumer's policy: redelivery delays, and how a batch is gathered (against real NATS,
without Ray; faults: test_poison, test_chaos)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest
from nats.js import JetStreamContext

from actors.consumer import backoff_s, gather
from adfunnel.bus import HEADER_COUNT, message_events
from adfunnel.settings import Settings


def test_redelivery_delays_double_from_half_a_second_up_to_thirty() -> None:
    delays = [backoff_s(n) for n in range(1, 10)]
    assert delays[:4] == [0.5, 1.0, 2.0, 4.0]
    assert delays == sorted(delays)  # never shorter than the one before
    assert max(delays) == 30.0 == backoff_s(1_000)
    assert backoff_s(0) == 0.5  # a first delivery that failed


# -- gathering a batch (real NATS) ----------------------------------------------------------


@pytest.fixture
async def pull(servers: Any) -> AsyncIterator[tuple[JetStreamContext, str, Any]]:
    """A throwaway stream with a durable pull consumer; yields (js, subject, subscription)."""
    name = f"GATHER_{uuid.uuid4().hex[:8]}"
    nc = await nats.connect(servers.nats_url)
    js = nc.jetstream()
    await js.add_stream(name=name, subjects=[f"{name}.>"])
    sub = await js.pull_subscribe(f"{name}.x", durable="d", stream=name)
    try:
        yield js, f"{name}.x", sub
    finally:
        await js.delete_stream(name)
        await nc.close()


async def publish(js: JetStreamContext, subject: str, n: int, events: int = 100) -> None:
    for _ in range(n):
        await js.publish(subject, b"x", headers={HEADER_COUNT: str(events)})


def linger(seconds: float, target: int) -> Settings:
    return Settings(batch_linger_s=seconds, batch_target_events=target, fetch_batch_messages=16)


async def test_a_small_fetch_waits_out_the_linger_for_more(pull: Any) -> None:
    js, subject, sub = pull
    await publish(js, subject, 2)
    first = await sub.fetch(16, timeout=1)

    async def later() -> None:
        await asyncio.sleep(0.2)
        await publish(js, subject, 3)

    started = time.monotonic()
    _, batch = await asyncio.gather(later(), gather(sub, first, linger(1.0, 10_000)))
    assert len(batch) == 5
    assert 0.9 <= time.monotonic() - started < 3  # nothing more came: it waited the linger out


async def test_a_batch_stops_gathering_at_its_target(pull: Any) -> None:
    js, subject, sub = pull
    await publish(js, subject, 1)
    first = await sub.fetch(16, timeout=1)
    await publish(js, subject, 3, events=5_000)
    started = time.monotonic()
    batch = await gather(sub, first, linger(10.0, 10_000))
    assert time.monotonic() - started < 5  # the target, not the ten-second linger
    assert sum(message_events(m.headers) for m in batch) >= 10_000


async def test_no_linger_writes_what_the_first_fetch_found(pull: Any) -> None:
    js, subject, sub = pull
    await publish(js, subject, 2)
    first = await sub.fetch(16, timeout=1)
    await publish(js, subject, 2)
    assert len(await gather(sub, list(first), linger(0.0, 10_000))) == len(first)


def test_a_message_without_a_count_counts_as_one_event() -> None:
    assert message_events(None) == message_events({}) == message_events({HEADER_COUNT: "x"}) == 1
    assert message_events({HEADER_COUNT: "250"}) == 250
