"""`adfunnel publish`: a publisher simulator that POSTs generated batches like the real one.

Like `andriiuni/events` (SPEC §3) it starts a POST on a fixed schedule without waiting for the
answers of earlier ones, so slow answers make POSTs overlap, and it never retries: a batch
answered with non-2xx (or lost in transport) is counted as failed and its events as not
accepted. On top it mixes in duplicates, out-of-order timestamps and invalid events, and it
can pace by a target rate or go as fast as the in-flight limit allows.

`publish()` is the library entry point (a benchmark imports it): it reports progress through
a callback and returns a `PublishSummary` with one `PostRecord` per POST. The rich display
and the argparse glue at the bottom only serve the CLI.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from random import Random
from typing import Any

import httpx
import orjson
import rich.progress
from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from adfunnel.ingest import SIGNATURE_HEADER, signature
from adfunnel.tools.generator import DEFAULT_HOT_SHARE, DEFAULT_RETURNING_SHARE, Generator, user_mix
from adfunnel.tools.stats import percentile

DEFAULT_ENDPOINT = "http://127.0.0.1:8000/webhook"
ENDPOINT_ENV = "EVENT_ENDPOINT"
SECRET_ENV = "WEBHOOK_SECRET"

# Share of duplicates that re-send an event of an earlier POST (a retry by another sender)
# rather than repeat one of the same POST: only those test de-duplication across requests.
_CROSS_POST_SHARE = 0.5


@dataclass(frozen=True, slots=True)
class PublishOptions:
    """What to send, where, how fast, and when to stop.

    Pacing: POST k starts `k * interval_s` after the first one (0: as fast as `concurrency`
    allows); with `rate`, it starts when the events sent before it match `rate` events/s
    instead, and `interval_s` is not used. Batch sizes are uniform in [min_batch, max_batch].
    Shares are of the events of each batch (rounded per batch). Without `count` and
    `duration_s` it runs until `stop` is set.

    Users (the generator's, per source): `returning_share` of the events reuse a recent user;
    with `hot_users=N`, `hot_share` of them (None: 0.5) come from a fixed pool of N users.
    """

    endpoint: str = DEFAULT_ENDPOINT
    secret: str | None = None
    rate: float | None = None
    interval_s: float = 1.0
    min_batch: int = 1_000
    max_batch: int = 50_000
    duplicate_share: float = 0.01
    out_of_order_share: float = 0.05
    invalid_share: float = 0.001
    returning_share: float = DEFAULT_RETURNING_SHARE
    hot_users: int = 0
    hot_share: float | None = None
    duration_s: float | None = None
    count: int | None = None
    concurrency: int = 8
    timeout_s: float = 60.0
    seed: int | None = None
    # Off in the CLI: ids of a long run at full rate take gigabytes.
    record_ids: bool = True
    prefetch: int = 2

    def __post_init__(self) -> None:
        try:
            url = httpx.URL(self.endpoint)
        except httpx.InvalidURL:
            url = httpx.URL()
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"endpoint must be an http(s) URL, not {self.endpoint!r}")
        if not 1 <= self.min_batch <= self.max_batch:
            raise ValueError(
                f"batch sizes need 1 <= min <= max, not {self.min_batch}-{self.max_batch}"
            )
        shares = (self.duplicate_share, self.out_of_order_share, self.invalid_share)
        if not all(0.0 <= share <= 1.0 for share in shares) or sum(shares) > 1.0:
            raise ValueError(f"shares must be in [0, 1] and add up to at most 1, not {shares}")
        user_mix(self.returning_share, self.hot_users, self.hot_share)
        positive = {
            "rate": self.rate,
            "duration_s": self.duration_s,
            "count": self.count,
            "concurrency": self.concurrency,
            "timeout_s": self.timeout_s,
            "prefetch": self.prefetch,
        }
        for name, value in positive.items():
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0, not {value!r}")
        if not self.interval_s >= 0:
            raise ValueError(f"interval_s must be >= 0, not {self.interval_s!r}")


@dataclass(frozen=True, slots=True)
class Batch:
    """One POST body, ready to send, and what it holds."""

    index: int
    events: int
    # Events the schema accepts, repeats included: what the 202's `accepted` should say.
    valid: int
    body: bytes
    # Their eventIds, each once.
    valid_ids: tuple[str, ...]
    signature: str | None

    def headers(self) -> dict[str, str]:
        """The request headers: JSON, plus the HMAC signature when there is a secret."""
        headers = {"content-type": "application/json"}
        if self.signature is not None:
            headers[SIGNATURE_HEADER] = self.signature
        return headers


class BatchMaker:
    """Builds POST bodies from `Generator`; not thread-safe, so one batch at a time.

    The same seed gives the same batch sizes, eventIds and contents; timestamps come from
    `clock` (default: wall time).
    """

    def __init__(
        self, options: PublishOptions, *, clock: Callable[[], datetime] | None = None
    ) -> None:
        self._options = options
        self._generator = Generator(
            options.seed,
            clock=clock,
            returning_share=options.returning_share,
            hot_users=options.hot_users,
            hot_share=options.hot_share,
        )
        # Its own stream, so sizes and positions do not shift the generator's sequence.
        self._rng = Random(None if options.seed is None else f"adfunnel.publish:{options.seed}")
        self._previous: list[dict[str, Any]] = []
        self._made = 0
        self._events = 0

    def next(self) -> Batch | None:
        """The next batch of a random size, cut to what `count` leaves; None when done."""
        size = self._rng.randint(self._options.min_batch, self._options.max_batch)
        if self._options.count is not None:
            size = min(size, self._options.count - self._events)
        return self.make(size) if size > 0 else None

    def counts(self, n: int) -> tuple[int, int, int]:
        """Duplicates, out-of-order and invalid events in a batch of `n`."""
        options = self._options
        invalid = min(n, round(n * options.invalid_share))
        late = round(n * options.out_of_order_share)
        duplicates = round(n * options.duplicate_share)
        # Rounding can overfill a tiny batch; duplicates need one original to copy.
        duplicates = max(0, min(duplicates, n - invalid - max(late, 1)))
        late = min(late, n - invalid - duplicates)
        return duplicates, late, invalid

    def make(self, n: int) -> Batch:
        """A batch of exactly `n` events with the configured shares of each anomaly."""
        duplicates, late, invalid = self.counts(n)
        generator, rng = self._generator, self._rng
        rest = n - invalid
        # Exact counts: the generator rounds rest * share, which gives back these integers.
        valid = generator.batch(
            rest,
            duplicate_share=duplicates / rest if rest else 0.0,
            out_of_order_share=late / rest if rest else 0.0,
        )
        if self._previous:
            seen: set[str] = set()
            for index, event in enumerate(valid):
                if event["eventId"] not in seen:
                    seen.add(event["eventId"])
                elif rng.random() < _CROSS_POST_SHARE:
                    valid[index] = rng.choice(self._previous)
        self._previous = valid
        bad = iter([generator.corrupt(generator.event()) for _ in range(invalid)])
        good = iter(valid)
        bad_at = set(rng.sample(range(n), invalid))
        events = [next(bad) if i in bad_at else next(good) for i in range(n)]
        body = orjson.dumps(events)
        secret = self._options.secret
        batch = Batch(
            index=self._made,
            events=n,
            valid=rest,
            body=body,
            valid_ids=tuple(dict.fromkeys(event["eventId"] for event in valid)),
            signature=None if secret is None else signature(secret, body),
        )
        self._made += 1
        self._events += n
        return batch


@dataclass(frozen=True, slots=True)
class PostRecord:
    """What happened to one POST. Counts are the 202 body's; zero when the POST failed."""

    index: int
    events: int
    valid: int
    body_bytes: int
    # Wall clock, to compare with times PostgreSQL records (freshness).
    sent_at: datetime
    # How late the POST started against the schedule (in-flight limit, slow generation).
    lag_s: float
    # Send → answer read; for a transport error, send → error.
    latency_s: float
    status: int | None
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    correlation_id: str | None = None
    error: str | None = None
    # eventIds of the valid events, only for a 2xx POST (and only with `record_ids`).
    event_ids: tuple[str, ...] = ()
    # A refusal's Retry-After header (SPEC §4: every 503 says when to come back).
    retry_after: str | None = None

    @property
    def ok(self) -> bool:
        """A readable 2xx answer: the gateway promised its valid events."""
        return self.error is None

    @property
    def failure(self) -> str | None:
        """A short failure kind for grouping: `HTTP 503`, `ConnectError`, …"""
        if self.error is None:
            return None
        return f"HTTP {self.status}" if self.status is not None else self.error.split(":")[0]


@dataclass
class PublishSummary:
    """A finished run: every POST's record, sorted by index, and the totals."""

    started_at: datetime
    seconds: float = 0.0
    posts: list[PostRecord] = field(default_factory=list)

    @property
    def sent(self) -> int:
        return sum(post.events for post in self.posts)

    @property
    def accepted(self) -> int:
        return sum(post.accepted for post in self.posts)

    @property
    def duplicates(self) -> int:
        return sum(post.duplicates for post in self.posts)

    @property
    def rejected(self) -> int:
        return sum(post.rejected for post in self.posts)

    @property
    def failed_posts(self) -> int:
        return sum(not post.ok for post in self.posts)

    @property
    def refused_posts(self) -> int:
        """Failed POSTs answered 503 with Retry-After: told to come back, nothing claimed."""
        return sum(post.status == 503 and bool(post.retry_after) for post in self.posts)

    @property
    def events_per_s(self) -> float:
        """Events sent per second, from the first POST to the last answer."""
        return self.sent / self.seconds if self.seconds > 0 else 0.0

    def latency_s(self, q: float) -> float | None:
        """Ack latency percentile of the 2xx POSTs."""
        return percentile([post.latency_s for post in self.posts if post.ok], q)

    def accepted_ids(self) -> set[str]:
        """Every eventId a 2xx answer promised (needs `record_ids`)."""
        return {event_id for post in self.posts for event_id in post.event_ids}

    @property
    def exit_code(self) -> int:
        """0 when every POST got a 2xx, else 1."""
        return 1 if self.failed_posts else 0


@dataclass(frozen=True, slots=True)
class Progress:
    """A running count, handed to the progress callback after each send and each answer."""

    elapsed_s: float
    posts_sent: int
    posts_answered: int
    events_sent: int
    accepted: int
    duplicates: int
    rejected: int
    failed_posts: int
    ack_p50_s: float | None
    ack_p99_s: float | None

    @property
    def in_flight(self) -> int:
        return self.posts_sent - self.posts_answered

    @property
    def events_per_s(self) -> float:
        return self.events_sent / self.elapsed_s if self.elapsed_s > 0 else 0.0


def _answered(sent: PostRecord, response: httpx.Response, valid_ids: tuple[str, ...]) -> PostRecord:
    """`sent` completed with what the answer says."""
    try:
        answer: Any = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        answer = None
    if not response.is_success:
        parts = [answer.get("error"), answer.get("message")] if isinstance(answer, dict) else []
        detail = ": ".join(str(part) for part in parts if part) or response.text
        return replace(
            sent,
            error=f"HTTP {response.status_code} {detail}"[:300],
            retry_after=response.headers.get("retry-after"),
        )
    try:
        accepted, duplicates, rejected = (
            int(answer[key]) for key in ("accepted", "duplicates", "rejected")
        )
    except (KeyError, TypeError, ValueError):
        return replace(sent, error=f"unreadable 2xx answer: {response.text[:200]!r}")
    return replace(
        sent,
        accepted=accepted,
        duplicates=duplicates,
        rejected=rejected,
        correlation_id=answer.get("correlationId"),
        event_ids=valid_ids,
    )


async def _produce(
    next_batch: Callable[[], Batch | None], queue: asyncio.Queue[Batch | None]
) -> None:
    # Generating 50,000 events takes most of a second: in a thread, ahead of the schedule.
    while (batch := await asyncio.to_thread(next_batch)) is not None:
        await queue.put(batch)
    await queue.put(None)


class _Run:
    """The schedule and the tallies of one `publish` call."""

    def __init__(
        self,
        options: PublishOptions,
        on_progress: Callable[[Progress], None] | None,
        stop: asyncio.Event,
    ) -> None:
        self.options = options
        self.on_progress = on_progress
        self.stop = stop
        self.summary = PublishSummary(started_at=datetime.now(UTC))
        self.t0: float | None = None
        self.deadline: float | None = None
        self.posts_sent = 0
        self.events_sent = 0
        self.in_flight: set[asyncio.Task[None]] = set()

    def halted(self) -> bool:
        return self.stop.is_set() or (
            self.deadline is not None and time.monotonic() >= self.deadline
        )

    async def _wait(
        self, tasks: set[asyncio.Task[Any]], stopping: asyncio.Task[Any], until: float | None
    ) -> None:
        """Until a task is done, `stop` is set, `until` or the deadline (monotonic) passes."""
        ends = [t for t in (until, self.deadline) if t is not None]
        timeout = max(0.0, min(ends) - time.monotonic()) if ends else None
        await asyncio.wait({*tasks, stopping}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)

    async def _next(
        self,
        queue: asyncio.Queue[Batch | None],
        producer: asyncio.Task[None],
        stopping: asyncio.Task[Any],
    ) -> Batch | None:
        getter = asyncio.ensure_future(queue.get())
        try:
            while not getter.done():
                if self.halted():
                    return None
                if producer.done():
                    producer.result()  # a generation failure surfaces; a normal end queued None
                waiting = {getter} if producer.done() else {getter, producer}
                await self._wait(waiting, stopping, None)
            return getter.result()
        finally:
            getter.cancel()

    def _progress(self) -> None:
        if self.on_progress is None:
            return
        summary = self.summary
        self.on_progress(
            Progress(
                elapsed_s=0.0 if self.t0 is None else time.monotonic() - self.t0,
                posts_sent=self.posts_sent,
                posts_answered=len(summary.posts),
                events_sent=self.events_sent,
                accepted=summary.accepted,
                duplicates=summary.duplicates,
                rejected=summary.rejected,
                failed_posts=summary.failed_posts,
                ack_p50_s=summary.latency_s(50),
                ack_p99_s=summary.latency_s(99),
            )
        )

    async def _post(self, client: httpx.AsyncClient, batch: Batch, lag_s: float) -> None:
        sent = PostRecord(
            index=batch.index,
            events=batch.events,
            valid=batch.valid,
            body_bytes=len(batch.body),
            sent_at=datetime.now(UTC),
            lag_s=lag_s,
            latency_s=0.0,
            status=None,
        )
        started = time.perf_counter()
        try:
            response = await client.post(
                self.options.endpoint, content=batch.body, headers=batch.headers()
            )
        except httpx.HTTPError as error:
            # Never retried, like the real publisher: the batch is lost and counted as failed.
            latency_s = time.perf_counter() - started
            error_text = f"{type(error).__name__}: {error}"[:300]
            record = replace(sent, latency_s=latency_s, error=error_text)
        else:
            sent = replace(
                sent, latency_s=time.perf_counter() - started, status=response.status_code
            )
            ids = batch.valid_ids if self.options.record_ids else ()
            record = _answered(sent, response, ids)
        self.summary.posts.append(record)
        self._progress()

    async def execute(
        self, client: httpx.AsyncClient, batches: Iterable[Batch] | None
    ) -> PublishSummary:
        options = self.options
        queue: asyncio.Queue[Batch | None] = asyncio.Queue(options.prefetch)
        if batches is None:
            next_batch = BatchMaker(options).next
        else:
            made = iter(batches)

            def next_batch() -> Batch | None:
                return next(made, None)

        producer = asyncio.create_task(_produce(next_batch, queue))
        stopping = asyncio.create_task(self.stop.wait())
        posts: list[asyncio.Task[None]] = []
        try:
            while not self.halted():
                batch = await self._next(queue, producer, stopping)
                if batch is None:
                    break
                if self.t0 is None:
                    # The clock starts with the first batch ready, not with its generation.
                    self.t0 = time.monotonic()
                    if options.duration_s is not None:
                        self.deadline = self.t0 + options.duration_s
                if options.rate is not None:
                    due = self.t0 + self.events_sent / options.rate
                else:
                    due = self.t0 + self.posts_sent * options.interval_s
                while not self.halted() and time.monotonic() < due:
                    await self._wait(set(), stopping, due)
                while not self.halted() and len(self.in_flight) >= options.concurrency:
                    await self._wait(set(self.in_flight), stopping, None)
                if self.halted():
                    break
                task = asyncio.create_task(self._post(client, batch, time.monotonic() - due))
                posts.append(task)
                self.in_flight.add(task)
                task.add_done_callback(self.in_flight.discard)
                self.posts_sent += 1
                self.events_sent += batch.events
                self._progress()
            # POSTs already sent are waited for, after a stop too: their answers count.
            await asyncio.gather(*posts)
            self._progress()
        finally:
            every: list[asyncio.Task[Any]] = [producer, stopping, *posts]
            for task in every:
                task.cancel()
            await asyncio.gather(*every, return_exceptions=True)
        if self.t0 is not None:
            self.summary.seconds = time.monotonic() - self.t0
        self.summary.posts.sort(key=lambda post: post.index)
        return self.summary


async def publish(
    options: PublishOptions,
    *,
    on_progress: Callable[[Progress], None] | None = None,
    stop: asyncio.Event | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    batches: Iterable[Batch] | None = None,
) -> PublishSummary:
    """POST generated batches on the schedule until `count`, `duration_s` or `stop`.

    POSTs overlap up to `concurrency` in flight; none is retried. The POSTs already sent
    are waited for before returning. `on_progress` runs on the event loop: keep it quick.
    `batches` replaces generation with batches made beforehand (a benchmark keeps the
    generator's CPU out of the measured window that way).
    """
    timeout = httpx.Timeout(options.timeout_s, connect=min(options.timeout_s, 10.0))
    limits = httpx.Limits(
        max_connections=options.concurrency, max_keepalive_connections=options.concurrency
    )
    async with httpx.AsyncClient(timeout=timeout, limits=limits, transport=transport) as client:
        return await _Run(options, on_progress, stop or asyncio.Event()).execute(client, batches)


# -- command line ----------------------------------------------------------------------------


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} s"


