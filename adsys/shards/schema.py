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

How a tar shard stores them (schema version 3), for a fast slice stream:

* **Axial-slice-major**: each volume's ``.npy`` holds the (z, x, y) C-order array, so an
  axial slice is one contiguous (x, y) block that batches copy without a transpose;
  decoding hands out the (x, y, z) view of it.
* **Variants as boxes**: a pseudo-pathological variant differs from the image only near its
  lesion. ``meta.json`` records per variant the half-open box ``[x0, y0, z0, x1, y1, z1]``
  outside which the variant equals the image bit for bit and the lesion is zero
  (:func:`variant_boxes`); the ``lesions`` member holds just the boxes' contents and the
  ``variants`` member the boxes' bits XOR the image's (uint16: zero wherever the variant
  is unchanged, so it compresses to almost nothing), each box (z, x, y)-major, concatenated
  in variant order (1-D). A reader that needs slice z of variant k XORs that box's slice
  onto the image slice; nothing else is decoded. :class:`Sample` rebuilds the dense
  (K, x, y, z) arrays on request, exactly.

Each array is one member ``<key>.<field>.npy``, compressed as ``.npy.lz4`` (LZ4 block, the
default: decodes ~8x faster than zstd for ~1.3x the bytes) or ``.npy.zst`` (zstd);
``<key>`` is the subject id with ``.`` escaped (WebDataset splits keys at the first dot).
Arrays are plain ``.npy`` (never pickled) and are decoded without any pickle path: object
dtypes are refused. ``manifest.json`` at the output root lists every shard with its sha256,
size and samples (key, subject id, per-sample CRC-32C of the stored member bytes, cheap
enough to check on every read), so readers can detect truncated shards and corrupt members
that tar alone would hide. The Zarr store keeps dense arrays.
"""

from __future__ import annotations

import functools
import io
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Literal

import google_crc32c
import numpy as np
from numcodecs import LZ4, Zstd
from pydantic import BaseModel, ConfigDict, Field

from adsys.errors import AdsysError

SCHEMA_VERSION = 3

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


def member_name(key: str, field: str, codec: Codec) -> str:
    """Tar member name of ``field`` of sample ``key`` (arrays stored with ``codec``)."""
    if field in (META_FIELD, REPLAY_FIELD):
        return f"{key}.{field}.{META_EXT}"
    return f"{key}.{field}.{CODEC_EXT[codec]}"


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


Region = tuple[slice, slice, slice]


def to_zmajor(volume: np.ndarray) -> np.ndarray:
    """The (z, x, y) C-order copy of an (x, y, z) array: the tar layout."""
    return np.ascontiguousarray(volume.transpose(2, 0, 1))


def from_zmajor(stored: np.ndarray) -> np.ndarray:
    """The (x, y, z) view of a (z, x, y) array (an axial slice stays one contiguous block)."""
    return stored.transpose(1, 2, 0)


def box_region(box: list[int]) -> Region:
    """Slices of a box ``[x0, y0, z0, x1, y1, z1]`` (half-open, voxels)."""
    return tuple(slice(lo, hi) for lo, hi in zip(box[:3], box[3:], strict=True))


def variant_boxes(image: np.ndarray, variants: np.ndarray, lesions: np.ndarray) -> list[list[int]]:
    """Per variant, the smallest box ``[x0, y0, z0, x1, y1, z1]`` (half-open) outside which
    the variant equals ``image`` bit for bit and its lesion is zero; ``[0] * 6`` when it
    equals the image everywhere. Arrays in their on-disk dtypes (:func:`to_schema_arrays`)."""
    boxes = []
    for variant, lesion in zip(variants, lesions, strict=True):
        differs = _bits(variant) != _bits(image)
        differs |= _bits(lesion) != 0
        box = [0] * 6
        if differs.any():
            spans = [np.flatnonzero(differs.any(axis=other)) for other in ((1, 2), (0, 2), (0, 1))]
            box = [int(s[0]) for s in spans] + [int(s[-1]) + 1 for s in spans]
        boxes.append(box)
    return boxes


def axial_brain_voxels(mask: np.ndarray) -> list[int]:
    """Brain voxels of each axial slice of an (x, y, z) {0, 1} mask: meta's record that lets
    a slice stream pick slices without summing masks."""
    return mask.reshape(-1, mask.shape[2]).sum(axis=0, dtype=np.int64).tolist()


def _bits(array: np.ndarray) -> np.ndarray:
    """The array's bit patterns (unsigned ints): compares -0.0 and 0.0 as different."""
    return array.view(np.dtype(f"u{array.dtype.itemsize}"))


