"""Event payloads compressed with zstd and a dictionary of the publisher's formats (SPEC §9).

An event's JSON is ~420 bytes, most of it the same keys and values in every event: zstd at
its fastest level, primed with a 16 KB dictionary trained on those formats, keeps ~115. The
gateway compresses (it has each event's bytes in hand, and the bus then carries the smaller
form too); PostgreSQL stores the bytes as they come; readers decompress. Every frame names
its dictionary, so rows stay readable after a new dictionary is shipped
(`python -m adfunnel.tools.train_dictionary`): a dictionary that compressed a row is never
removed.
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


def compress(payload: bytes) -> bytes:
    """An event's JSON bytes as a zstd frame naming the current dictionary."""
    return _compressor().compress(payload)


def decompress(frame: bytes) -> bytes:
    """The JSON bytes of a frame `compress` made (with whichever dictionary it names)."""
    dict_id = zstandard.get_frame_parameters(frame).dict_id
    return _decompressor(dict_id).decompress(frame)