def summary_text(summary: PublishSummary) -> str:
    """The end-of-run summary, plain text."""
    lines = [
        f"sent         {summary.sent:,} events in {len(summary.posts):,} POSTs"
        f" over {summary.seconds:.1f} s ({summary.events_per_s:,.0f} events/s)",
        f"accepted     {summary.accepted:,} (duplicates {summary.duplicates:,})",
        f"rejected     {summary.rejected:,}",
        f"ack latency  p50 {_seconds(summary.latency_s(50))}"
        f"  p99 {_seconds(summary.latency_s(99))}",
        f"failed POSTs {summary.failed_posts:,}"
        f" (of them refused with 503 + Retry-After: {summary.refused_posts:,})",
    ]
    kinds = Counter(post.failure for post in summary.posts if not post.ok)
    for kind, n in kinds.most_common(5):
        example = next(post.error for post in summary.posts if post.failure == kind)
        lines.append(f"  {n:,} x {example}")
    return "\n".join(lines)


def _batch_range(text: str) -> tuple[int, int]:
    low, _, high = text.partition("-")
    try:
        return int(low), int(high or low)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or MIN-MAX, not {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `adfunnel publish` options."""
    d = PublishOptions()
    add = parser.add_argument
    add("--endpoint", metavar="URL", help=f"default: ${ENDPOINT_ENV}, else {DEFAULT_ENDPOINT}")
    add("--secret", help=f"HMAC secret for x-signature (default: ${SECRET_ENV}, else unsigned)")
    pace = parser.add_mutually_exclusive_group()
    pace.add_argument("--rate", type=float, metavar="EVENTS_PER_S", help="pace POSTs by events/s")
    pace.add_argument(
        "--interval",
        type=float,
        default=d.interval_s,
        metavar="SECONDS",
        help="between POST starts, not waiting for answers; 0: as fast as possible (%(default)s)",
    )
    add(
        "--batch-size",
        type=_batch_range,
        default=(d.min_batch, d.max_batch),
        metavar="N|MIN-MAX",
        help=f"events per POST, uniform ({d.min_batch}-{d.max_batch})",
    )
    for flag, default, what in (
        ("--duplicates", d.duplicate_share, "events re-sending an earlier eventId"),
        ("--out-of-order", d.out_of_order_share, "events timestamped minutes to hours ago"),
        ("--invalid", d.invalid_share, "events with one of the publisher's corruptions"),
    ):
        add(flag, type=float, default=default, metavar="SHARE", help=f"{what} (%(default)s)")
    add_user_mix_arguments(parser)
    add("--duration", type=float, metavar="SECONDS", help="stop starting POSTs after this long")
    add("--count", type=int, metavar="EVENTS", help="stop after this many events")
    add(
        "--concurrency",
        type=int,
        default=d.concurrency,
        metavar="N",
        help="max POSTs in flight (%(default)s)",
    )
    add(
        "--timeout",
        type=float,
        default=d.timeout_s,
        metavar="SECONDS",
        help="per POST (%(default)s)",
    )
    add("--seed", type=int, metavar="N", help="random seed: the same seed sends the same events")
    add("--quiet", action="store_true", help="no live progress, only the summary")


def add_user_mix_arguments(parser: argparse.ArgumentParser) -> None:
    """`--returning`, `--hot-users`, `--hot-share`: shared by `publish` and `seed`."""
    add = parser.add_argument
    add(
        "--returning",
        type=float,
        default=DEFAULT_RETURNING_SHARE,
        metavar="SHARE",
        help="events whose user is a recent one of the same source (%(default)s)",
    )
    add(
        "--hot-users",
        type=int,
        default=0,
        metavar="N",
        help="a fixed pool of N users per source that carries --hot-share of the events"
        " (%(default)s: none)",
    )
    add(
        "--hot-share",
        type=float,
        metavar="SHARE",
        help=f"events from the hot users (default: {DEFAULT_HOT_SHARE} with --hot-users)",
    )


def options_from_args(
    args: argparse.Namespace, env: Mapping[str, str] = os.environ
) -> PublishOptions:
    """Options from parsed arguments, with the endpoint and secret from `env` as defaults."""
    low, high = args.batch_size
    return PublishOptions(
        endpoint=args.endpoint or env.get(ENDPOINT_ENV) or DEFAULT_ENDPOINT,
        secret=args.secret or env.get(SECRET_ENV) or None,
        rate=args.rate,
        interval_s=args.interval,
        min_batch=low,
        max_batch=high,
        duplicate_share=args.duplicates,
        out_of_order_share=args.out_of_order,
        invalid_share=args.invalid,
        returning_share=args.returning,
        hot_users=args.hot_users,
        hot_share=args.hot_share,
        duration_s=args.duration,
        count=args.count,
        concurrency=args.concurrency,
        timeout_s=args.timeout,
        seed=args.seed,
        record_ids=False,
    )


@contextlib.contextmanager
def _live(options: PublishOptions, console: Console) -> Iterator[Callable[[Progress], None]]:
    """A rich progress bar and running counts on `console`; yields the callback."""
    total: float | None = options.count or options.duration_s
    bar = rich.progress.Progress(
        rich.progress.SpinnerColumn(),
        rich.progress.BarColumn(),
        rich.progress.TaskProgressColumn(),
        rich.progress.TimeElapsedColumn(),
        console=console,
    )
    task = bar.add_task("publish", total=total)
    stats = Text("generating the first batch…")
    with Live(Group(bar, stats), console=console, refresh_per_second=8):

        def update(p: Progress) -> None:
            bar.update(task, completed=(p.events_sent if options.count else p.elapsed_s))
            stats.plain = (
                f"POSTs   {p.posts_sent:,} sent, {p.in_flight} in flight,"
                f" {p.failed_posts:,} failed\n"
                f"events  {p.events_sent:,} sent ({p.events_per_s:,.0f}/s),"
                f" {p.accepted:,} accepted, {p.duplicates:,} duplicates,"
                f" {p.rejected:,} rejected\n"
                f"ack     p50 {_seconds(p.ack_p50_s)}, p99 {_seconds(p.ack_p99_s)}"
            )

        yield update


async def _run_until_signalled(
    options: PublishOptions, on_progress: Callable[[Progress], None] | None
) -> PublishSummary:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def halt() -> None:
        stop.set()
        # A second Ctrl-C interrupts at once instead of waiting for the answers.
        loop.remove_signal_handler(signal.SIGINT)

    loop.add_signal_handler(signal.SIGINT, halt)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    try:
        return await publish(options, on_progress=on_progress, stop=stop)
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        loop.remove_signal_handler(signal.SIGTERM)


def command(args: argparse.Namespace) -> int:
    """Run `adfunnel publish`; exits 1 if any POST failed, 2 on bad options."""
    try:
        options = options_from_args(args)
    except ValueError as error:
        print(f"adfunnel publish: {error}", file=sys.stderr)
        return 2
    console = Console(stderr=True)
    try:
        if args.quiet or not console.is_terminal:
            summary = asyncio.run(_run_until_signalled(options, None))
        else:
            with _live(options, console) as update:
                summary = asyncio.run(_run_until_signalled(options, update))
    except KeyboardInterrupt:
        print("adfunnel publish: interrupted before the answers came", file=sys.stderr)
        return 130
    print(summary_text(summary), flush=True)
    return summary.exit_code