@dataclass
class Sample:
    """One decoded subject. Arrays as stored (dtypes above), voxel order (x, y, z).

    Variants are kept as boxes (module doc): inside ``boxes[k]``, ``variant_parts[k]`` holds
    variant k's bits XOR the image's (uint16) and ``lesion_parts[k]`` its lesion (its bits
    XOR an empty lesion's); :meth:`variant`, :meth:`lesion` and :meth:`axial` cut dense
    arrays from them by XOR-ing the parts onto the image or zeros; :attr:`variants` and
    :attr:`lesions` rebuild the whole (K, x, y, z) stacks. Variant index -1 means "no
    variant": the clean image with an empty lesion. The parts are ``None`` when the sample
    was decoded without them.
    """

    key: str
    image: np.ndarray
    mask: np.ndarray
    meta: dict[str, Any]
    variant_parts: list[np.ndarray] | None = None
    lesion_parts: list[np.ndarray] | None = None
    seg: np.ndarray | None = None

    @classmethod
    def from_dense(
        cls,
        key: str,
        meta: dict[str, Any],
        image: np.ndarray,
        mask: np.ndarray,
        variants: np.ndarray,
        lesions: np.ndarray,
        seg: np.ndarray | None = None,
    ) -> Sample:
        """A sample from dense (K, x, y, z) variant and lesion stacks (boxes from ``meta``)."""
        regions = [box_region(b) for b in meta["variant_boxes"]]
        return cls(
            key=key,
            image=image,
            mask=mask,
            meta=meta,
            variant_parts=[
                _bits(v[r]) ^ _bits(image[r]) for v, r in zip(variants, regions, strict=True)
            ],
            lesion_parts=[les[r] for les, r in zip(lesions, regions, strict=True)],
            seg=seg,
        )

    @property
    def subject_id(self) -> str:
        return subject_id_of(self.key)

    @property
    def boxes(self) -> list[list[int]]:
        """Per variant, its box ``[x0, y0, z0, x1, y1, z1]``."""
        return self.meta["variant_boxes"]

    @property
    def num_variants(self) -> int:
        return len(self.boxes)

    def _lesion_dtype(self) -> np.dtype:
        return field_dtype("lesions", self.meta["lesion_format"])

    def _overlay(self, k: int, region: Region | None, lesion: bool) -> np.ndarray:
        """Variant (or lesion) ``k`` cut to ``region`` (step-1 slices), as a new C array."""
        region = region or (slice(None),) * 3
        base = self.image[region]
        out = np.zeros(base.shape, self._lesion_dtype()) if lesion else np.array(base, order="C")
        if k < 0:
            return out
        part = (self.lesion_parts if lesion else self.variant_parts)[k]
        box = self.boxes[k]
        spans = [r.indices(n)[:2] for r, n in zip(region, self.image.shape, strict=True)]
        lo = [max(r0, b0) for (r0, _), b0 in zip(spans, box[:3], strict=True)]
        hi = [min(r1, b1) for (_, r1), b1 in zip(spans, box[3:], strict=True)]
        if all(a < b for a, b in zip(lo, hi, strict=True)):
            dst = tuple(slice(a - r0, b - r0) for a, b, (r0, _) in zip(lo, hi, spans, strict=True))
            src = tuple(slice(a - b0, b - b0) for a, b, b0 in zip(lo, hi, box[:3], strict=True))
            _bits(out)[dst] ^= _bits(part[src])
        return out

    def variant(self, k: int, region: Region | None = None) -> np.ndarray:
        """Variant ``k`` (x, y, z), or its crop to ``region`` (three step-1 slices)."""
        return self._overlay(k, region, lesion=False)

    def lesion(self, k: int, region: Region | None = None) -> np.ndarray:
        """The lesion map of variant ``k`` (x, y, z), or its crop to ``region``."""
        return self._overlay(k, region, lesion=True)

    def axial(
        self, zs: np.ndarray, ks: np.ndarray
    ) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
        """Axial slices ``zs`` (n,) of the image and mask, and for slice i of variant
        ``ks[i]`` and its lesion: four lists of n (x, y) arrays, without touching other
        slices. Only slices that a variant's box meets are new arrays; the rest are
        read-only views of the sample (a variant slice outside its box is the image slice,
        a lesion slice there one shared empty slice)."""
        zimage, zmask = self.image.transpose(2, 0, 1), self.mask.transpose(2, 0, 1)
        image = [zimage[z] for z in zs]
        mask = [zmask[z] for z in zs]
        variant = list(image)
        empty = np.zeros(zimage.shape[1:], self._lesion_dtype())
        empty.flags.writeable = False
        lesion = [empty] * len(zs)
        for k in np.unique(ks[ks >= 0]):
            x0, y0, z0, x1, y1, z1 = self.boxes[k]
            rows = np.flatnonzero((ks == k) & (zs >= z0) & (zs < z1))
            if not len(rows):
                continue
            at = zs[rows] - z0
            changed = zimage[zs[rows]]  # new (m, x, y) arrays, patched inside the box
            marks = np.zeros(changed.shape, empty.dtype)
            for out, part in ((changed, self.variant_parts[k]), (marks, self.lesion_parts[k])):
                _bits(out)[:, x0:x1, y0:y1] ^= _bits(part.transpose(2, 0, 1)[at])
            for j, row in enumerate(rows):
                variant[row], lesion[row] = changed[j], marks[j]
        return image, mask, variant, lesion

    @property
    def variants(self) -> np.ndarray:
        """All variants, dense (K, x, y, z) float16."""
        out = [self.variant(k) for k in range(self.num_variants)]
        return np.stack(out) if out else np.empty((0, *self.image.shape), field_dtype("variants"))

    @property
    def lesions(self) -> np.ndarray:
        """All lesion maps, dense (K, x, y, z)."""
        out = [self.lesion(k) for k in range(self.num_variants)]
        return np.stack(out) if out else np.empty((0, *self.image.shape), self._lesion_dtype())

    @property
    def arrays(self) -> dict[str, np.ndarray]:
        """The dense array fields present, in member order."""
        out = {"image": self.image, "mask": self.mask}
        if self.variant_parts is not None:
            out |= {"variants": self.variants, "lesions": self.lesions}
        if self.seg is not None:
            out["seg"] = self.seg
        return out


