"""Payload compression: exact bytes back, with and without the row's ids cut out."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from adfunnel.storage._payloads import compress, decompress
from adfunnel.tools.generator import Generator


def ids_of(event: dict[str, Any]) -> tuple[str, str]:
    return event["eventId"], event["data"]["user"]["userId"]


@pytest.mark.parametrize("seed", range(3))
def test_the_ids_are_cut_out_and_put_back(seed: int) -> None:
    cut = bare = 0
    for event in Generator(seed, returning_share=0.3).batch(200):
        raw = orjson.dumps(event)
        ids = ids_of(event)
        blob = compress(raw, ids)
        assert decompress(blob, ids) == raw
        # Neither id is among the stored bytes any more.
        assert all(value.encode() not in blob for value in ids)
        cut += len(blob)
        bare += len(compress(raw))
    # The two random ids were a third of the compressed bytes.
    assert cut < bare * 0.8


def test_a_frame_stored_before_ids_were_cut_still_reads() -> None:
    raw = orjson.dumps(Generator(4).tiktok("like"))
    assert decompress(compress(raw)) == raw
    assert decompress(compress(raw), ("any", "ids")) == raw


def test_a_cut_payload_needs_its_ids() -> None:
    event = Generator(5).facebook("ad.view")
    with pytest.raises(ValueError, match="ids"):
        decompress(compress(orjson.dumps(event), ids_of(event)))


@given(
    st.binary(max_size=300),
    st.text(min_size=1, max_size=20),
    st.text(min_size=1, max_size=20),
)
def test_any_bytes_and_ids_round_trip(raw: bytes, event_id: str, user_id: str) -> None:
    # Ids that occur anywhere, several times, overlapping, or not at all: the bytes come
    # back exactly, since only positions are recorded.
    for payload in (raw, event_id.encode() + raw + user_id.encode(), (user_id + event_id) * 2):
        data = payload if isinstance(payload, bytes) else payload.encode()
        assert decompress(compress(data, (event_id, user_id)), (event_id, user_id)) == data
