"""Benchmarks: timings belong here and in docs/performance.md, never in tests.

- `e2e`: `adfunnel bench`, the whole pipeline in one run, with its CPU ledger.
- `system`: what the benchmark measures around the pipeline (processes, CPU, memory).
- `floor`: the same work done bare in one asyncio process, to compare against.
- `reports`: `adfunnel bench reports`, report latency next to naive queries.
- `backend`, `prepare`: PostgreSQL's and the gateway's CPU per event on their own.
- `write_paths`, `first_post`: one-off measurements behind two design choices
  (`python -m adfunnel.tools.bench.<name> --help`).
"""