def to_schema_arrays(
    image: np.ndarray,
    mask: np.ndarray,
    variants: np.ndarray,
    lesions: np.ndarray,
    seg: np.ndarray | None,
    lesion_format: LesionFormat,
) -> dict[str, np.ndarray]:
    """Cast float32/uint8 arrays to their on-disk dtypes, checking shapes agree."""
    shape = image.shape
    if image.ndim != 3 or mask.shape != shape or (seg is not None and seg.shape != shape):
        raise ShardFormatError(f"image {image.shape}, mask {mask.shape} must share a 3D shape")
    if variants.shape[1:] != shape or lesions.shape != variants.shape:
        raise ShardFormatError(
            f"variants {variants.shape} and lesions {lesions.shape} must be (K, *{shape})"
        )
    arrays = {"image": image, "mask": mask, "variants": variants, "lesions": lesions, "seg": seg}
    return {
        k: np.asarray(v, dtype=field_dtype(k, lesion_format))
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
    boxes: list[list[int]],
    brain: list[int],
    lesion_format: LesionFormat,
    has_seg: bool,
) -> dict[str, Any]:
    """``meta.json`` of a sample. ``record`` is the preprocessing record
    (:class:`~adsys.preprocess.Preprocessed`); ``variants`` one replay record per variant;
    ``boxes`` their :func:`variant_boxes`; ``brain`` the mask's :func:`axial_brain_voxels`."""
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
        "variant_boxes": boxes,
        "axial_brain_voxels": brain,
        "lesion_format": lesion_format,
        "has_seg": has_seg,
    }


def encode_sample(
    key: str, arrays: dict[str, np.ndarray], meta: dict[str, Any], codec: Codec, level: int = 3
) -> list[tuple[str, bytes]]:
    """Ordered tar members ``[(name, bytes)]`` of one sample: arrays in field order, then
    ``replay.json`` and ``meta.json``. ``arrays`` are dense (:func:`to_schema_arrays`);
    volumes are stored (z, x, y)-major and variants / lesions as the contents of
    ``meta["variant_boxes"]`` (module doc)."""
    boxes = meta["variant_boxes"]
    if len(boxes) != len(arrays["variants"]):
        raise ShardFormatError(
            f"sample {key!r}: {len(boxes)} boxes for {len(arrays['variants'])} variants"
        )
    sample = Sample.from_dense(key, meta, **arrays)
    packed = {"variants": sample.variant_parts, "lesions": sample.lesion_parts}
    members = []
    for field in ARRAY_FIELDS:
        if field not in arrays:
            continue
        if field in packed:
            parts = [to_zmajor(p).ravel() for p in packed[field]]
            stored = np.concatenate([np.empty(0, packed_dtype(field, arrays[field].dtype)), *parts])
        else:
            stored = to_zmajor(arrays[field])
        members.append((member_name(key, field, codec), encode_array(stored, codec, level)))
    rest = {k: v for k, v in meta.items() if k != "variants"}
    for field, record in ((REPLAY_FIELD, meta["variants"]), (META_FIELD, rest)):
        blob = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
        members.append((member_name(key, field, "none"), blob))
    return members


