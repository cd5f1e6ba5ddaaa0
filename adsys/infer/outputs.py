"""The inference output folder: per-subject files, completion records, cohort tables.

Layout of ``OUT``::

    OUT/run.json                              the run's config, models and protocol
    OUT/subjects/<id>/image.nii.gz            model input, preprocessed grid (float32)
    OUT/subjects/<id>/mask.nii.gz             brain mask (uint8)
    OUT/subjects/<id>/seg.nii.gz              ground-truth lesions (uint8), when known
    OUT/subjects/<id>/reconstruction.nii.gz   the (ensemble mean) reconstruction (none for a
                                              method's own map, map kind ``method``)
    OUT/subjects/<id>/anomaly_map.nii.gz      raw anomaly map
    OUT/subjects/<id>/anomaly_map_pp.nii.gz   the map post-processed by the run's protocol
    OUT/subjects/<id>/native/anomaly_map.nii.gz, native/anomaly_map_pp.nii.gz
                                              the maps on the subject's source grid, with its
                                              source affine (overlay the original scan)
    OUT/subjects/<id>/overlay.png             input | reconstruction | map, GT contour
    OUT/subjects/<id>/preprocess.json         the preprocessing record (grids, registration)
    OUT/subjects/<id>/scores.npz              the subject's pooled histogram + slice scores
    OUT/subjects/<id>/result.json             written last: metrics row, digest, files
    OUT/maps.zarr/<id>/{reconstruction, anomaly_map, anomaly_map_pp}   with ``zarr: true``
    OUT/metrics.csv, OUT/summary.json, OUT/report.html, OUT/failed.json

All files are written atomically; ``result.json`` is written last, so a subject is complete
exactly when its ``result.json`` exists, names the current scoring digest (and threshold),
and every file it lists is present. A killed run therefore resumes where it stopped.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from adsys.infer.sources import SubjectData
from adsys.io.atomic import atomic_path, write_json_atomic
from adsys.io.nifti import save_volume
from adsys.metrics.subject import SubjectScore
from adsys.preprocess import to_native

__all__ = [
    "MAP",
    "MAP_PP",
    "RESULT",
    "is_complete",
    "load_result",
    "load_score",
    "subject_dir",
    "write_metrics_csv",
    "write_subject",
]

SUBJECTS = "subjects"
RESULT = "result.json"
SCORES = "scores.npz"
MAP = "anomaly_map.nii.gz"
MAP_PP = "anomaly_map_pp.nii.gz"
ZARR = "maps.zarr"


def subject_dir(out: Path, subject_id: str) -> Path:
    return Path(out) / SUBJECTS / subject_id


def load_result(out: Path, subject_id: str) -> dict[str, Any] | None:
    """The subject's ``result.json`` or ``None`` (missing or unreadable)."""
    path = subject_dir(out, subject_id) / RESULT
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def is_complete(out: Path, subject_id: str, digest: str, threshold: float | None) -> bool:
    """True when the subject's outputs were written with ``digest`` and are all present.

    For a subject with a segmentation, Dice at a threshold depends on the cohort threshold:
    a result computed at another threshold is not complete.
    """
    res = load_result(out, subject_id)
    if res is None or res.get("digest") != digest:
        return False
    folder = subject_dir(out, subject_id)
    if not all((folder / f).is_file() for f in res.get("files", [])):
        return False
    if res.get("has_seg"):
        return res.get("threshold") == threshold
    return True


def _write_npz_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)


def _write_zarr(out: Path, subject_id: str, arrays: dict[str, np.ndarray],
                affine: np.ndarray) -> None:
    import zarr
    from zarr.codecs import ZstdCodec

    group = zarr.open_group(str(out / ZARR), mode="a", zarr_format=3).require_group(subject_id)
    group.attrs["affine"] = np.asarray(affine).tolist()
    for name, data in arrays.items():
        group.create_array(name, shape=data.shape, dtype=np.float32, chunks=data.shape,
                           compressors=ZstdCodec(level=3), overwrite=True)[...] = data


def write_subject(
    out: Path,
    data: SubjectData,
    reconstruction: np.ndarray | None,
    raw_map: np.ndarray,
    pp_map: np.ndarray,
    score: SubjectScore,
    *,
    digest: str,
    threshold: float | None,
    native: bool,
    zarr_output: bool,
    overlay: bool,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write every output of one subject (module doc); ``result.json`` last. Returns it."""
    from adsys.infer.report import save_overlay

    folder = subject_dir(out, data.subject_id)
    (folder / "native").mkdir(parents=True, exist_ok=True)
    affine = data.affine
    volumes: list[tuple[str, np.ndarray, type]] = [
        ("image.nii.gz", data.image, np.float32),
        ("mask.nii.gz", data.mask, np.uint8),
        (MAP, raw_map, np.float32),
        (MAP_PP, pp_map, np.float32),
    ]
    maps = {"anomaly_map": raw_map, "anomaly_map_pp": pp_map}
    if reconstruction is not None:
        volumes.append(("reconstruction.nii.gz", reconstruction, np.float32))
        maps["reconstruction"] = reconstruction
    if data.seg is not None:
        volumes.append(("seg.nii.gz", data.seg, np.uint8))
    files = []
    for name, array, dtype in volumes:
        save_volume(folder / name, array, affine, dtype)
        files.append(name)
    if native:
        for name, array in ((MAP, raw_map), (MAP_PP, pp_map)):
            native_data, source_affine = to_native(array, data.record, order=1)
            save_volume(folder / "native" / name, native_data, source_affine, np.float32)
            files.append(f"native/{name}")
    if overlay:
        save_overlay(folder / "overlay.png", data.image, reconstruction, pp_map, data.seg,
                     data.mask, title=data.subject_id)
        files.append("overlay.png")
    if zarr_output:
        _write_zarr(out, data.subject_id, maps, affine)
    write_json_atomic(folder / "preprocess.json", data.record)
    _write_npz_atomic(folder / SCORES, score.arrays())
    files += ["preprocess.json", SCORES]
    result = {
        "subject_id": data.subject_id,
        "split": data.split,
        "digest": digest,
        "threshold": threshold,
        "has_seg": data.seg is not None,
        "row": _json_row(score.row),
        "files": files,
        **(extra or {}),
    }
    write_json_atomic(folder / RESULT, result)
    return result


def _json_row(row: dict[str, Any] | None) -> dict[str, Any] | None:
    """NaN / inf are not JSON: write them as null."""
    if row is None:
        return None
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in row.items()}


def load_score(out: Path, subject_id: str) -> SubjectScore:
    """The :class:`SubjectScore` a complete subject wrote."""
    res = load_result(out, subject_id)
    if res is None:
        raise FileNotFoundError(f"{subject_dir(out, subject_id) / RESULT} is missing")
    row = res.get("row")
    if row is not None:
        row = {k: (float("nan") if v is None else v) for k, v in row.items()}
    with np.load(subject_dir(out, subject_id) / SCORES, allow_pickle=False) as arrays:
        return SubjectScore.from_arrays(subject_id, res["split"], row, arrays)


def write_metrics_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    """One row per subject with a segmentation; columns in a stable order; atomic."""
    first = ["subject_id", "split", "protocol"]
    cols = first + sorted({k for r in rows for k in r} - set(first))
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=cols, restval="")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if isinstance(v, float) and not math.isfinite(v) else v)
                        for k, v in r.items()})
    return path
