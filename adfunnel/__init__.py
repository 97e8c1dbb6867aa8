"""adfunnel: what runs in the service.

Ad-platform webhooks in, exact analytics out (the contract: SPEC.md, the guide: README.md).

- `schema`: the event shapes of SPEC §3, validation from bytes, the typed columns.
- `ingest`: what the gateway does with a webhook body before the bus.
- `bus`: the JetStream stream, consumers, message encoding and publishing.
- `gateway`, `reporter`: the two Serve deployments (`serve_app.py` wires them).
- `reports`: report parameters and answers; their SQL is in `storage`.
- `storage`: every SQL statement: migrations, the write path, the report queries.
- `settings`, `errors`, `http`, `logs`, `metrics`: configuration, the exception hierarchy,
  the HTTP error shape, structured logs, Prometheus metrics.
- `embedded`: NATS and PostgreSQL started by the system itself when no URL is given.
- `cli`: the `adfunnel` command; `testing`: helpers for tests and tools.

The consumer, writer and supervisor actors live in the top-level `actors` package. What
drives and measures the service (load generator, publisher simulator, seeding,
benchmarks) lives in `adfunnel.tools`, never imported by the service.
"""
