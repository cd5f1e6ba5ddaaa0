"""Deterministic, atomic tar writers: staged samples and size-bounded WebDataset shards.

Every tar written here is a pure function of its members: fixed member order, mtime 0,
uid/gid 0, empty user/group names, mode 0644, PAX format. A file appears under its final
name only complete (written to a temporary name, fsynced, renamed), so an interrupted build
leaves whole shards or none, and a resumed build writes the same bytes.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from pathlib import Path

from adsys.shards.schema import SampleRecord, ShardRecord, shard_name

Members = list[tuple[str, bytes]]
BLOCK = tarfile.BLOCKSIZE


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def member_nbytes(size: int) -> int:
    """Bytes a member of ``size`` bytes takes in a tar (header + padded payload)."""
    return BLOCK + -(-size // BLOCK) * BLOCK


class _HashingFile:
    """A write-only file wrapper that hashes and counts what passes through."""

    def __init__(self, f) -> None:
        self.f = f
        self.sha256 = hashlib.sha256()
        self.nbytes = 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.nbytes += len(data)
        return self.f.write(data)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _AtomicTar:
    """A tar written to ``.tmp-<name>`` beside ``path`` and renamed into place on commit."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tmp = path.with_name(f".tmp-{path.name}")
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.tmp, "wb")  # closed in commit()
        self._hash = _HashingFile(self._file)
        self._tar = tarfile.open(fileobj=self._hash, mode="w|", format=tarfile.PAX_FORMAT)
        self.nbytes = 0  # payload + headers so far (excludes the end-of-archive blocks)

    def add(self, name: str, data: bytes) -> None:
        self._tar.addfile(_tarinfo(name, len(data)), _BytesReader(data))
        self.nbytes += member_nbytes(len(data))

    def commit(self) -> tuple[str, int]:
        """Close, fsync, rename; return ``(sha256, size)`` of the final file."""
        self._tar.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self.tmp, self.path)
        _fsync_dir(self.path.parent)
        return self._hash.sha256.hexdigest(), self._hash.nbytes


class _BytesReader:
    """Minimal file-like over bytes for ``TarFile.addfile`` (avoids a BytesIO copy)."""

    def __init__(self, data: bytes) -> None:
        self._view = memoryview(data)
        self._pos = 0

    def read(self, n: int = -1) -> bytes:
        end = len(self._view) if n < 0 else self._pos + n
        out = self._view[self._pos : end]
        self._pos += len(out)
        return bytes(out)


def write_tar(path: str | Path, members: Members) -> tuple[str, int]:
    """Write ``members`` as one deterministic tar at ``path``, atomically; ``(sha256, size)``."""
    tar = _AtomicTar(Path(path))
    for name, data in members:
        tar.add(name, data)
    return tar.commit()


def read_tar(path: str | Path) -> Members:
    """All members of a (small, trusted: written by :func:`write_tar`) tar file, in order."""
    with tarfile.open(path, mode="r:") as tf:
        return [(m.name, tf.extractfile(m).read()) for m in tf if m.isreg()]


class TarShardWriter:
    """Appends samples of one split to ``shards/<split>-NNNNNN.tar`` files.

    A shard is closed (committed) as soon as it holds at least ``target_bytes``, so its
    boundaries depend only on the samples' sizes and order, never on timing.
    """

    def __init__(self, root: str | Path, split: str, target_bytes: int, first_index: int = 0):
        self.root = Path(root)
        self.split = split
        self.target_bytes = target_bytes
        self.index = first_index
        self._tar: _AtomicTar | None = None
        self._samples: list[SampleRecord] = []

    def add(self, members: Members, record: SampleRecord) -> ShardRecord | None:
        """Append one sample's members; returns the shard's record when this closed it."""
        if self._tar is None:
            self._tar = _AtomicTar(self.root / shard_name(self.split, self.index))
        for name, data in members:
            self._tar.add(name, data)
        self._samples.append(record)
        return self.close() if self._tar.nbytes >= self.target_bytes else None

    def close(self) -> ShardRecord | None:
        """Commit the open shard (if any) and return its record."""
        if self._tar is None:
            return None
        sha, nbytes = self._tar.commit()
        record = ShardRecord(
            name=shard_name(self.split, self.index),
            split=self.split,
            sha256=sha,
            nbytes=nbytes,
            count=len(self._samples),
            samples=self._samples,
        )
        self._tar, self._samples = None, []
        self.index += 1
        return record
