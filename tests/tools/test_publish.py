"""The publisher simulator: its batches against the project's own schema, and its accounting
against a small real HTTP server (uvicorn on 127.0.0.1) that triages bodies like the gateway.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
import uvicorn

from adfunnel import cli
from adfunnel.errors import BadSignature
from adfunnel.ingest import SIGNATURE_HEADER, parse_body, triage, verify_signature
from adfunnel.schema import EVENT_TYPES, Accepted, Rejected, validate_event
from adfunnel.tools.generator import Generator
from adfunnel.tools.publish import (
    BatchMaker,
    Progress,
    PublishOptions,
    PublishSummary,
    add_arguments,
    options_from_args,
    publish,
)
from adfunnel.tools.stats import percentile

NOW = datetime(2026, 11, 27, 10, 0, 0, 123000, tzinfo=UTC)

Message = dict[str, Any]


def options(**overrides: Any) -> PublishOptions:
    """Small, fast, reproducible options; every anomaly present."""
    values: dict[str, Any] = {
        "min_batch": 100,
        "max_batch": 300,
        "interval_s": 0.0,
        "duplicate_share": 0.05,
        "out_of_order_share": 0.05,
        "invalid_share": 0.05,
        "seed": 1,
        "count": 1_000,
    }
    return PublishOptions(**(values | overrides))


def events_of(body: bytes) -> list[dict[str, Any]]:
    decoded: list[dict[str, Any]] = orjson.loads(body)
    return decoded


# -- batches -------------------------------------------------------------------------------


def test_valid_events_pass_the_schema_and_invalid_ones_are_rejected() -> None:
    maker = BatchMaker(options(invalid_share=0.03), clock=lambda: NOW)
    batch = maker.make(3_000)
    events = events_of(batch.body)
    valid_ids = set(batch.valid_ids)
    results = [validate_event(event) for event in events]
    accepted = [r for r in results if isinstance(r, Accepted)]
    rejected = [r for r in results if isinstance(r, Rejected)]
    assert len(events) == batch.events == 3_000
    assert len(accepted) == batch.valid == 3_000 - 90
    assert len(rejected) == 90
    # The ids the simulator calls valid are exactly those of the events the schema accepts.
    assert {r.event_id for r in accepted} == valid_ids
    assert not {r.event_id for r in rejected} & valid_ids
    every_type = {(s, t) for s, stages in EVENT_TYPES.items() for ts in stages.values() for t in ts}
    assert {(r.source, r.event_type) for r in accepted} == every_type


def test_every_corruption_field_shows_up_in_the_rejections() -> None:
    batch = BatchMaker(options(invalid_share=0.2)).make(2_000)
    reasons = {
        r.reason.split(":")[0]
        for r in map(validate_event, events_of(batch.body))
        if isinstance(r, Rejected)
    }
    # One field per corruption kind of the real publisher (SPEC §3).
    assert {
        "timestamp",
        "eventId",
        "data.user",
        "data.user.name",
        "data.engagement.adId",
        "funnelStage",
        "eventType",
        "data.engagement.actionTime",
        "data.engagement.watchTime",
        "data.user.gender",
        "data.user.followers",
    } <= reasons


def test_duplicates_repeat_earlier_events_exactly_as_configured() -> None:
    maker = BatchMaker(options(duplicate_share=0.1))
    first_seen: dict[str, dict[str, Any]] = {}
    cross_post = 0
    for index in range(4):
        batch = maker.make(500)
        repeats = 0
        in_this_batch: set[str] = set()
        for event in events_of(batch.body):
            event_id = event.get("eventId")
            if not isinstance(event_id, str) or event_id not in batch.valid_ids:
                continue  # invalid events have fresh ids (or none)
            if event_id in first_seen:
                repeats += 1
                assert event == first_seen[event_id]  # a re-send is the same event
                cross_post += event_id not in in_this_batch
            else:
                first_seen[event_id] = event
            in_this_batch.add(event_id)
        assert repeats == 50, index
    # Some repeats re-send an event of an earlier POST, as another sender's retry would.
    assert cross_post > 0


def test_out_of_order_share_is_exact_and_the_rest_is_fresh() -> None:
    share = 0.08
    maker = BatchMaker(options(out_of_order_share=share, invalid_share=0.0), clock=lambda: NOW)
    batch = maker.make(1_000)
    firsts = {event["eventId"]: event for event in reversed(events_of(batch.body))}
    ages = [NOW - datetime.fromisoformat(e["timestamp"]) for e in firsts.values()]
    assert sum(age >= timedelta(minutes=1) for age in ages) == 80
    assert all(age <= timedelta(seconds=1) for age in ages if age < timedelta(minutes=1))


def test_the_same_seed_sends_the_same_batches() -> None:
    def ids(seed: int) -> list[tuple[int, tuple[str, ...]]]:
        maker = BatchMaker(options(seed=seed, count=None))
        return [(b.events, b.valid_ids) for b in (maker.next() for _ in range(3)) if b]

    assert ids(7) == ids(7)
    assert ids(7) != ids(8)


def test_count_cuts_the_last_batch() -> None:
    maker = BatchMaker(options(min_batch=1_000, max_batch=1_000, count=2_500))
    sizes = [batch.events for batch in iter(maker.next, None)]
    assert sizes == [1_000, 1_000, 500]


@pytest.mark.parametrize("n", range(1, 25))
def test_shares_fit_tiny_batches(n: int) -> None:
    maker = BatchMaker(options(duplicate_share=0.5, out_of_order_share=0.3, invalid_share=0.2))
    assert len(events_of(maker.make(n).body)) == n


def test_the_signature_verifies_with_the_gateways_check() -> None:
    batch = BatchMaker(options(secret="s3cret")).make(50)
    header = batch.headers()[SIGNATURE_HEADER]
    verify_signature("s3cret", batch.body, header)
    with pytest.raises(BadSignature):
        verify_signature("other", batch.body, header)
    assert SIGNATURE_HEADER not in BatchMaker(options()).make(50).headers()


@pytest.mark.parametrize(
    "bad",
    [
        {"endpoint": "ftp://example.org/webhook"},
        {"endpoint": "http://[::1"},
        {"min_batch": 0},
        {"min_batch": 10, "max_batch": 5},
        {"duplicate_share": 1.5},
        {"duplicate_share": 0.5, "invalid_share": 0.6},
        {"rate": 0},
        {"interval_s": -1},
        {"concurrency": 0},
        {"count": 0},
    ],
)
def test_options_refuse_bad_values(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        options(**bad)


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0], 99) == 3.0
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0


async def test_an_unreadable_2xx_answer_is_a_failed_post() -> None:
    # Unit-level: only the reading of answers, so a mock transport is enough here.
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(202, content=b"accepted, probably")

    summary = await publish(options(count=500), transport=httpx.MockTransport(answer))
    assert summary.failed_posts == len(summary.posts) > 0
    assert all(post.status == 202 and post.failure == "HTTP 202" for post in summary.posts)
    assert summary.accepted_ids() == set()
    assert summary.exit_code == 1


# -- users ---------------------------------------------------------------------------------


def user_key(event: dict[str, Any]) -> tuple[str, str]:
    return event["source"], event["data"]["user"]["userId"]


def reuse_share(events: list[dict[str, Any]]) -> float:
    """Share of events whose user (per source) appeared in an earlier event."""
    seen: set[tuple[str, str]] = set()
    reused = 0
    for event in events:
        key = user_key(event)
        reused += key in seen
        seen.add(key)
    return reused / len(events)


def generated(n: int, seed: int = 1, **mix: Any) -> list[dict[str, Any]]:
    generator = Generator(seed, clock=lambda: NOW, **mix)
    return [generator.event() for _ in range(n)]


def busiest(events: list[dict[str, Any]], source: str, top: int) -> tuple[set[str], float]:
    """The `top` userIds of `source` with the most events, and their share of its events."""
    counts = Counter(user_key(e)[1] for e in events if e["source"] == source)
    heavy = counts.most_common(top)
    return {user_id for user_id, _ in heavy}, sum(n for _, n in heavy) / counts.total()


@pytest.mark.parametrize("share", [0.0, 0.3, 0.8])
def test_returning_share_is_the_share_of_events_reusing_a_recent_user(share: float) -> None:
    events = generated(20_000, returning_share=share)
    assert reuse_share(events) == pytest.approx(share, abs=0.02)
    # Recent: a returning user is one of the last 500 new users of its source.
    new_users: dict[tuple[str, str], int] = {}
    new_count = Counter[str]()
    for event in events:
        key = user_key(event)
        if key in new_users:
            assert new_users[key] >= new_count[key[0]] - 500
        else:
            new_users[key] = new_count[key[0]]
            new_count[key[0]] += 1


def test_a_returning_user_keeps_its_attributes_and_its_followers_move_a_little() -> None:
    users: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for event in generated(10_000, returning_share=0.5):
        users.setdefault(user_key(event), []).append(event["data"]["user"])
    facebook = [seen for (source, _), seen in users.items() if source == "facebook"]
    tiktok = [seen for (source, _), seen in users.items() if source == "tiktok"]
    assert all(all(user == seen[0] for user in seen) for seen in facebook)
    for seen in tiktok:
        assert {user["username"] for user in seen} == {seen[0]["username"]}
        assert all(abs(user["followers"] - seen[0]["followers"]) <= 500 for user in seen)


def test_the_publishers_batches_mix_users_as_configured() -> None:
    # No re-sent or corrupted events: they would reuse users too.
    plain = {"duplicate_share": 0.0, "invalid_share": 0.0}
    maker = BatchMaker(options(**plain, returning_share=0.3), clock=lambda: NOW)
    events = events_of(maker.make(20_000).body)
    assert reuse_share(events) == pytest.approx(0.3, abs=0.02)

    maker = BatchMaker(options(**plain, returning_share=0.0, hot_users=600), clock=lambda: NOW)
    events = events_of(maker.make(24_000).body)
    for source in ("facebook", "tiktok"):
        _, share = busiest(events, source, 600)
        assert share == pytest.approx(0.5, abs=0.02), source  # the default hot_share


@pytest.mark.parametrize("hot_share", [0.5, 0.2])
def test_hot_users_carry_their_share_of_events(hot_share: float) -> None:
    # Without returning users every other user has exactly one event: the users seen
    # twice or more are the hot ones.
    events = generated(24_000, hot_users=600, hot_share=hot_share, returning_share=0.0)
    for source in ("facebook", "tiktok"):
        counts = Counter(user_key(e)[1] for e in events if e["source"] == source)
        hot = {user_id for user_id, n in counts.items() if n > 1}
        assert len(hot) <= 600, source
        share = sum(counts[user_id] for user_id in hot) / counts.total()
        assert share == pytest.approx(hot_share, abs=0.02), source


def test_hot_users_are_fixed_per_seed_and_mix_with_returning_ones() -> None:
    events = generated(24_000, seed=5, hot_users=600, returning_share=0.3)
    again = generated(24_000, seed=5, hot_users=600, returning_share=0.3)
    other = generated(24_000, seed=6, hot_users=600, returning_share=0.3)
    assert events == again
    for source in ("facebook", "tiktok"):
        hot, share = busiest(events, source, 600)
        assert share == pytest.approx(0.5, abs=0.02), source
        assert busiest(again, source, 600)[0] == hot
        assert not busiest(other, source, 600)[0] & hot
    # Hot (after each one's first event) and returning events both reuse a user.
    assert reuse_share(events) == pytest.approx(0.5 + 0.3 - 1_200 / 24_000, abs=0.02)


def test_a_hot_users_attributes_drift_only_where_a_real_ones_would() -> None:
    users: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for event in generated(20_000, hot_users=100, hot_share=0.9):
        users.setdefault(user_key(event), []).append(event["data"]["user"])
    hot = {key: seen for key, seen in users.items() if len(seen) > 20}
    assert len(hot) == 200
    moved = 0
    for (source, _), seen in hot.items():
        first = seen[0]
        if source == "facebook":
            assert all(user == first for user in seen)  # age, gender, city: constant
            continue
        assert {user["username"] for user in seen} == {first["username"]}
        followers = [user["followers"] for user in seen]
        moved += len(set(followers)) > 1
        # Near where it started after ~90 events: a drift, not a walk off to millions.
        assert all(abs(n - first["followers"]) <= 20 + first["followers"] // 20 for n in followers)
    assert moved >= 90


def test_the_default_user_mix_is_the_publishers_own() -> None:
    defaults = PublishOptions()
    assert (defaults.returning_share, defaults.hot_users, defaults.hot_share) == (0.02, 0, None)
    events = generated(20_000)
    # Nearly every user is new, and none is hot.
    assert reuse_share(events) == pytest.approx(0.02, abs=0.005)
    assert max(Counter(map(user_key, events)).values()) <= 4
    # The explicit defaults are the defaults: the same seed gives the same events.
    explicit: dict[str, Any] = {"returning_share": 0.02, "hot_users": 0, "hot_share": None}
    assert generated(2_000, **explicit) == generated(2_000)


@pytest.mark.parametrize(
    ("bad", "named"),
    [
        ({"returning_share": -0.1}, "returning_share"),
        ({"returning_share": 1.5}, "returning_share"),
        ({"returning_share": float("nan")}, "returning_share"),
        ({"hot_users": -1}, "hot_users"),
        ({"hot_users": 2.5}, "hot_users"),
        ({"hot_users": 600, "hot_share": 1.2}, "hot_share"),
        ({"hot_share": 0.5}, "hot_share 0.5 needs hot_users > 0"),
        ({"hot_users": 600, "returning_share": 0.6}, "add up to more than 1"),
    ],
)
def test_a_bad_user_mix_is_refused_naming_the_value(bad: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        options(**bad)
    with pytest.raises(ValueError, match=named):
        Generator(1, **bad)


def parsed(*argv: str) -> PublishOptions:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return options_from_args(parser.parse_args(argv), env={})


def test_the_cli_flags_set_the_user_mix(capsys: pytest.CaptureFixture[str]) -> None:
    assert (parsed().returning_share, parsed().hot_users, parsed().hot_share) == (0.02, 0, None)
    mixed = parsed("--returning", "0.3", "--hot-users", "600", "--hot-share", "0.4")
    assert (mixed.returning_share, mixed.hot_users, mixed.hot_share) == (0.3, 600, 0.4)
    assert parsed("--hot-users", "600").hot_share is None  # the generator's 0.5
    assert cli.main(["publish", "--hot-share", "0.5", "--quiet"]) == 2
    assert "hot_share 0.5 needs hot_users > 0" in capsys.readouterr().err


# -- against a real HTTP server ------------------------------------------------------------


@dataclass
class Answer:
    """What the test gateway answered to one request."""

    status: int
    events: int
    accepted_ids: set[str] = field(default_factory=set)
    correlation_id: str = ""


class StubGateway:
    """An ASGI app that triages bodies with the gateway's own functions, without the bus."""

    def __init__(self) -> None:
        self.reset()

    def reset(self, *, secret: str | None = None, fail_every: int = 0, gate: int = 0) -> None:
        """Fresh state: `fail_every` answers every n-th request 503; `gate` holds each
        answer until that many requests arrived (proof that POSTs overlap)."""
        self.secret = secret
        self.fail_every = fail_every
        self.gate = gate
        self.gate_opened = asyncio.Event()
        self.answers: list[Answer] = []
        self.seen: set[str] = set()
        self.arrived = 0
        self.in_flight = 0
        self.max_in_flight = 0

    async def __call__(
        self,
        scope: Message,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.arrived += 1
        number = self.arrived  # this request's own; `arrived` moves on while it waits
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.gate:
                if self.arrived >= self.gate:
                    self.gate_opened.set()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.gate_opened.wait(), 10)
            else:
                await asyncio.sleep(0.01)  # lets requests overlap
            status, answer = self.answer(scope, body, number)
        finally:
            self.in_flight -= 1
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")]
                + ([(b"retry-after", b"2")] if status == 503 else []),
            }
        )
        await send({"type": "http.response.body", "body": orjson.dumps(answer)})

    def answer(self, scope: Message, body: bytes, number: int) -> tuple[int, dict[str, Any]]:
        items = parse_body(body, 50_000)
        if self.secret is not None:
            headers = {k.decode(): v.decode() for k, v in scope["headers"]}
            try:
                verify_signature(self.secret, body, headers.get(SIGNATURE_HEADER))
            except BadSignature as error:
                self.answers.append(Answer(401, len(items)))
                return 401, {"error": error.code, "message": error.message, "details": []}
        if self.fail_every and number % self.fail_every == 0:
            self.answers.append(Answer(503, len(items)))
            return 503, {"error": "bus_unavailable", "message": "try later", "details": []}
        sorted_out = triage(items)
        ids = {item.event_id for item in sorted_out.accepted}
        cid = f"cid-{number}"
        self.answers.append(Answer(202, len(items), ids, cid))
        duplicates = sorted_out.repeated + len(ids & self.seen)
        self.seen |= ids
        return 202, {
            "accepted": sorted_out.accepted_count,
            "duplicates": duplicates,
            "rejected": len(sorted_out.rejected),
            "errors": [],
            "correlationId": cid,
        }


