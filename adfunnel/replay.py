"""`adfunnel replay` (SPEC §11): rejected events, edited, sent through the gateway again.

Rows of the rejected store are selected (receipt range, source, reason text), their events
edited (`--set PATH=JSON`, `--unset PATH`) and POSTed to the gateway in batches under one
`replay-…` correlation id, so the same validation applies and every promise is the
gateway's. Each row then records the replay: when, under which correlation id, and what
became of its event. The eventId keeps storage exactly-once, so a second replay of the same
rows stores nothing twice; by default it does not even send the rows already stored.
"""

from __future__ import annotations

import asyncio
import copy
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import orjson

from adfunnel import storage
from adfunnel.errors import ReplayRefused
from adfunnel.ingest import REPLAY_HEADER, SIGNATURE_HEADER, signature, triage
from adfunnel.storage import ReplaySelection

DEFAULT_ENDPOINT = "http://127.0.0.1:8000/webhook"
# A 503 says "come back later": how often, before the rest of the run is given up.
_REFUSALS = 10


class _Unset:
    """The value of an `--unset` edit."""


UNSET = _Unset()
Path = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Edit:
    """One change to every replayed event: set `path` to `value`, or remove it (UNSET)."""

    path: Path
    value: Any


def _path(text: str) -> Path:
    if not text or any(not part for part in text.split(".")):
        raise ValueError(f"{text!r} is not a path like data.user.gender")
    return tuple(int(part) if part.isdigit() else part for part in text.split("."))


def parse_set(text: str) -> Edit:
    """`PATH=JSON`, e.g. `data.user.gender="female"`; ValueError naming what is wrong."""
    path, sep, value = text.partition("=")
    if not sep:
        raise ValueError(f"--set {text!r}: expected PATH=JSON")
    try:
        return Edit(_path(path), orjson.loads(value))
    except orjson.JSONDecodeError as error:
        raise ValueError(f"--set {text!r}: the value is not JSON ({error})") from None


def parse_unset(text: str) -> Edit:
    """`PATH`, e.g. `data.engagement.videoId`."""
    return Edit(_path(text), UNSET)


def _holds(node: Any, key: str | int) -> bool:
    """Whether `key` names something inside `node` (an object's key, a list's index)."""
    if isinstance(node, dict):
        return key in node
    return isinstance(node, list) and isinstance(key, int) and key < len(node)


def _apply(event: Any, edit: Edit) -> None:
    *parents, last = edit.path
    node = event
    for key in parents:
        if isinstance(node, dict) and key not in node:
            if edit.value is UNSET:
                return  # nothing there to remove
            node[key] = {}
        elif not _holds(node, key):
            raise ValueError(f"{'.'.join(map(str, edit.path))}: no such place in the event")
        node = node[key]
    # The last step may add a key to an object, but only replace an item of a list.
    settable = isinstance(node, dict) or _holds(node, last)
    if edit.value is UNSET:
        if _holds(node, last):
            del node[last]
    elif settable:
        node[last] = edit.value
    else:
        raise ValueError(f"{'.'.join(map(str, edit.path))}: no such place in the event")


def edited(event: Any, edits: Sequence[Edit]) -> Any:
    """A copy of `event` with the edits applied in order. Setting creates the missing objects
    on the way; unsetting what is not there changes nothing; a path through a value that is
    neither an object nor a list (or past a list's end) is a ValueError."""
    out = copy.deepcopy(event)
    for edit in edits:
        _apply(out, edit)
    return out


@dataclass(slots=True)
class ReplaySummary:
    """What one run did, row by row counted."""

    correlation_id: str
    selected: int = 0
    sent: int = 0
    stored: int = 0
    duplicates: int = 0
    # Accepted by the gateway (so promised), not yet written when the run looked.
    accepted: int = 0
    rejected: int = 0
    not_sent: int = 0
    errors: list[str] = field(default_factory=list)

    def add(self, outcome: str) -> None:
        if outcome == "stored":
            self.stored += 1
        elif outcome == "duplicate":
            self.duplicates += 1
        elif outcome == "accepted":
            self.accepted += 1
        else:
            self.rejected += 1


@dataclass(frozen=True, slots=True)
class ReplayOptions:
    """Where, which rows, which edits, and how."""

    database_url: str
    endpoint: str = DEFAULT_ENDPOINT
    selection: ReplaySelection = field(default_factory=ReplaySelection)
    edits: tuple[Edit, ...] = ()
    limit: int | None = None
    batch: int = 1_000
    dry_run: bool = False
    secret: str | None = None
    oldest: datetime | None = None
    timeout_s: float = 120.0
    # How long to wait for accepted events to be written before recording them "accepted".
    wait_s: float = 60.0


def _prepared(rows: Sequence[Any], edits: Sequence[Edit]) -> list[Any]:
    """Each row's event, edited; a str (the reason) where that is impossible."""
    out: list[Any] = []
    for row in rows:
        try:
            event = orjson.loads(row["event"] or "")
        except orjson.JSONDecodeError:
            out.append("rejected: the kept event is not JSON; nothing to send")
            continue
        try:
            out.append(edited(event, edits))
        except ValueError as error:
            out.append(f"rejected: {error}")
    return out


