"""Where inference reads subjects from: a Zarr cohort store or a manifest of NIfTI volumes.

Both give :class:`SubjectData` on the model's preprocessed grid, with the preprocessing
record that :func:`adsys.preprocess.to_native` needs to put maps back in native space:

* :class:`StoreSource` — a built cohort store (:class:`adsys.shards.store.CohortStore`):
  images are read as stored (already preprocessed, float16 → float32);
* :class:`ManifestSource` — a cohort manifest CSV: each subject is preprocessed on the fly
  with the :class:`~adsys.preprocess.config.PreprocessConfig` recorded in the exported
  model (the one its training shards were built with), so raw scans need no separate
  preprocessing step.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from adsys.errors import InputError
from adsys.io.geometry import Grid
from adsys.io.manifest import load_manifest
from adsys.preprocess import preprocess_subject
from adsys.preprocess.config import PreprocessConfig

__all__ = ["VARIANT_TAG", "ManifestSource", "StoreSource", "SubjectData", "open_source"]

VARIANT_TAG = "_fluid-"  # an input id SUBJECT_fluid-K: variant K of SUBJECT (inputs: variants)
HEALTHY_MASK_MIN = 0.01  # the fluid paper's healthy-reference mask: the clean image above this


@dataclass
class SubjectData:
    """One subject on the preprocessed grid, (x, y, z) RAS+.

    ``image`` float32 in [0, 1]; ``mask`` uint8 brain mask; ``seg`` uint8 lesion mask or
    ``None``; ``record`` the preprocessing record (grids, registration); ``affine`` the
    preprocessed grid's voxel→world matrix.
    """

    subject_id: str
    split: str
    image: np.ndarray
    mask: np.ndarray
    seg: np.ndarray | None
    record: dict[str, Any]

    @property
    def affine(self) -> np.ndarray:
        return Grid.from_json(self.record["grid"]).affine


class StoreSource:
    """Subjects of a Zarr cohort store (see :mod:`adsys.shards.store`) — or, with ``inputs``
    ``variants``, their synthetic pairs (:class:`~adsys.infer.config.InferConfig`)."""

    def __init__(self, path: str | Path, inputs: str = "images", mask: str = "brain") -> None:
        from adsys.shards.store import CohortStore

        self.store = CohortStore(path)
        self.inputs, self.mask = inputs, mask

    def subjects(self, splits: tuple[str, ...]) -> list[tuple[str, str]]:
        """``(id, split)`` of every complete subject of ``splits`` (or of each of its
        variants), in cohort order."""
        pairs = [(sid, split) for split in splits if split in self.store.splits
                 for sid in self.store.subjects(split)]
        if self.inputs == "images":
            return pairs
        return [(f"{sid}{VARIANT_TAG}{k}", split) for sid, split in pairs
                for k in range(self.store.meta(sid)["num_variants"])]

    def load(self, subject_id: str) -> SubjectData:
        sid, k = subject_id, None
        if self.inputs == "variants":
            sid, _, index = subject_id.rpartition(VARIANT_TAG)
            k = int(index)
        meta = self.store.meta(sid)
        clean = np.asarray(self.store.read(sid, "image"), dtype=np.float32)
        if k is None:
            image = clean
            seg = self.store.read(sid, "seg") if meta.get("has_seg") else None
        else:
            variant, lesion = self.store.variant(sid, k)
            image, seg = np.asarray(variant, dtype=np.float32), np.asarray(lesion) >= 0.5
        mask = (clean > HEALTHY_MASK_MIN) if self.mask == "healthy" else (
            self.store.read(sid, "mask"))
        return SubjectData(
            subject_id=subject_id,
            split=meta["split"],
            image=image,
            mask=np.asarray(mask, dtype=np.uint8),
            seg=None if seg is None else np.asarray(seg, dtype=np.uint8),
            record=meta["preprocess"],
        )


class ManifestSource:
    """Subjects of a manifest CSV, preprocessed on the fly with ``preprocess``."""

    def __init__(self, manifest: str | Path, preprocess: PreprocessConfig) -> None:
        self.manifest = load_manifest(manifest)
        self.preprocess = preprocess
        self._entries = {e.subject_id: e for e in self.manifest.subjects}

    def subjects(self, splits: tuple[str, ...]) -> list[tuple[str, str]]:
        return [(e.subject_id, e.split) for split in splits for e in self.manifest.split(split)]

    def load(self, subject_id: str) -> SubjectData:
        entry = self._entries[subject_id]
        p = preprocess_subject(entry, self.preprocess)
        return SubjectData(
            subject_id=subject_id,
            split=entry.split,
            image=p.image.astype(np.float32, copy=False),
            mask=p.mask,
            seg=p.seg,
            record=p.record,
        )


def open_source(
    cohort: str | Path, preprocess: dict[str, Any] | None, inputs: str = "images",
    mask: str = "brain",
) -> StoreSource | ManifestSource:
    """A manifest CSV (needs the models' recorded ``preprocess``) or a cohort store (whose
    synthetic pairs ``inputs: variants`` reads)."""
    cohort = Path(cohort)
    if cohort.suffix.lower() == ".csv":
        if inputs != "images":
            raise InputError(cohort, "a manifest CSV has no synthetic pairs (inputs 'variants')",
                             "pass the cohort store of a shard build with variants")
        if preprocess is None:
            raise InputError(
                cohort,
                "the model records no preprocessing, so raw NIfTI cannot be prepared for it",
                "build a cohort store with `python ray_jobs/build_shards.py` and pass it instead",
            )
        return ManifestSource(cohort, PreprocessConfig.model_validate(preprocess))
    return StoreSource(cohort, inputs, mask)