@dataclass
class LocalServer:
    """uvicorn serving the test gateway in its own thread and event loop."""

    app: StubGateway
    url: str


@pytest.fixture(scope="module")
def local_server() -> Iterator[LocalServer]:
    app = StubGateway()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])))
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield LocalServer(app, f"http://127.0.0.1:{port}/webhook")
    server.should_exit = True
    thread.join(30)
    sock.close()


@pytest.fixture
def gateway(local_server: LocalServer) -> LocalServer:
    local_server.app.reset()
    return local_server


def check_accounting(summary: PublishSummary, answers: list[Answer]) -> None:
    """The summary says what the server answered, POST by POST."""
    assert [post.index for post in summary.posts] == list(range(len(answers)))
    assert summary.sent == sum(answer.events for answer in answers)
    assert summary.failed_posts == sum(answer.status != 202 for answer in answers)
    ok = [answer for answer in answers if answer.status == 202]
    assert summary.accepted_ids() == set().union(*(answer.accepted_ids for answer in ok))
    assert {p.correlation_id for p in summary.posts if p.ok} == {a.correlation_id for a in ok}
    for post in summary.posts:
        if not post.ok:
            assert (post.accepted, post.duplicates, post.rejected, post.event_ids) == (0, 0, 0, ())
        else:
            assert post.status == 202
            # The server's triage agrees with the simulator on what is valid.
            assert (post.accepted, post.rejected) == (post.valid, post.events - post.valid)