async def _post(
    client: httpx.AsyncClient, options: ReplayOptions, body: bytes, cid: str
) -> dict[str, Any] | None:
    """The 202's answer, or None once the gateway kept refusing (503) or failed."""
    headers = {"content-type": "application/json", "x-correlation-id": cid, REPLAY_HEADER: "1"}
    if options.secret is not None:
        headers[SIGNATURE_HEADER] = signature(options.secret, body)
    for _ in range(_REFUSALS):
        response = await client.post(options.endpoint, content=body, headers=headers)
        if response.status_code == 202:
            answer: dict[str, Any] = response.json()
            return answer
        if response.status_code != 503:
            answered = f"{response.status_code}: {response.text[:300]}"
            raise ReplayRefused(f"the gateway refused a replay batch with {answered}")
        await asyncio.sleep(float(response.headers.get("retry-after") or 2))
    return None


async def _written(
    conn: storage.Conn, event_ids: list[str], wait_s: float
) -> dict[str, str | None]:
    """Where each accepted event is stored, waiting for the writers up to `wait_s`."""
    deadline = time.monotonic() + wait_s
    while True:
        found = await storage.stored_under(conn, event_ids)
        if len(found) == len(set(event_ids)) or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.5)


async def _send(
    client: httpx.AsyncClient,
    conn: storage.Conn,
    options: ReplayOptions,
    cid: str,
    prepared: list[Any],
) -> list[str] | None:
    """Each prepared event's outcome, or None when the gateway would not take the batch."""
    outcomes: list[str | None] = [p if isinstance(p, str) else None for p in prepared]
    sendable = [i for i, p in enumerate(prepared) if not isinstance(p, str)]
    if not sendable:
        return [o or "" for o in outcomes]
    answer = await _post(client, options, orjson.dumps([prepared[i] for i in sendable]), cid)
    if answer is None:
        return None
    for error in answer.get("errors", []):
        outcomes[sendable[error["index"]]] = f"rejected: {error['reason']}"
    accepted = [i for i in sendable if outcomes[i] is None]
    ids = [str(prepared[i]["eventId"]) for i in accepted]
    written = await _written(conn, ids, options.wait_s)
    first: set[str] = set()
    for i, event_id in zip(accepted, ids, strict=True):
        if event_id not in written:
            outcomes[i] = "accepted"
        elif written[event_id] == cid and event_id not in first:
            outcomes[i] = "stored"
        else:
            # Stored before this run, or an earlier row of this batch with the same eventId.
            outcomes[i] = "duplicate"
        first.add(event_id)
    return [o or "" for o in outcomes]


def _checked(prepared: list[Any], oldest: datetime | None) -> list[str]:
    """A dry run's outcomes: the gateway's validation, run here ("valid" or the reason)."""
    outcomes = [p if isinstance(p, str) else "valid" for p in prepared]
    sendable = [i for i, p in enumerate(prepared) if not isinstance(p, str)]
    sorted_out = triage([prepared[i] for i in sendable], oldest=oldest)
    for index, item in sorted_out.rejected:
        outcomes[sendable[index]] = f"rejected: {item.reason}"
    return outcomes


async def _batch(
    client: httpx.AsyncClient,
    conn: storage.Conn,
    options: ReplayOptions,
    summary: ReplaySummary,
    rows: list[Any],
) -> bool:
    """Replay one batch of rows into `summary`; False when the gateway would not take it."""
    prepared = _prepared(rows, options.edits)
    if options.dry_run:
        for outcome in _checked(prepared, options.oldest):
            summary.add("stored" if outcome == "valid" else outcome)
        return True
    outcomes = await _send(client, conn, options, summary.correlation_id, prepared)
    if outcomes is None:
        return False
    summary.sent += sum(not isinstance(p, str) for p in prepared)
    ids = [row["id"] for row in rows]
    await storage.record_replays(conn, ids, summary.correlation_id, outcomes)
    for outcome in outcomes:
        summary.add(outcome)
    return True


async def replay(
    options: ReplayOptions, *, on_progress: Callable[[ReplaySummary, int], None] | None = None
) -> ReplaySummary:
    """Replay the selected rows; a dry run validates the edited events here and sends and
    records nothing (its `stored` counts the events that would be sent)."""
    summary = ReplaySummary(correlation_id=f"replay-{uuid.uuid4()}")
    timeout = httpx.Timeout(options.timeout_s, connect=10.0)
    pool = await storage.create_pool(options.database_url, size=1)
    try:
        async with pool.acquire() as conn, httpx.AsyncClient(timeout=timeout) as client:
            total = await storage.count_replayable(conn, options.selection)
            if options.limit is not None:
                total = min(total, options.limit)
            after_id = 0
            while summary.selected < total:
                limit = min(options.batch, total - summary.selected)
                rows = await storage.replayable(
                    conn, options.selection, after_id=after_id, limit=limit
                )
                if not rows:
                    break
                after_id = rows[-1]["id"]
                if not await _batch(client, conn, options, summary, rows):
                    summary.not_sent += total - summary.selected
                    summary.errors.append("the gateway kept answering 503: stopped")
                    break
                summary.selected += len(rows)
                if on_progress is not None:
                    on_progress(summary, total)
    finally:
        await pool.close()
    return summary


def summary_text(summary: ReplaySummary, *, dry_run: bool) -> str:
    """The lines `adfunnel replay` prints at the end."""
    if dry_run:
        return (
            f"dry run: {summary.selected:,} selected, {summary.stored:,} would be sent,"
            f" {summary.rejected:,} would be rejected again; nothing sent or recorded"
        )
    lines = [
        f"replay {summary.correlation_id}: {summary.selected:,} selected, {summary.sent:,} sent",
        f"  stored {summary.stored:,}, duplicates {summary.duplicates:,},"
        f" rejected again {summary.rejected:,}, accepted but not yet written"
        f" {summary.accepted:,}, not sent {summary.not_sent:,}",
    ]
    lines += [f"  {error}" for error in summary.errors]
    return "\n".join(lines)
