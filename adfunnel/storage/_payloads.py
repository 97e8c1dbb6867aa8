"""Event payloads compressed with zstd and a dictionary of the publisher's formats (SPEC §9).

An event's JSON is ~420 bytes, most of it the same keys and values in every event: zstd at
its fastest level, primed with a 16 KB dictionary trained on those formats, keeps ~115. The
gateway compresses (it has each event's bytes in hand, and the bus then carries the smaller
form too); PostgreSQL stores the bytes as they come; readers decompress. Every frame names
its dictionary, so rows stay readable after a new dictionary is shipped
(`python -m adfunnel.tools.train_dictionary`): a dictionary that compressed a row is never
removed.

The eventId and userId are random and so cost a third of the compressed bytes, while the
row keeps both in its own columns anyway. So the gateway cuts them out of the bytes before
compressing and records where they were, and a reader puts them back from the row. Rows
stored before that hold a bare frame, whose first byte is never the marker's.
"""

from __future__ import annotations

import threading
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


def _compressor() -> zstandard.ZstdCompressor:
    made: zstandard.ZstdCompressor | None = getattr(_local, "compressor", None)
    if made is None:
        made = zstandard.ZstdCompressor(
            level=1,
            dict_data=DICTIONARIES[CURRENT],
            write_checksum=False,
            write_content_size=True,
            write_dict_id=True,
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
# a LEB128 varint, then the zstd frame of what is left.
_CUT = 1


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
_CUT_MARK = bytes((_CUT,))


def _varint(value: int) -> bytes:
    return _SMALL_VARINTS[value] if value < _SMALL else _encode_varint(value)


def compress(payload: bytes, ids: tuple[str, ...] = ()) -> bytes:
    """An event's JSON bytes compressed, as a zstd frame naming the current dictionary; with
    `ids` (the row's eventId and userId) cut out of the bytes first when they occur in them."""
    compressor = _compressor()
    if len(ids) == 2:
        # The usual case, once per event: both ids in the payload, the eventId first.
        try:
            first, second = ids[0].encode(), ids[1].encode()
        except UnicodeEncodeError:  # a lone surrogate: the general case below
            first = second = b""
        at = payload.find(first) if first and second else -1
        after = at + len(first)
        then = payload.find(second, after) if at >= 0 else -1
        if 0 <= then < _SMALL:
            return b"".join(
                (
                    _CUT_MARK,
                    _SMALL_VARINTS[at + 1],
                    _SMALL_VARINTS[then - len(first) + 1],
                    compressor.compress(
                        payload[:at] + payload[after:then] + payload[then + len(second) :]
                    ),
                )
            )
    elif not ids:
        return compressor.compress(payload)
    marks = bytearray((_CUT,))
    rest = payload
    for value in ids:
        cut = value.encode("utf-8", "surrogatepass")
        at = rest.find(cut) if cut else -1
        if at >= 0:
            rest = rest[:at] + rest[at + len(cut) :]
        marks += _varint(at + 1)
    return bytes(marks) + compressor.compress(rest)


def decompress(blob: bytes, ids: tuple[str, ...] = ()) -> bytes:
    """The JSON bytes `compress` was given: `ids` must be the ones it was given."""
    if blob[:1] != _CUT_MARK:
        return _frame(blob)
    if not ids:
        raise ValueError("a payload with its ids cut out needs them back")
    places = []
    position = 1
    for _ in ids:
        place = shift = 0
        while True:
            byte = blob[position]
            position += 1
            place |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        places.append(place)
    text = _frame(blob[position:])
    for value, place in reversed(list(zip(ids, places, strict=True))):
        if place:
            text = text[: place - 1] + value.encode("utf-8", "surrogatepass") + text[place - 1 :]
    return text


def _frame(frame: bytes) -> bytes:
    dict_id = zstandard.get_frame_parameters(frame).dict_id
    return _decompressor(dict_id).decompress(frame)