async def test_failed_posts_are_counted_and_their_events_not_accepted(
    gateway: LocalServer,
) -> None:
    gateway.app.reset(fail_every=3)
    progress: list[Progress] = []
    summary = await publish(
        options(endpoint=gateway.url, count=3_000, concurrency=3), on_progress=progress.append
    )
    assert summary.sent == 3_000
    assert summary.failed_posts >= 1
    assert summary.exit_code == 1
    failed = [post for post in summary.posts if not post.ok]
    assert all(post.status == 503 and post.failure == "HTTP 503" for post in failed)
    assert summary.refused_posts == summary.failed_posts  # each said when to come back
    assert {post.retry_after for post in failed} == {"2"}
    check_accounting(summary, gateway.app.answers)
    assert summary.accepted == sum(post.valid for post in summary.posts if post.ok)
    assert summary.duplicates > 0
    last = progress[-1]
    assert (last.posts_answered, last.events_sent) == (len(summary.posts), 3_000)
    assert last.failed_posts == summary.failed_posts


async def test_a_signed_run_is_all_accepted_and_exits_zero(gateway: LocalServer) -> None:
    gateway.app.reset(secret="s3cret")
    summary = await publish(options(endpoint=gateway.url, secret="s3cret"))
    assert summary.exit_code == 0
    assert summary.sent == 1_000
    assert summary.rejected == sum(post.events - post.valid for post in summary.posts) > 0
    assert summary.latency_s(50) is not None
    check_accounting(summary, gateway.app.answers)


