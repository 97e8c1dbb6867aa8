"""Event payloads compressed with zstd and a dictionary of the publisher's formats (SPEC §9).

An event's JSON is ~420 bytes, most of it the same keys and values in every event: zstd,
primed with a 64 KB dictionary trained on those formats, keeps ~63 (what is left once the
row's ids are cut out, below). The gateway compresses (it has each event's bytes in hand,
and the bus then carries the smaller form too); PostgreSQL stores the bytes as they come;
readers decompress. Every payload names its dictionary, so rows stay readable after a new
dictionary is shipped (`python -m adfunnel.tools.train_dictionary`): a dictionary that
compressed a row is never removed.

The eventId and userId are random and so cost a third of the compressed bytes, and the
event's timestamp another tenth, while the row keeps all three in its own columns anyway.
So the gateway cuts them out of the bytes before compressing and records where they were,
and a reader puts them back from the row (`row_ids`). Of zstd's frame header only what
varies is kept: its magic number is the same in every frame, the dictionary is named by
the payload's first byte, and the size is not needed to decompress. Rows stored before
that hold a bare frame, whose first byte is never a marker's, or one with only the two ids
cut (`_CUT_IDS`).
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from importlib import resources

import zstandard

_FOLDER = resources.files("adfunnel.storage") / "dictionaries"
DICTIONARIES: dict[int, zstandard.ZstdCompressionDict] = {}
for _entry in _FOLDER.iterdir():
    if _entry.name.startswith("payload-") and _entry.name.endswith(".zdict"):
        _dictionary = zstandard.ZstdCompressionDict(_entry.read_bytes())
        DICTIONARIES[_dictionary.dict_id()] = _dictionary
CURRENT = max(DICTIONARIES)
# Compressors and decompressors are not thread-safe; the gateway prepares bodies in threads.
_local = threading.local()


# With the 64 KB dictionary, level 3 keeps 2.2 fewer bytes per payload than level 1 for
# ~0.07 us more; level 4 (with a 128 KB one) 7 fewer again for ~0.9 us, which the CPU
# budget cannot spare.
_LEVEL = 3


def _compressor() -> zstandard.ZstdCompressor:
    made: zstandard.ZstdCompressor | None = getattr(_local, "compressor", None)
    if made is None:
        made = zstandard.ZstdCompressor(
            level=_LEVEL,
            dict_data=DICTIONARIES[CURRENT],
            write_checksum=False,
            write_content_size=False,
            write_dict_id=False,
        )
        _local.compressor = made
    return made


def _decompressor(dict_id: int) -> zstandard.ZstdDecompressor:
    made: dict[int, zstandard.ZstdDecompressor] = getattr(_local, "decompressors", {})
    _local.decompressors = made
    if dict_id not in made:
        if dict_id not in DICTIONARIES:
            raise ValueError(f"a payload compressed with dictionary {dict_id}, not shipped here")
        made[dict_id] = zstandard.ZstdDecompressor(dict_data=DICTIONARIES[dict_id])
    return made[dict_id]


# First byte of a payload with ids cut out: then, per id, 1 + where it was (0: not found) as
# a LEB128 varint, then the zstd frame of what is left. Payloads written before the time
# was cut hold the two ids' marks and a whole frame (`_CUT_IDS`). Since, the first byte is
# the number of the dictionary (2 and up, below `_MAGIC[0]`), the three ids are cut, and the
# frame has neither its magic number, nor the dictionary's id, nor the size of its content.
_CUT_IDS = 1
_MAGIC = b"\x28\xb5\x2f\xfd"
# Which of `row_ids` each kind cuts, in the order it cuts them: the order the publisher
# writes them in, so that one scan finds all three.
_CUTS = {_CUT_IDS: (0, 1), **dict.fromkeys(range(_CUT_IDS + 1, _MAGIC[0]), (0, 2, 1))}


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# Ids sit in the first few hundred bytes: their marks are looked up, not encoded each time.
_SMALL = 1 << 14
_SMALL_VARINTS = tuple(_encode_varint(value) for value in range(_SMALL))
_CUT_MARK = bytes((CURRENT,))


def _varint(value: int) -> bytes:
    return _SMALL_VARINTS[value] if value < _SMALL else _encode_varint(value)


def time_text(moment: datetime) -> str:
    """`moment` as the publisher writes it, JavaScript's `toISOString()` (UTC, milliseconds,
    `Z`); "" when that text would not be exactly `moment` (a finer fraction), so nothing is
    cut for it."""
    at = moment.astimezone(UTC)
    if at.microsecond % 1000:
        return ""
    return (
        f"{at.year:04d}-{at.month:02d}-{at.day:02d}T{at.hour:02d}:{at.minute:02d}"
        f":{at.second:02d}.{at.microsecond // 1000:03d}Z"
    )


def row_ids(event_id: str, user_id: str, time: str) -> tuple[str, str, str]:
    """What `compress` cuts out of a payload, from the columns of its row: the eventId, the
    userId and the event time's text (`time_text` of `event_time`)."""
    return event_id, user_id, time


