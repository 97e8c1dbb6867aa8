"""What drives and measures the service, never part of it.

- `generator`: events in the real publisher's formats, valid or corrupted, new, returning
  and hot users.
- `publish`: `adfunnel publish`, the publisher simulator.
- `seed`: `adfunnel seed`, events loaded straight into PostgreSQL for report benchmarks.
- `bench`: `adfunnel bench`, the pipeline end to end and the reports over a large table.
- `cli`: the subcommands above, added to the `adfunnel` command.
"""