async def test_a_wrong_signature_fails_every_post(gateway: LocalServer) -> None:
    gateway.app.reset(secret="s3cret")
    summary = await publish(options(endpoint=gateway.url, secret="wrong"))
    assert summary.failed_posts == len(summary.posts) > 0
    assert summary.accepted_ids() == set()
    assert all(post.error and "bad_signature" in post.error for post in summary.posts)
    assert summary.latency_s(50) is None


async def test_a_transport_error_is_a_failed_post_never_retried() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    summary = await publish(
        options(endpoint=f"http://127.0.0.1:{port}/webhook", min_batch=100, max_batch=100)
    )
    assert len(summary.posts) == 10  # one attempt per batch
    assert all(p.status is None and p.failure == "ConnectError" for p in summary.posts)
    assert summary.exit_code == 1
    assert summary.accepted == 0


async def test_posts_overlap_up_to_the_concurrency(gateway: LocalServer) -> None:
    # Every answer waits until 3 requests arrived: that happens only if the publisher sends
    # without waiting for answers.
    gateway.app.reset(gate=3)
    summary = await publish(options(endpoint=gateway.url, count=900, concurrency=3))
    assert gateway.app.gate_opened.is_set()
    assert gateway.app.max_in_flight == 3
    assert summary.exit_code == 0