_IDS_CUT = len(_CUTS[CURRENT])


def cut(payload: bytes, ids: tuple[str, ...]) -> tuple[bytes, bytes]:
    """`payload` without `ids` (`row_ids` of its row) wherever they occur in it, and the
    marks of a payload that say where they were."""
    if len(ids) != _IDS_CUT:
        raise ValueError(f"a payload is stored with {_IDS_CUT} ids cut, not {len(ids)}")
    # The usual case, once per event: all three in the payload, in the order cut. Each
    # length is taken once: this runs for every event the gateway accepts.
    try:
        first, second, third = ids[0].encode(), ids[2].encode(), ids[1].encode()
    except UnicodeEncodeError:  # a lone surrogate: the general case below
        first = b""
    if first and second and third:
        size_one, size_two = len(first), len(second)
        one = payload.find(first)
        two = payload.find(second, one + size_one) if one >= 0 else -1
        three = payload.find(third, two + size_two) if two >= 0 else -1
        if 0 <= three < _SMALL:
            marks = (
                _CUT_MARK
                + _SMALL_VARINTS[one + 1]
                + _SMALL_VARINTS[two - size_one + 1]
                + _SMALL_VARINTS[three - size_one - size_two + 1]
            )
            rest = b"".join(
                (
                    payload[:one],
                    payload[one + size_one : two],
                    payload[two + size_two : three],
                    payload[three + len(third) :],
                )
            )
            return rest, marks
    found = [_CUT_MARK]
    rest = payload
    for index in _CUTS[CURRENT]:
        value = ids[index].encode("utf-8", "surrogatepass")
        at = rest.find(value) if value else -1
        if at >= 0:
            rest = rest[:at] + rest[at + len(value) :]
        found.append(_varint(at + 1))
    return rest, b"".join(found)


def compress(payload: bytes, ids: tuple[str, ...]) -> bytes:
    """An event's JSON bytes compressed with the current dictionary, `ids` (`row_ids` of
    its row) cut out of them first."""
    rest, marks = cut(payload, ids)
    return marks + _compressor().compress(rest)[len(_MAGIC) :]


def decompress(blob: bytes, ids: tuple[str, ...] = ()) -> bytes:
    """The JSON bytes `compress` was given: `ids` must be the ones it was given."""
    order = _CUTS.get(blob[0]) if blob else None
    if order is None:
        return _frame(blob)
    if len(ids) < len(order):
        raise ValueError(f"a payload with {len(order)} ids cut out needs them back")
    places = []
    position = 1
    for _ in order:
        place = shift = 0
        while True:
            byte = blob[position]
            position += 1
            place |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        places.append(place)
    if blob[0] == _CUT_IDS:
        text = _frame(blob[position:])
    else:
        text = _decompressor(blob[0]).decompressobj().decompress(_MAGIC + blob[position:])
    for index, place in reversed(list(zip(order, places, strict=True))):
        if place:
            value = ids[index].encode("utf-8", "surrogatepass")
            text = text[: place - 1] + value + text[place - 1 :]
    return text


def _frame(frame: bytes) -> bytes:
    dict_id = zstandard.get_frame_parameters(frame).dict_id
    return _decompressor(dict_id).decompress(frame)
