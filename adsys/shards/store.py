"""The Zarr v3 cohort store: random access to every subject, for inference and inspection.

Layout (``<out>/cohort.zarr``)::

    cohort.zarr/             attrs: schema_version, spec_digest, lesion_format
      <split>/               attrs: subjects (ids by row), failed ({id: reason}, at the end)
        image     (N, x, y, z)     float16   chunk (1, x, y, z)
        mask      (N, x, y, z)     uint8     chunk (1, x, y, z)
        variants  (N, K, x, y, z)  float16   chunk (1, K, x, y, z)
        lesions   (N, K, x, y, z)  uint8 (float16 when soft)
        seg       (N, x, y, z)     uint8     only for splits with ground truth
        meta      (N,)             string    meta.json of the row; "" until the row is complete

Row ``i`` is the split's ``i``-th subject in the cohort manifest. Each build task writes its
own rows (one chunk per array, so tasks never touch each other's chunks) and the ``meta``
entry last: a row whose meta is empty (failed, or interrupted) is not part of the store.
Chunks are compressed with zarr's native ``ZstdCodec``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import ZstdCodec

from adsys.errors import InputError
from adsys.shards.sample import Sample
from adsys.shards.schema import (
    ARRAY_FIELDS,
    SCHEMA_VERSION,
    SPLITS,
    ZARR_NAME,
    ShardFormatError,
    SplitRecord,
    field_dtype,
    sample_key,
)
from adsys.synth.variants import LesionFormat

META = "meta"


def create_store(
    path: str | Path,
    splits: dict[str, SplitRecord],
    *,
    spec_digest: str,
    lesion_format: LesionFormat,
    level: int,
) -> None:
    """Create (or reopen, unchanged) the store's groups and empty arrays for ``splits``."""
    root = zarr.open_group(str(path), mode="a", zarr_format=3)
    root.attrs.update(
        {
            "schema_version": SCHEMA_VERSION,
            "spec_digest": spec_digest,
            "lesion_format": lesion_format,
        }
    )
    for split, rec in splits.items():
        group = root.require_group(split)
        if "subjects" not in group.attrs:
            group.attrs["subjects"] = rec.subjects
        n, k, shape = len(rec.subjects), rec.num_variants, tuple(rec.shape)
        fields = [f for f in ARRAY_FIELDS if f != "seg" or rec.has_seg]
        for field in fields:
            if field in group:
                continue
            lead = (n, k) if field in ("variants", "lesions") else (n,)
            chunk = (1, max(k, 1)) if field in ("variants", "lesions") else (1,)
            group.create_array(
                field,
                shape=(*lead, *shape),
                chunks=(*chunk, *shape),
                dtype=field_dtype(field, lesion_format),
                compressors=ZstdCodec(level=level),
                fill_value=0,
            )
        if META not in group:
            group.create_array(META, shape=(n,), chunks=(1,), dtype=str, fill_value="")


def write_row(
    path: str | Path, split: str, row: int, arrays: dict[str, np.ndarray], meta: dict[str, Any]
) -> None:
    """Write one subject's arrays (on-disk dtypes) into ``row``, then its meta (last)."""
    group = zarr.open_group(str(path), mode="r+", zarr_format=3)[split]
    for field, array in arrays.items():
        if array.size:
            group[field][row] = array
    group[META][row] = json.dumps(meta, sort_keys=True, separators=(",", ":"))


def finish_store(path: str | Path, failed: dict[str, dict[str, str]]) -> None:
    """Record each split's failed subjects ``{split: {subject_id: reason}}``."""
    root = zarr.open_group(str(path), mode="r+", zarr_format=3)
    for split in root.group_keys():
        root[split].attrs["failed"] = failed.get(split, {})


class CohortStore:
    """Random access over a built Zarr cohort store.

    ``path`` is the store (``.../cohort.zarr``) or the build's output folder. The store is
    opened lazily in each process, so a ``CohortStore`` can be handed to DataLoader workers.

    Example::

        store = CohortStore("shards/out/demo")
        sample = store["sub-003"]              # Sample: image (x, y, z) float16, ...
        variant, lesion = store.variant("sub-003", 2)
    """

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        if (path / ZARR_NAME).is_dir():
            path = path / ZARR_NAME
        if not (path / "zarr.json").is_file():
            raise InputError(path, "not a Zarr cohort store", "pass <out>/cohort.zarr")
        self.path = path
        self._root: zarr.Group | None = None
        self._index: dict[str, tuple[str, int]] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "_root": None, "_index": self._index}

    @property
    def root(self) -> zarr.Group:
        if self._root is None:
            self._root = zarr.open_group(str(self.path), mode="r", zarr_format=3)
            version = self._root.attrs.get("schema_version")
            if version != SCHEMA_VERSION:
                raise ShardFormatError(
                    f"{self.path}: schema version {version}, this adsys reads {SCHEMA_VERSION}"
                )
        return self._root

    @property
    def splits(self) -> list[str]:
        """Splits in the store, in ``train, val, test`` order."""
        present = set(self.root.group_keys())
        return [s for s in SPLITS if s in present]

    @property
    def index(self) -> dict[str, tuple[str, int]]:
        """``{subject_id: (split, row)}`` of every complete row."""
        if self._index is None:
            self._index = {}
            for split in self.splits:
                group = self.root[split]
                meta = group[META][:]
                for row, sid in enumerate(group.attrs["subjects"]):
                    if meta[row]:
                        self._index[sid] = (split, row)
        return self._index

    def subjects(self, split: str | None = None) -> list[str]:
        """Complete subjects (of one split, or all), in cohort-manifest order."""
        return [s for s, (sp, _) in self.index.items() if split is None or sp == split]

    def failed(self, split: str) -> dict[str, str]:
        """Subjects of ``split`` that failed to build, with the reason."""
        return dict(self.root[split].attrs.get("failed", {}))

    def __len__(self) -> int:
        return len(self.index)

    def __contains__(self, subject_id: object) -> bool:
        return subject_id in self.index

    def _locate(self, subject_id: str) -> tuple[zarr.Group, int]:
        try:
            split, row = self.index[subject_id]
        except KeyError:
            raise KeyError(f"subject {subject_id!r} is not in {self.path}") from None
        return self.root[split], row

    def meta(self, subject_id: str) -> dict[str, Any]:
        """The subject's ``meta.json`` (grids, preprocessing and variant records)."""
        group, row = self._locate(subject_id)
        return json.loads(group[META][row].item())

    def read(self, subject_id: str, field: str) -> np.ndarray:
        """One array field of a subject, as stored (see the module doc for shapes)."""
        group, row = self._locate(subject_id)
        if field not in group:
            raise KeyError(f"{self.path}: no array {field!r} in split {group.basename!r}")
        return group[field][row]

    def variant(self, subject_id: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Variant ``k`` of a subject and its lesion map, each (x, y, z)."""
        group, row = self._locate(subject_id)
        return group["variants"][row, k], group["lesions"][row, k]

    def __getitem__(self, subject_id: str) -> Sample:
        group, row = self._locate(subject_id)
        meta = json.loads(group[META][row].item())
        arrays = {f: group[f][row] for f in ARRAY_FIELDS if f in group}
        if not meta["has_seg"]:
            arrays.pop("seg", None)
        return Sample.from_dense(sample_key(subject_id), meta, **arrays)