async def test_in_flight_posts_never_exceed_the_concurrency(gateway: LocalServer) -> None:
    summary = await publish(options(endpoint=gateway.url, count=3_000, concurrency=2))
    assert len(summary.posts) >= 10
    assert gateway.app.max_in_flight <= 2
    check_accounting(summary, gateway.app.answers)


async def test_duration_stops_the_run_and_waits_for_answers(gateway: LocalServer) -> None:
    summary = await publish(
        options(endpoint=gateway.url, count=None, duration_s=0.3, interval_s=0.05)
    )
    assert summary.posts
    check_accounting(summary, gateway.app.answers)


async def test_stop_ends_an_endless_run(gateway: LocalServer) -> None:
    stop = asyncio.Event()

    def on_progress(progress: Progress) -> None:
        if progress.posts_answered >= 3:
            stop.set()

    summary = await publish(
        options(endpoint=gateway.url, count=None, rate=50_000.0),
        on_progress=on_progress,
        stop=stop,
    )
    assert len(summary.posts) >= 3
    check_accounting(summary, gateway.app.answers)


def test_the_cli_prints_the_summary_and_exits_by_outcome(
    gateway: LocalServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EVENT_ENDPOINT", gateway.url)
    monkeypatch.setenv("WEBHOOK_SECRET", "s3cret")
    gateway.app.reset(secret="s3cret")
    argv = ["publish", "--count", "600", "--batch-size", "100-200", "--interval", "0", "--quiet"]
    assert cli.main([*argv, "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "sent         600 events" in out
    assert "failed POSTs 0" in out

    gateway.app.reset(secret="s3cret", fail_every=2)
    assert cli.main(argv) == 1
    assert "x HTTP 503 bus_unavailable" in capsys.readouterr().out

    assert cli.main([*argv, "--duplicates", "2"]) == 2
