"""Payload compression: exact bytes back, with and without the row's ids cut out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from adfunnel.schema import parse_timestamp
from adfunnel.storage._payloads import (
    CURRENT,
    DICTIONARIES,
    compress,
    cut,
    decompress,
    row_ids,
    time_text,
)
from adfunnel.tools import train_dictionary
from adfunnel.tools.generator import Generator

NOW = datetime(2026, 12, 6, 10, 30, tzinfo=UTC)
LATER = datetime(2031, 5, 17, 8, 15, tzinfo=UTC)


def ids_of(event: dict[str, Any]) -> tuple[str, str, str]:
    user = event["data"]["user"]["userId"]
    return row_ids(event["eventId"], user, time_text(parse_timestamp(event["timestamp"])))


def two_ids_cut(raw: bytes, event_id: str, user_id: str) -> bytes:
    """A payload as gateways wrote them before the time was cut: marker 1, where each id
    was, and a whole zstd frame with the first dictionary."""
    first = raw.index(event_id.encode())
    rest = raw[:first] + raw[first + len(event_id) :]
    second = rest.index(user_id.encode())
    rest = rest[:second] + rest[second + len(user_id) :]
    return b"\x01" + leb128(first + 1) + leb128(second + 1) + whole_frame(rest, 1)


def whole_frame(raw: bytes, dictionary: int) -> bytes:
    """A zstd frame with its whole header, as gateways wrote them before the ids were cut."""
    return zstandard.ZstdCompressor(level=1, dict_data=DICTIONARIES[dictionary]).compress(raw)


def leb128(value: int) -> bytes:
    assert value < 1 << 14  # two bytes at most, for the test's events
    return bytes((value,)) if value < 0x80 else bytes((value & 0x7F | 0x80, value >> 7))


@pytest.mark.parametrize("seed", range(3))
def test_the_ids_and_the_time_are_cut_out_and_put_back(seed: int) -> None:
    cut = bare = 0
    for event in Generator(seed, returning_share=0.3).batch(200):
        raw = orjson.dumps(event)
        ids = ids_of(event)
        assert ids[2] == event["timestamp"]
        blob = compress(raw, ids)
        assert decompress(blob, ids) == raw
        # None of them is among the stored bytes any more, nor is zstd's magic number; the
        # first byte names the dictionary.
        assert all(value.encode() not in blob for value in ids)
        assert b"\x28\xb5\x2f\xfd" not in blob
        assert blob[0] == CURRENT
        cut += len(blob)
        bare += len(whole_frame(raw, CURRENT))
    # The two random ids and the time were more than a third of the compressed bytes.
    assert cut < bare * 0.7


def test_payloads_stored_before_the_time_was_cut_still_read() -> None:
    event = Generator(6).facebook("ad.click")
    raw = orjson.dumps(event)
    ids = ids_of(event)
    assert decompress(two_ids_cut(raw, ids[0], ids[1]), ids) == raw
    for dictionary in DICTIONARIES:
        assert decompress(whole_frame(raw, dictionary)) == raw
        assert decompress(whole_frame(raw, dictionary), ("any", "ids", "")) == raw


def test_the_current_dictionary_can_be_named_by_a_payloads_first_byte() -> None:
    # Above the marker of payloads with two ids cut, below zstd's magic number.
    assert 1 < CURRENT < 0x28


def test_a_payload_of_a_dictionary_not_shipped_says_so() -> None:
    event = Generator(7).tiktok("share")
    ids = ids_of(event)
    blob = compress(orjson.dumps(event), ids)
    with pytest.raises(ValueError, match="dictionary 9"):
        decompress(bytes((9,)) + blob[1:], ids)


def test_the_dictionary_learns_payloads_as_they_are_compressed() -> None:
    # Trained on the bytes left after the cut, it compresses them better than a dictionary
    # of whole events does, on a day neither was trained on.
    trained = train_dictionary.train(2_000, 8_192, dict_id=99)
    whole = zstandard.train_dictionary(
        8_192,
        [orjson.dumps(e) for e in Generator(12, clock=lambda: NOW).batch(2_000)],
        dict_id=98,
    )
    events = Generator(11, clock=lambda: LATER).batch(300)
    rests = [cut_rest(event) for event in events]
    assert all(
        event["eventId"].encode() not in rest for event, rest in zip(events, rests, strict=True)
    )

    def size(dictionary: zstandard.ZstdCompressionDict) -> int:
        compressor = zstandard.ZstdCompressor(level=1, dict_data=dictionary)
        return sum(len(compressor.compress(rest)) for rest in rests)

    assert size(trained) < size(whole) * 0.95


def cut_rest(event: dict[str, Any]) -> bytes:
    return cut(orjson.dumps(event), ids_of(event))[0]


def test_a_cut_payload_needs_its_ids() -> None:
    event = Generator(5).facebook("ad.view")
    with pytest.raises(ValueError, match="ids"):
        decompress(compress(orjson.dumps(event), ids_of(event)))


def test_the_time_is_cut_only_in_the_publishers_form() -> None:
    moment = datetime(2026, 12, 6, 10, 30, 19, 25_000, tzinfo=UTC)
    assert time_text(moment) == "2026-12-06T10:30:19.025Z"
    assert time_text(moment.astimezone(timezone(timedelta(hours=2)))) == time_text(moment)
    assert time_text(datetime(1, 1, 1, tzinfo=UTC)) == "0001-01-01T00:00:00.000Z"
    # A finer fraction is not what the publisher wrote: nothing is cut for it.
    assert time_text(moment + timedelta(microseconds=1)) == ""
    # Written another way (an offset, no fraction), the time stays in the bytes.
    raw = b'{"eventId":"e","timestamp":"2026-12-06T12:30:19.025+02:00","userId":"u"}'
    ids = row_ids("e", "u", time_text(moment))
    blob = compress(raw, ids)
    assert decompress(blob, ids) == raw


@given(
    st.binary(max_size=300),
    st.text(min_size=1, max_size=20),
    st.text(min_size=1, max_size=20),
    st.text(max_size=24),
)
def test_any_bytes_and_ids_round_trip(raw: bytes, event_id: str, user_id: str, time: str) -> None:
    # Ids that occur anywhere, several times, overlapping, in any order or not at all: the
    # bytes come back exactly, since only positions are recorded.
    ids = (event_id, user_id, time)
    for payload in (
        raw,
        event_id.encode() + raw + user_id.encode(),
        (event_id + time + user_id).encode() + raw,
        (user_id + time + event_id) * 2,
    ):
        data = payload if isinstance(payload, bytes) else payload.encode("utf-8", "surrogatepass")
        assert decompress(compress(data, ids), ids) == data
