"""Train the zstd dictionary the gateway compresses event payloads with.

    python -m adfunnel.tools.train_dictionary [--events 50000] [--size 65536]

Writes `adfunnel/storage/dictionaries/payload-<id>.zdict` with the next free id. Stored rows
name the dictionary they were compressed with (zstd writes its id into every frame), so
every dictionary that ever compressed a row must stay in the package; a new one only changes
what new rows use. The samples are the publisher's formats (`Generator`): every event type,
returning users, corrupted-free; each as it is compressed, without what `_payloads.cut`
takes out of it (the eventId, userId and time its row keeps). Their times are spread over
four years: a dictionary of the day it was trained on would compress that day's other times
(`actionTime`) better than those of any later day.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
import zstandard

from adfunnel.schema import event_row
from adfunnel.storage._payloads import cut, row_ids, time_text
from adfunnel.tools.generator import Generator


def _as_compressed(event: dict[str, Any]) -> bytes:
    row = event_row(event)
    ids = row_ids(row.event_id, row.user_id, time_text(row.event_time))
    return cut(orjson.dumps(event), ids)[0]


def train(events: int, size: int, dict_id: int) -> zstandard.ZstdCompressionDict:
    """A dictionary of `size` bytes from `events` publisher-shaped events."""
    moment, step = datetime(2025, 1, 1, tzinfo=UTC), timedelta(days=4 * 365) / events

    def clock() -> datetime:
        nonlocal moment
        moment += step
        return moment

    generator = Generator(seed=20261205, clock=clock, returning_share=0.3)
    samples: list[bytes | bytearray | memoryview] = [
        _as_compressed(event) for event in generator.batch(events, out_of_order_share=0.05)
    ]
    return zstandard.train_dictionary(size, samples, dict_id=dict_id)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--size", type=int, default=65_536)
    args = parser.parse_args()
    folder = Path(str(resources.files("adfunnel.storage") / "dictionaries"))
    taken = [int(p.stem.removeprefix("payload-")) for p in folder.glob("payload-*.zdict")]
    dict_id = max(taken, default=0) + 1
    trained = train(args.events, args.size, dict_id)
    path = folder / f"payload-{dict_id}.zdict"
    path.write_bytes(trained.as_bytes())
    print(f"wrote {path.name} ({len(trained.as_bytes()):,} bytes, id {dict_id})")


if __name__ == "__main__":
    main()
