"""Member bytes: ``.npy`` arrays stored plain, LZ4 or zstd (decoded without any pickle path),
and the per-sample CRC-32C checksum of a sample's stored members (:mod:`adsys.shards.schema`).
"""

from __future__ import annotations

import functools
import io
import math

import google_crc32c
import numpy as np
from numcodecs import LZ4, Zstd

from adsys.shards.schema import CODEC_EXT, Codec, ShardFormatError


def encode_array(array: np.ndarray, codec: Codec, level: int = 3) -> bytes:
    """``.npy`` bytes (``allow_pickle=False``), compressed with ``codec`` (``level``: zstd's)."""
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    raw = buf.getvalue()
    return raw if codec == "none" else _compressor(codec, level).encode(raw)


def decode_array(data: bytes, codec: Codec) -> np.ndarray:
    """Array from :func:`encode_array` bytes; zero-copy (read-only) for uncompressed data.

    Parses the ``.npy`` header itself and refuses object dtypes, so no pickle path exists.
    """
    try:
        raw = data if codec == "none" else _compressor(codec).decode(data)
        start = _npy_header_end(raw)
        shape, fortran, dtype = _npy_header(bytes(raw[:start]))
    except (ValueError, RuntimeError) as exc:
        raise ShardFormatError(f"not a {CODEC_EXT[codec]} array ({exc})") from exc
    count = math.prod(shape)
    if len(raw) - start != count * dtype.itemsize:
        raise ShardFormatError(f".npy payload size does not match its header {shape} {dtype}")
    arr = np.frombuffer(raw, dtype=dtype, count=count, offset=start)
    return arr.reshape(shape, order="F" if fortran else "C")


def _compressor(codec: Codec, level: int = 3) -> LZ4 | Zstd:
    """The numcodecs codec of a compressed member (``level``: zstd's, for encoding)."""
    return LZ4(acceleration=1) if codec == "lz4" else Zstd(level=level)


def _npy_header_end(raw: bytes) -> int:
    """Offset of the payload of ``.npy`` bytes (magic, version, header length, header)."""
    if raw[:6] != b"\x93NUMPY" or len(raw) < 10:
        raise ValueError("no .npy magic")
    width = 2 if raw[6] == 1 else 4
    return 8 + width + int.from_bytes(raw[8 : 8 + width], "little")


@functools.lru_cache(maxsize=256)
def _npy_header(prefix: bytes) -> tuple[tuple[int, ...], bool, np.dtype]:
    """``(shape, fortran_order, dtype)`` of a ``.npy`` prefix, by numpy's own (literal-only)
    parser; cached, since a shard repeats the same few headers."""
    fp = io.BytesIO(prefix)
    version = np.lib.format.read_magic(fp)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else (
        np.lib.format.read_array_header_2_0
    )
    shape, fortran, dtype = read(fp)
    if dtype.hasobject:
        raise ShardFormatError(f"refusing a .npy array with object dtype {dtype}")
    return shape, fortran, dtype


def sample_checksum(members: list[tuple[str, bytes]]) -> str:
    """Per-sample checksum: CRC-32C (hex) over each member's name, size and stored bytes,
    in order. It guards against corruption, not tampering (the shard's sha256 does that);
    at tens of GB/s it costs a reader nothing."""
    crc = 0
    for name, data in members:
        crc = google_crc32c.extend(crc, name.encode())
        crc = google_crc32c.extend(crc, len(data).to_bytes(8, "little"))
        crc = google_crc32c.extend(crc, data)
    return f"{crc:08x}"
