"""A sample: :class:`Sample` (one decoded subject, variants kept as boxes), the boxes, the
(z, x, y)-major tar layout, ``meta.json``, and a sample's encoding into tar members and back
(format: :mod:`adsys.shards.schema`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from adsys.shards.codecs import decode_array, encode_array
from adsys.shards.schema import (
    ALL_FIELDS,
    ARRAY_FIELDS,
    META_FIELD,
    REPLAY_FIELD,
    REQUIRED_FIELDS,
    SCHEMA_VERSION,
    Codec,
    ShardFormatError,
    field_dtype,
    member_name,
    packed_dtype,
    parse_member_name,
    subject_id_of,
)
from adsys.synth.variants import LesionFormat

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
    """One decoded subject. Arrays as stored (dtypes: :mod:`adsys.shards.schema`), voxel
    order (x, y, z).

    Variants are kept as boxes (:mod:`adsys.shards.schema`): inside ``boxes[k]``,
    ``variant_parts[k]`` holds variant k's bits XOR the image's (uint16) and
    ``lesion_parts[k]`` its lesion (its bits XOR an empty lesion's); :meth:`variant`,
    :meth:`lesion` and :meth:`axial` cut dense arrays from them by XOR-ing the parts onto
    the image or zeros; :attr:`variants` and :attr:`lesions` rebuild the whole (K, x, y, z)
    stacks. Variant index -1 means "no variant": the clean image with an empty lesion. The
    parts are ``None`` when the sample was decoded without them.
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
    ``meta["variant_boxes"]`` (:mod:`adsys.shards.schema`)."""
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


def decode_sample(
    members: list[tuple[str, bytes]], fields: tuple[str, ...] = ALL_FIELDS
) -> Sample:
    """Decode the tar members of one sample; only ``fields`` are decompressed (and
    ``meta["variants"]`` is there only with ``"replay"`` among them).

    Raises :class:`~adsys.shards.schema.ShardFormatError` on mixed keys, duplicate or
    missing members, boxes outside the grid, or arrays whose dtype or shape disagree with
    the schema and ``meta.json``.
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
