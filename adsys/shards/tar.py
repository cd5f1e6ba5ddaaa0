"""Lean tar reader: one shard's samples read and checked against its ``manifest.json`` record.

Tar alone cannot tell a complete shard from a damaged one: a corrupt header mid-shard reads
as the end of the archive and a corrupt payload reads as data. Every shard is therefore read
against its manifest record (:func:`read_shard`): each sample's checksum is verified, and a
shard that ends early (truncated, or a header overwritten) reports every sample it lost.
Each problem is yielded with the sample position it concerns (:class:`ShardRead`);
:class:`~adsys.shards.stream.ShardStream` and :func:`~adsys.shards.verify.verify_shards`
decide what to do with it. :func:`load_shard_manifest` reads the manifest itself.
"""

from __future__ import annotations

import contextlib
import logging
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import webdataset as wds

from adsys.shards.codecs import sample_checksum
from adsys.shards.sample import Sample, decode_sample
from adsys.shards.schema import (
    MANIFEST_NAME,
    MAX_MEMBER_BYTES,
    REQUIRED_FIELDS,
    ShardFormatError,
    ShardManifest,
    ShardRecord,
    parse_member_name,
)

log = logging.getLogger(__name__)

_READ_BUFFER = 1 << 20
_ZERO_BLOCK = bytes(tarfile.BLOCKSIZE)


@dataclass
class ShardRead:
    """One sample position of a shard: the decoded ``sample``, or the ``problem`` with it."""

    position: int
    sample: Sample | None = None
    problem: str | None = None


def load_shard_manifest(source: str | Path) -> tuple[ShardManifest, str]:
    """``(manifest, base URL)`` from a build folder, a manifest path, or a manifest URL."""
    source = str(source)
    if Path(source).is_dir():
        source = str(Path(source) / MANIFEST_NAME)
    with contextlib.closing(wds.gopen(source, "rb")) as f:
        manifest = ShardManifest.from_json(f.read(), source)
    return manifest, source.rsplit("/", 1)[0] if "/" in source else "."


def _read_exact(stream: Any, size: int) -> bytes:
    """Exactly ``size`` bytes of ``stream`` (one read and one copy from a file), or
    EOFError at the end of the data."""
    data = stream.read(size)
    if len(data) < size:  # raw pipes and sockets may return less per read
        parts = [data]
        while (got := sum(map(len, parts))) < size and (more := stream.read(size - got)):
            parts.append(more)
        data = b"".join(parts)
    if len(data) != size:
        raise EOFError(f"unexpected end of data ({len(data)} of {size} bytes)")
    return data


def _skip(stream: Any, size: int) -> bytes:
    """Skip ``size`` bytes of ``stream`` (seek where it can); ``b""``."""
    if getattr(stream, "seekable", lambda: False)():
        stream.seek(size, 1)
    else:
        while size:
            size -= len(_read_exact(stream, min(size, _READ_BUFFER)))
    return b""


def _tar_members(stream: Any) -> Iterator[tuple[str, int]]:
    """``(name, size)`` of each member of a tar stream, leaving ``stream`` at its payload:
    the caller reads (or skips) exactly ``size`` bytes before asking for the next one.

    A lean replacement for ``tarfile``'s stream mode, which copies every payload through its
    own buffer several times. Headers are parsed and checksummed by
    ``tarfile.TarInfo.frombuf`` (a damaged one raises ``tarfile.HeaderError``); PAX headers
    (long names) are applied; anything but a regular file raises
    :class:`ShardFormatError`; a zero block ends the archive.
    """
    pax: dict[str, str] = {}
    while True:
        block = _read_exact(stream, tarfile.BLOCKSIZE)
        if block == _ZERO_BLOCK:
            return
        info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
        if info.size > MAX_MEMBER_BYTES:
            raise ShardFormatError(f"member {info.name!r} is not a regular file we wrote")
        if info.type in (tarfile.XHDTYPE, tarfile.XGLTYPE):
            records = _read_exact(stream, info.size)
            _read_exact(stream, -info.size % tarfile.BLOCKSIZE)
            if info.type == tarfile.XHDTYPE:
                pax = _pax_records(records)
            continue
        if not info.isreg():
            raise ShardFormatError(f"member {info.name!r} is not a regular file we wrote")
        size = int(pax.get("size", info.size))
        yield pax.get("path", info.name), size
        _read_exact(stream, -size % tarfile.BLOCKSIZE)
        pax = {}


def _pax_records(data: bytes) -> dict[str, str]:
    """Key/value records of a PAX extended header (``"<len> <key>=<value>\\n"`` each)."""
    out, pos = {}, 0
    try:
        while pos < len(data):
            space = data.index(b" ", pos)
            length = int(data[pos:space])
            key, _, value = data[space + 1 : pos + length - 1].partition(b"=")
            out[key.decode()] = value.decode("utf-8", "surrogateescape")
            pos += length
    except ValueError as exc:
        raise ShardFormatError(f"malformed PAX header ({exc})") from exc
    return out


def read_shard(
    url: str,
    shard: ShardRecord,
    *,
    wanted: Callable[[int], bool] | None = None,
    fields: tuple[str, ...] = REQUIRED_FIELDS,
) -> Iterator[ShardRead]:
    """Read one tar shard (any URL ``webdataset.gopen`` opens) against its record.

    Yields one :class:`ShardRead` per sample position of ``shard`` that ``wanted`` accepts
    (default: all), in order: decoded (only ``fields``; checksum verified) or with the
    problem found. Positions lost to truncation or a damaged header come last, one each.
    """
    expected = shard.samples
    position = 0  # position of the sample being read
    key, members = None, []

    def finish() -> ShardRead | None:
        nonlocal position
        pos, position = position, position + 1
        if wanted is not None and not wanted(pos):
            return None
        if pos >= len(expected):
            return ShardRead(pos, problem=f"{url}: extra sample {key!r} beyond the manifest")
        record = expected[pos]
        if key != record.key or sample_checksum(members) != record.crc32c:
            return ShardRead(pos, problem=f"{url}: sample {record.key} (#{pos}) checksum mismatch")
        try:
            return ShardRead(pos, sample=decode_sample(members, fields))
        except (ShardFormatError, KeyError, TypeError) as exc:
            return ShardRead(pos, problem=f"{url}: sample {record.key} (#{pos}) undecodable: {exc}")

    try:
        with contextlib.closing(wds.gopen(url, "rb")) as stream:
            for name, size in _tar_members(stream):
                k, _, _ = parse_member_name(name)
                if key is not None and k != key:
                    if (read := finish()) is not None:
                        yield read
                    members = []
                key = k
                keep = wanted is None or wanted(position)
                members.append((name, _read_exact(stream, size) if keep else _skip(stream, size)))
    except (tarfile.TarError, OSError, EOFError, ShardFormatError) as exc:
        log.warning("%s: unreadable after %d sample(s): %s", url, position, exc)
    if key is not None and (read := finish()) is not None:  # whole, or found short
        yield read
    lost = f"{url}: shard ends after {position} of {len(expected)} samples (truncated or damaged)"
    for pos in range(position, len(expected)):
        if wanted is None or wanted(pos):
            yield ShardRead(pos, problem=lost)
