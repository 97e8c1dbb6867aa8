"""PostgreSQL storage: every SQL statement of the project lives in this package.

- `_database`: pools prepared for the project's sessions, waiting for a server, databases.
- `_migrations`: the versioned schema (`migrations/NNNN_name.sql`), applied under a lock.
- `_writes`: the write path, events as COPY lines and the rejected store.
- `_filters`: report filters as conditions; a range cut into rollup buckets and raw edges.
- `_events`: events and revenue reports, one event by id, the rejected store's summary.
- `_demographics`: distinct users by their latest event in a range.
- `_checks`: the derived tables against the raw rows.
- `_payloads`: event payloads as zstd frames, with the dictionaries they name.
- `_retention`: raw rows past the retention window removed in bounded batches.
- `_replay`: rejected rows selected for replay, and what became of them.
- `_reference`: the same answers straight from the raw rows, for the report benchmark.

Callers use the names below: `from adfunnel import storage`, then `storage.insert_copy`.
"""

from typing import TYPE_CHECKING

from adfunnel.storage._checks import demographic_mismatches, rollup_mismatches
from adfunnel.storage._database import (
    create_pool,
    disk_usage,
    drop_database,
    ensure_database,
    prepared_database,
    wait_for_database,
    wal_position,
)
from adfunnel.storage._demographics import (
    AGE_BUCKETS,
    DEMOGRAPHIC_GRAINS,
    FOLLOWER_BUCKETS,
    Demographics,
    FollowerStats,
    demographic_counts,
    demographics,
    follower_stats,
    median_ranks,
)
from adfunnel.storage._events import (
    RejectedSummary,
    count_stored,
    event_breakdown,
    event_json,
    event_series,
    fetch_event,
    rejected_summary,
    revenue_groups,
    revenue_series,
    stored_counts,
    stored_traces,
)
from adfunnel.storage._filters import (
    GRAINS,
    REVENUE_CONDITION,
    EventFilters,
    Segment,
    plan_segments,
    where_clause,
)
from adfunnel.storage._migrations import MIGRATION_LOCK_ID, migrate
from adfunnel.storage._reference import (
    naive_demographic_counts,
    naive_event_breakdown,
    naive_event_series,
    naive_follower_stats,
    naive_revenue_groups,
    naive_revenue_series,
)
from adfunnel.storage._replay import (
    ReplaySelection,
    count_replayable,
    record_replays,
    replayable,
    stored_under,
)
from adfunnel.storage._retention import Expired, expire, removal_horizon
from adfunnel.storage._writes import (
    COPY_COLUMNS,
    DELIVERY_COLUMNS,
    EVENT_COLUMNS,
    LINE_COLUMNS,
    MessageTrace,
    RejectedRow,
    StagedEvent,
    copy_event_id,
    copy_payload_text,
    copy_row,
    current_lines,
    event_key,
    insert_copy,
    insert_events,
    insert_rejected,
    is_copy_line,
)

if TYPE_CHECKING:
    # A type for annotations only: a plain connection or one borrowed from a pool.
    from adfunnel.storage._database import Conn as Conn

__all__ = [
    "AGE_BUCKETS",
    "COPY_COLUMNS",
    "DELIVERY_COLUMNS",
    "DEMOGRAPHIC_GRAINS",
    "EVENT_COLUMNS",
    "FOLLOWER_BUCKETS",
    "GRAINS",
    "LINE_COLUMNS",
    "MIGRATION_LOCK_ID",
    "REVENUE_CONDITION",
    "Demographics",
    "EventFilters",
    "Expired",
    "FollowerStats",
    "MessageTrace",
    "RejectedRow",
    "RejectedSummary",
    "ReplaySelection",
    "Segment",
    "StagedEvent",
    "copy_event_id",
    "copy_payload_text",
    "copy_row",
    "count_replayable",
    "count_stored",
    "create_pool",
    "current_lines",
    "demographic_counts",
    "demographic_mismatches",
    "demographics",
    "disk_usage",
    "drop_database",
    "ensure_database",
    "event_breakdown",
    "event_json",
    "event_key",
    "event_series",
    "expire",
    "fetch_event",
    "follower_stats",
    "insert_copy",
    "insert_events",
    "insert_rejected",
    "is_copy_line",
    "median_ranks",
    "migrate",
    "naive_demographic_counts",
    "naive_event_breakdown",
    "naive_event_series",
    "naive_follower_stats",
    "naive_revenue_groups",
    "naive_revenue_series",
    "plan_segments",
    "prepared_database",
    "record_replays",
    "rejected_summary",
    "removal_horizon",
    "replayable",
    "revenue_groups",
    "revenue_series",
    "rollup_mismatches",
    "stored_counts",
    "stored_traces",
    "stored_under",
    "wait_for_database",
    "wal_position",
    "where_clause",
]
