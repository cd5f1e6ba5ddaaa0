"""The shard format: the one place that names sample keys, dtypes, file names and versions.

A *sample* is one subject (voxel order (x, y, z), RAS+, on its preprocessed grid)::

    image     float16  (x, y, z)      clean preprocessed image in [0, 1]
    mask      uint8    (x, y, z)      brain mask {0, 1}
    variants  float16  (K, x, y, z)   K pseudo-pathological versions of ``image``
    lesions   uint8    (K, x, y, z)   their binary lesion masks (float16 P_T with
                                      ``lesion_format: soft``)
    seg       uint8    (x, y, z)      ground-truth lesion mask (only when the cohort has one)
    meta.json                         subject id, split, grids, preprocessing record, each
                                      variant's box, brain voxels per axial slice, source
                                      sha256, versions
    replay.json                       each variant's replay parameters (``meta["variants"]``
                                      once decoded; a separate member so that a stream,
                                      which never replays, does not parse them)

How a tar shard stores them (schema version 4: version 3 + the manifest's cohort
``statistics``), for a fast slice stream:

* **Axial-slice-major**: each volume's ``.npy`` holds the (z, x, y) C-order array, so an
  axial slice is one contiguous (x, y) block that batches copy without a transpose;
  decoding hands out the (x, y, z) view of it.
* **Variants as boxes**: a pseudo-pathological variant differs from the image only near its
  lesion. ``meta.json`` records per variant the half-open box ``[x0, y0, z0, x1, y1, z1]``
  outside which the variant equals the image bit for bit and the lesion is zero
  (:func:`~adsys.shards.sample.variant_boxes`); the ``lesions`` member holds just the boxes'
  contents and the ``variants`` member the boxes' bits XOR the image's (uint16: zero
  wherever the variant is unchanged, so it compresses to almost nothing), each box
  (z, x, y)-major, concatenated in variant order (1-D). A reader that needs slice z of
  variant k XORs that box's slice onto the image slice; nothing else is decoded.
  :class:`~adsys.shards.sample.Sample` rebuilds the dense (K, x, y, z) arrays on request,
  exactly.

Each array is one member ``<key>.<field>.npy``, compressed as ``.npy.lz4`` (LZ4 block, the
default: decodes ~8x faster than zstd for ~1.3x the bytes) or ``.npy.zst`` (zstd);
``<key>`` is the subject id with ``.`` escaped (WebDataset splits keys at the first dot).
Arrays are plain ``.npy`` (never pickled) and are decoded without any pickle path: object
dtypes are refused. ``manifest.json`` at the output root lists every shard with its sha256,
size and samples (key, subject id, per-sample CRC-32C of the stored member bytes, cheap
enough to check on every read), so readers can detect truncated shards and corrupt members
that tar alone would hide. The Zarr store keeps dense arrays.

This module holds the names, versions, output layout, field dtypes, member names and the
``manifest.json`` records. :mod:`adsys.shards.codecs` turns arrays into member bytes and
back and checksums a sample's members; :mod:`adsys.shards.sample` holds the decoded
sample, its boxes and its encoding into members and back.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from adsys.errors import AdsysError, InputError
from adsys.synth.variants import LesionFormat

SCHEMA_VERSION = 4

# Output layout, relative to the spec's ``out`` folder.
MANIFEST_NAME = "manifest.json"
SHARD_DIR = "shards"
ZARR_NAME = "cohort.zarr"
WORK_DIR = ".work"  # staged samples of an unfinished run

SPLITS = ("train", "val", "test")
ARRAY_FIELDS = ("image", "mask", "variants", "lesions", "seg")  # member order in a sample
REQUIRED_FIELDS = ("image", "mask", "variants", "lesions")
META_FIELD = "meta"
REPLAY_FIELD = "replay"  # meta["variants"], stored apart
ALL_FIELDS = (*ARRAY_FIELDS, REPLAY_FIELD)  # every member decode_sample can decode
META_EXT = "json"
Codec = Literal["lz4", "zstd", "none"]
CODEC_EXT: dict[str, str] = {"lz4": "npy.lz4", "zstd": "npy.zst", "none": "npy"}
_EXT_CODEC = {ext: codec for codec, ext in CODEC_EXT.items()}

_DTYPES = {"image": np.float16, "mask": np.uint8, "variants": np.float16, "seg": np.uint8}
_LESION_DTYPES = {"binary": np.uint8, "soft": np.float16}
_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9%_-]*$")
_SHARD_NAME = re.compile(rf"{SHARD_DIR}/(?P<split>{'|'.join(SPLITS)})-[0-9]{{6,}}\.tar")
MAX_MEMBER_BYTES = 4 << 30  # a member larger than this is not one of ours


class ShardFormatError(AdsysError):
    """A shard, sample or manifest does not follow this schema (or is corrupt)."""


class ShardManifestError(InputError, ShardFormatError):
    """A ``manifest.json`` names a shard or store path its build cannot have written."""


def field_dtype(name: str, lesion_format: LesionFormat = "binary") -> np.dtype:
    """The on-disk dtype of array field ``name``."""
    if name == "lesions":
        return np.dtype(_LESION_DTYPES[lesion_format])
    return np.dtype(_DTYPES[name])


def packed_dtype(field: str, dtype: np.dtype) -> np.dtype:
    """The dtype a tar member stores ``field`` (of on-disk dtype ``dtype``) in."""
    return np.dtype(np.uint16) if field == "variants" else np.dtype(dtype)


def sample_key(subject_id: str) -> str:
    """WebDataset key of a subject: its id with ``.`` escaped as ``%2E``."""
    return subject_id.replace(".", "%2E")


def subject_id_of(key: str) -> str:
    """Inverse of :func:`sample_key`."""
    return key.replace("%2E", ".")


def member_name(key: str, field: str, codec: Codec) -> str:
    """Tar member name of ``field`` of sample ``key`` (arrays stored with ``codec``)."""
    if field in (META_FIELD, REPLAY_FIELD):
        return f"{key}.{field}.{META_EXT}"
    return f"{key}.{field}.{CODEC_EXT[codec]}"


def shard_name(split: str, index: int) -> str:
    """Path of shard ``index`` of ``split`` relative to the output root (what the writer
    names it and the only form :meth:`ShardManifest.from_json` accepts)."""
    return f"{SHARD_DIR}/{split}-{index:06d}.tar"


def parse_member_name(name: str) -> tuple[str, str, Codec]:
    """``(key, field, codec)`` of a tar member name (``"none"`` for the JSON members); raise
    on anything unexpected.

    Only flat names ``<key>.<field>.<ext>`` with a known field and extension pass: no
    directories, no ``..``, no absolute paths, nothing a reader could be tricked by.
    """
    key, _, rest = name.partition(".")
    field, _, ext = rest.partition(".")
    if "/" in name or "\\" in name or not _KEY.match(key):
        raise ShardFormatError(f"unexpected tar member name {name!r}")
    if field in (META_FIELD, REPLAY_FIELD) and ext == META_EXT:
        return key, field, "none"
    if field in ARRAY_FIELDS and ext in _EXT_CODEC:
        return key, field, _EXT_CODEC[ext]
    raise ShardFormatError(f"unexpected tar member {name!r} (field {field!r}, ext {ext!r})")


# --- manifest.json -----------------------------------------------------------------------


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SampleRecord(_Record):
    """One sample of a shard: its key, subject, row in the split, checksum
    (:func:`~adsys.shards.codecs.sample_checksum`) and size."""

    key: str
    subject_id: str
    row: int
    crc32c: str
    nbytes: int


class ShardRecord(_Record):
    """One tar shard: ``name`` is its path relative to the output root."""

    name: str
    split: str
    sha256: str
    nbytes: int
    count: int
    samples: list[SampleRecord]


class SplitRecord(_Record):
    """A split of the cohort: subjects in the cohort manifest (rows), variants per subject."""

    subjects: list[str]
    num_variants: int
    generator: str | None
    shape: tuple[int, int, int]
    has_seg: bool


class FailureRecord(_Record):
    subject_id: str
    split: str
    reason: str


class ShardManifest(_Record):
    """``manifest.json``: what was built, from which spec, and what failed.

    ``statistics``: cohort statistics computed from the train split when the build
    completes, which online corruptions take as options (``tissue_centroids``: K = 5
    k-means centres of train brain intensities, :func:`adsys.synth.tissue.tissue_centroids`).
    """

    schema_version: int = SCHEMA_VERSION
    status: Literal["building", "complete"] = "building"
    spec_digest: str
    spec: dict[str, Any]
    formats: list[str]
    lesion_format: LesionFormat
    zarr: str | None = None
    splits: dict[str, SplitRecord] = Field(default_factory=dict)
    shards: list[ShardRecord] = Field(default_factory=list)
    failed: list[FailureRecord] = Field(default_factory=list)
    statistics: dict[str, Any] = Field(default_factory=dict)

    def shards_of(self, split: str) -> list[ShardRecord]:
        """The shards of one split, in order."""
        return [s for s in self.shards if s.split == split]

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes, where: str = "manifest.json") -> ShardManifest:
        try:
            manifest = cls.model_validate_json(text)
        except ValueError as exc:
            raise ShardFormatError(f"{where}: not a valid shard manifest ({exc})") from exc
        if manifest.schema_version != SCHEMA_VERSION:
            raise ShardFormatError(
                f"{where}: schema version {manifest.schema_version}, this adsys reads "
                f"{SCHEMA_VERSION}; rebuild the shards"
            )
        manifest._check_paths(where)
        return manifest

    def _check_paths(self, where: str) -> None:
        """Refuse shard names and a store path the build cannot have written.

        Names go into paths and into ``shard_url`` templates (a ``pipe:`` template runs a
        shell command), so a manifest is input like any other: a shard name must be
        :func:`shard_name` of its own split (no other folder, no ``..``, no shell syntax)
        and the store, when there is one, :data:`ZARR_NAME`.
        """
        bad = [
            repr(s.name)
            for s in self.shards
            if not (m := _SHARD_NAME.fullmatch(s.name)) or m["split"] != s.split
        ]
        if self.zarr not in (None, ZARR_NAME):
            bad.append(f"zarr store {self.zarr!r}")
        if bad:
            raise ShardManifestError(
                where,
                f"refusing path(s) the shard build never writes: {', '.join(bad)} (a shard "
                f"is named {SHARD_DIR}/<split>-NNNNNN.tar after its own split; the store "
                f"is {ZARR_NAME!r})",
                "use the manifest.json written by `adsys shards build` (rebuild the shards "
                "if it was edited or replaced)",
            )
