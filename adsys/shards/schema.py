"""The shard format: the one place that names sample keys, dtypes, file names and versions.

A *sample* is one subject (voxel order (x, y, z), RAS+, on its preprocessed grid)::

    image     float16  (x, y, z)      clean preprocessed image in [0, 1]
    mask      uint8    (x, y, z)      brain mask {0, 1}
    variants  float16  (K, x, y, z)   K pseudo-pathological versions of ``image``
    lesions   uint8    (K, x, y, z)   their binary lesion masks (float16 P_T with
                                      ``lesion_format: soft``)
    seg       uint8    (x, y, z)      ground-truth lesion mask (only when the cohort has one)
    meta.json                         subject id, split, grids, preprocessing record, each
                                      variant's replay parameters, source sha256, versions

Arrays are stored in Fortran order (first axis fastest), so an axial slice ``[..., z]`` of a
decoded sample lies in one contiguous block: slicing needs no wide strided gather.
In a WebDataset tar shard each array is one member ``<key>.<field>.npy`` (``.npy.zst`` when
zstd-compressed); ``<key>`` is the subject id with ``.`` escaped (WebDataset splits keys at
the first dot). Arrays are plain ``.npy`` (never pickled) and are decoded without any pickle
path: object dtypes are refused. ``manifest.json`` at the output root lists every shard with
its sha256, size and samples (key, subject id, per-sample sha256), so readers can detect
truncated shards and corrupt members that tar alone would hide.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numcodecs import Zstd
from pydantic import BaseModel, ConfigDict, Field

from adsys.errors import AdsysError

SCHEMA_VERSION = 1

# Output layout, relative to the spec's ``out`` folder.
MANIFEST_NAME = "manifest.json"
SHARD_DIR = "shards"
ZARR_NAME = "cohort.zarr"
WORK_DIR = ".work"  # staged samples of an unfinished run

SPLITS = ("train", "val", "test")
ARRAY_FIELDS = ("image", "mask", "variants", "lesions", "seg")  # member order in a sample
REQUIRED_FIELDS = ("image", "mask", "variants", "lesions")
META_FIELD = "meta"
NPY_EXT = "npy"
ZST_EXT = "npy.zst"
META_EXT = "json"

LesionFormat = Literal["binary", "soft"]
_DTYPES = {"image": np.float16, "mask": np.uint8, "variants": np.float16, "seg": np.uint8}
_LESION_DTYPES = {"binary": np.uint8, "soft": np.float16}
_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9%_-]*$")
MAX_MEMBER_BYTES = 4 << 30  # a member larger than this is not one of ours


class ShardFormatError(AdsysError):
    """A shard, sample or manifest does not follow this schema (or is corrupt)."""


def field_dtype(name: str, lesion_format: LesionFormat = "binary") -> np.dtype:
    """The on-disk dtype of array field ``name``."""
    if name == "lesions":
        return np.dtype(_LESION_DTYPES[lesion_format])
    return np.dtype(_DTYPES[name])


def sample_key(subject_id: str) -> str:
    """WebDataset key of a subject: its id with ``.`` escaped as ``%2E``."""
    return subject_id.replace(".", "%2E")


def subject_id_of(key: str) -> str:
    """Inverse of :func:`sample_key`."""
    return key.replace("%2E", ".")


def member_name(key: str, field: str, compressed: bool) -> str:
    """Tar member name of ``field`` of sample ``key``."""
    if field == META_FIELD:
        return f"{key}.{META_FIELD}.{META_EXT}"
    return f"{key}.{field}.{ZST_EXT if compressed else NPY_EXT}"


def parse_member_name(name: str) -> tuple[str, str, bool]:
    """``(key, field, compressed)`` of a tar member name; raise on anything unexpected.

    Only flat names ``<key>.<field>.<ext>`` with a known field and extension pass: no
    directories, no ``..``, no absolute paths, nothing a reader could be tricked by.
    """
    key, _, rest = name.partition(".")
    field, _, ext = rest.partition(".")
    if "/" in name or "\\" in name or not _KEY.match(key):
        raise ShardFormatError(f"unexpected tar member name {name!r}")
    if field == META_FIELD and ext == META_EXT:
        return key, field, False
    if field in ARRAY_FIELDS and ext in (NPY_EXT, ZST_EXT):
        return key, field, ext == ZST_EXT
    raise ShardFormatError(f"unexpected tar member {name!r} (field {field!r}, ext {ext!r})")


def encode_array(array: np.ndarray, level: int | None) -> bytes:
    """``.npy`` bytes (``allow_pickle=False``), zstd-compressed at ``level`` unless None."""
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    raw = buf.getvalue()
    return raw if level is None else Zstd(level=level).encode(raw)


def decode_array(data: bytes, compressed: bool) -> np.ndarray:
    """Array from :func:`encode_array` bytes; zero-copy (read-only) for uncompressed data.

    Parses the ``.npy`` header itself and refuses object dtypes, so no pickle path exists.
    """
    raw = Zstd().decode(data) if compressed else data
    fp = io.BytesIO(raw)
    try:
        version = np.lib.format.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp)
    except ValueError as exc:
        raise ShardFormatError(f"not a .npy array ({exc})") from exc
    if dtype.hasobject:
        raise ShardFormatError(f"refusing a .npy array with object dtype {dtype}")
    count = int(np.prod(shape, dtype=np.int64))
    if len(raw) - fp.tell() != count * dtype.itemsize:
        raise ShardFormatError(f".npy payload size does not match its header {shape} {dtype}")
    arr = np.frombuffer(raw, dtype=dtype, count=count, offset=fp.tell())
    return arr.reshape(shape, order="F" if fortran else "C")


def sample_digest(members: list[tuple[str, bytes]]) -> str:
    """Per-sample checksum: sha256 over each member's name and stored bytes, in order."""
    h = hashlib.sha256()
    for name, data in members:
        h.update(name.encode())
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