def packed_dtype(field: str, dtype: np.dtype) -> np.dtype:
    """The dtype a tar member stores ``field`` (of on-disk dtype ``dtype``) in."""
    return np.dtype(np.uint16) if field == "variants" else np.dtype(dtype)


def decode_sample(
    members: list[tuple[str, bytes]], fields: tuple[str, ...] = ALL_FIELDS
) -> Sample:
    """Decode the tar members of one sample; only ``fields`` are decompressed (and
    ``meta["variants"]`` is there only with ``"replay"`` among them).

    Raises :class:`ShardFormatError` on mixed keys, duplicate or missing members, boxes
    outside the grid, or arrays whose dtype or shape disagree with the schema and
    ``meta.json``.
    """
    key = None
    raw: dict[str, tuple[bytes, Codec]] = {}
    for name, data in members:
        k, field, codec = parse_member_name(name)
        if key is None:
            key = k
        if k != key or field in raw:
            raise ShardFormatError(f"member {name!r} does not belong to sample {key!r}")
        raw[field] = (data, codec)
    missing = [f for f in (*REQUIRED_FIELDS, REPLAY_FIELD, META_FIELD) if f not in raw]
    if key is None or missing:
        raise ShardFormatError(f"sample {key!r} lacks member(s) {missing}")
    try:
        meta = json.loads(raw[META_FIELD][0])
        if REPLAY_FIELD in fields:
            meta["variants"] = json.loads(raw[REPLAY_FIELD][0])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ShardFormatError(f"sample {key!r}: unreadable JSON member ({exc})") from exc
    x, y, z = shape = tuple(meta["grid"]["shape"])
    if len(meta["axial_brain_voxels"]) != z:
        raise ShardFormatError(f"sample {key!r}: axial_brain_voxels does not have {z} slices")
    boxes = meta["variant_boxes"]
    if len(boxes) != meta["num_variants"] or any(
        len(b) != 6 or not all(0 <= b[i] <= b[i + 3] <= n for i, n in enumerate(shape))
        for b in boxes
    ):
        raise ShardFormatError(f"sample {key!r}: variant boxes {boxes} do not fit grid {shape}")
    dims = [(b[5] - b[2], b[3] - b[0], b[4] - b[1]) for b in boxes]  # (z, x, y) per box
    ends = np.cumsum([0] + [math.prod(d) for d in dims]).tolist()
    packed = (ends[-1],)
    expected = {"image": (z, x, y), "mask": (z, x, y), "seg": (z, x, y)}
    expected |= {"variants": packed, "lesions": packed}
    arrays: dict[str, Any] = {}
    for field in ARRAY_FIELDS:
        if field not in fields or field not in raw:
            continue
        arr = decode_array(*raw[field])
        want = packed_dtype(field, field_dtype(field, meta["lesion_format"]))
        if arr.dtype != want or arr.shape != expected[field]:
            raise ShardFormatError(
                f"sample {key!r}: {field} is {arr.dtype}{arr.shape}, "
                f"schema says {want}{expected[field]}"
            )
        if field in ("variants", "lesions"):
            arrays[field] = [
                from_zmajor(arr[a:b].reshape(d))
                for a, b, d in zip(ends[:-1], ends[1:], dims, strict=True)
            ]
        else:
            arrays[field] = from_zmajor(arr)
    return Sample(
        key=key,
        image=arrays.get("image"),
        mask=arrays.get("mask"),
        meta=meta,
        variant_parts=arrays.get("variants"),
        lesion_parts=arrays.get("lesions"),
        seg=arrays.get("seg"),
    )


# --- manifest.json -----------------------------------------------------------------------


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SampleRecord(_Record):
    """One sample of a shard: its key, subject, row in the split, checksum
    (:func:`sample_checksum`) and size."""

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
