"""Every setting of the system, read from the environment (SPEC §2) in one place."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

MIB = 1024 * 1024


class Settings(BaseSettings):
    """Settings shared by every deployment and actor; env vars use the upper-case names."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    nats_url: str | None = Field(None, description="External NATS; unset starts an embedded one")
    database_url: str | None = Field(None, description="External PostgreSQL; unset: embedded")
    data_dir: Path = Field(Path(".data"), description="Embedded servers keep their data here")
    nats_stream: str = Field("EVENTS", pattern=r"^[A-Za-z0-9_-]+$")
    nats_subject_prefix: str = Field("events", pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
    webhook_secret: SecretStr | None = Field(None, description="Turns the HMAC check on")
    # Comma-separated: several keys let one be rotated out while the others keep working.
    reports_api_keys: SecretStr | None = Field(
        None, description="Bearer keys for /reports (health excepted); unset: open"
    )
    max_body_bytes: int = Field(64 * MIB, gt=0)
    max_batch_events: int = Field(50_000, gt=0)
    # One bus message carries many events: one message per event cannot reach the
    # publisher's rate on two cores (publish+ack costs ~50 µs each).
    events_per_message: int = Field(1_000, gt=0)
    max_message_bytes: int = Field(768 * 1024, gt=0, description="Under NATS' 1 MiB default")
    stream_max_bytes: int = Field(4 * 1024 * MIB, description="Backlog room; -1 is unlimited")
    # 3 on a JetStream cluster: a message is then on a quorum of servers before its 202.
    stream_replicas: int = Field(1, ge=1, le=5)
    duplicate_window_s: float = Field(120.0, gt=0)
    publish_timeout_s: float = Field(10.0, gt=0)
    # Overload answers fast (SPEC §4): a replica works on this many POST bodies at once; a
    # POST that cannot start within `admission_timeout_s` gets 503 + Retry-After instead of
    # waiting in a queue for minutes.
    gateway_concurrent_posts: int = Field(2, gt=0)
    admission_timeout_s: float = Field(10.0, gt=0)
    # Raw events and rejected rows older than this many days are removed (at start, then
    # hourly, or by `adfunnel retention`), and events older than it refused at the door;
    # the rollups stay. Unset: keep everything.
    retention_days: float | None = Field(None, gt=0)
    writer_pool_size: int = Field(2, gt=0)
    consumers_per_source: int = Field(1, gt=0)
    fetch_batch_messages: int = Field(32, gt=0)
    # Each batch costs PostgreSQL a fixed few milliseconds besides its events (planning the
    # triggers' statements, the commit): a fetch that found only a few messages waits up to
    # `batch_linger_s` for more, until the batch holds `batch_target_events`.
    batch_target_events: int = Field(20_000, gt=0)
    batch_linger_s: float = Field(1.0, ge=0)
    # A message whose write keeps failing for any reason but a storage outage goes to the
    # rejected store after this many deliveries (poison).
    max_deliver: int = Field(10, gt=1)
    # JetStream's own bound, far higher: during a PostgreSQL outage messages wait in the
    # stream (consumers pause and nak with backoff) and must not run out of deliveries.
    outage_max_deliver: int = Field(1_000, gt=1)
    ack_wait_s: float = Field(60.0, gt=0, description="Longer than the slowest batch write")
    writer_connections: int = Field(2, gt=0)
    log_level: str = "INFO"

    def retention_cutoff(self, now: datetime) -> datetime | None:
        """The oldest event time still kept at `now` (None: everything is kept)."""
        if self.retention_days is None:
            return None
        return now - timedelta(days=self.retention_days)

    def api_keys(self) -> tuple[bytes, ...]:
        """The reporter's bearer keys (empty: reports are open)."""
        if self.reports_api_keys is None:
            return ()
        keys = self.reports_api_keys.get_secret_value().split(",")
        return tuple(key.strip().encode() for key in keys if key.strip())

    def durable_name(self, lane: str) -> str:
        """The durable consumer a lane's consumer actors share."""
        return f"{self.nats_stream}-{lane}"