@dataclass
class Sample:
    """One decoded subject. Arrays as stored (dtypes above), voxel order (x, y, z)."""

    key: str
    image: np.ndarray
    mask: np.ndarray
    variants: np.ndarray
    lesions: np.ndarray
    meta: dict[str, Any]
    seg: np.ndarray | None = None

    @property
    def subject_id(self) -> str:
        return subject_id_of(self.key)

    @property
    def arrays(self) -> dict[str, np.ndarray]:
        """The array fields present, in member order."""
        out = {f: getattr(self, f) for f in ARRAY_FIELDS}
        return {k: v for k, v in out.items() if v is not None}


def to_schema_arrays(
    image: np.ndarray,
    mask: np.ndarray,
    variants: np.ndarray,
    lesions: np.ndarray,
    seg: np.ndarray | None,
    lesion_format: LesionFormat,
) -> dict[str, np.ndarray]:
    """Cast float32/uint8 arrays to their on-disk dtypes and (Fortran) layout, checking
    shapes agree."""
    shape = image.shape
    if image.ndim != 3 or mask.shape != shape or (seg is not None and seg.shape != shape):
        raise ShardFormatError(f"image {image.shape}, mask {mask.shape} must share a 3D shape")
    if variants.shape[1:] != shape or lesions.shape != variants.shape:
        raise ShardFormatError(
            f"variants {variants.shape} and lesions {lesions.shape} must be (K, *{shape})"
        )
    arrays = {"image": image, "mask": mask, "variants": variants, "lesions": lesions, "seg": seg}
    return {
        k: np.asfortranarray(v, dtype=field_dtype(k, lesion_format))
        for k, v in arrays.items()
        if v is not None
    }


def sample_meta(
    *,
    subject_id: str,
    split: str,
    row: int,
    record: dict[str, Any],
    variants: list[dict[str, Any]],
    lesion_format: LesionFormat,
    has_seg: bool,
) -> dict[str, Any]:
    """``meta.json`` of a sample. ``record`` is the preprocessing record
    (:class:`~adsys.preprocess.Preprocessed`); ``variants`` one replay record per variant."""
    return {
        "schema_version": SCHEMA_VERSION,
        "subject_id": subject_id,
        "split": split,
        "row": row,
        "grid": record["grid"],
        "source_grid": record["source_grid"],
        "source_sha256": record["source"]["sha256"],
        "preprocess": record,
        "num_variants": len(variants),
        "variants": variants,
        "lesion_format": lesion_format,
        "has_seg": has_seg,
    }


def encode_sample(
    key: str, arrays: dict[str, np.ndarray], meta: dict[str, Any], level: int | None
) -> list[tuple[str, bytes]]:
    """Ordered tar members ``[(name, bytes)]`` of one sample (arrays in field order, meta last)."""
    members = [
        (member_name(key, f, level is not None), encode_array(arrays[f], level))
        for f in ARRAY_FIELDS
        if f in arrays
    ]
    blob = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()
    members.append((member_name(key, META_FIELD, False), blob))
    return members


def decode_sample(
    members: list[tuple[str, bytes]], fields: tuple[str, ...] = ARRAY_FIELDS
) -> Sample:
    """Decode the tar members of one sample; only ``fields`` are decompressed.

    Raises :class:`ShardFormatError` on mixed keys, duplicate or missing members, or
    arrays whose dtype or shape disagree with the schema and ``meta.json``.
    """
    key = None
    raw: dict[str, tuple[bytes, bool]] = {}
    for name, data in members:
        k, field, compressed = parse_member_name(name)
        if key is None:
            key = k
        if k != key or field in raw:
            raise ShardFormatError(f"member {name!r} does not belong to sample {key!r}")
        raw[field] = (data, compressed)
    missing = [f for f in (*REQUIRED_FIELDS, META_FIELD) if f not in raw]
    if key is None or missing:
        raise ShardFormatError(f"sample {key!r} lacks member(s) {missing}")
    try:
        meta = json.loads(raw[META_FIELD][0])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ShardFormatError(f"sample {key!r}: unreadable meta.json ({exc})") from exc
    shape = tuple(meta["grid"]["shape"])
    k = meta["num_variants"]
    expected = {"image": shape, "mask": shape, "seg": shape, "variants": (k, *shape)}
    expected["lesions"] = expected["variants"]
    arrays: dict[str, np.ndarray] = {}
    for field in fields:
        if field not in raw:
            continue
        arr = decode_array(*raw[field])
        want = field_dtype(field, meta["lesion_format"])
        if arr.dtype != want or arr.shape != expected[field]:
            raise ShardFormatError(
                f"sample {key!r}: {field} is {arr.dtype}{arr.shape}, "
                f"schema says {want}{expected[field]}"
            )
        arrays[field] = arr
    return Sample(key=key, meta=meta, **{f: arrays.get(f) for f in ARRAY_FIELDS})


# --- manifest.json -----------------------------------------------------------------------


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SampleRecord(_Record):
    """One sample of a shard: its key, subject, row in the split, checksum and size."""

    key: str
    subject_id: str
    row: int
    sha256: str
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
    """``manifest.json``: what was built, from which spec, and what failed."""

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
        return manifest
