"""Re-score saved anomaly maps under any protocol, without running a model again.

:func:`evaluate_maps` reads an inference output folder (``MAPS_DIR/subjects/<id>/``: the raw
``anomaly_map.nii.gz``, ``image``, ``mask``, ``reconstruction`` and ``preprocess.json``) for
the subjects of a cohort manifest, takes each subject's ground truth from the manifest's
``seg`` column (on the preprocessed grid, or on the subject's source grid — then resampled
onto the preprocessed grid with nearest neighbour, exactly as preprocessing does; without a
``seg`` column, the ``seg.nii.gz`` saved at inference is used), and writes
``metrics.csv`` and ``summary.json`` for the protocol into ``MAPS_DIR/eval-<protocol>/``.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from adsys.errors import GeometryMismatchError, InputError
from adsys.infer.outputs import MAP, subject_dir, write_metrics_csv
from adsys.io.atomic import write_json_atomic
from adsys.io.geometry import Grid, resample
from adsys.io.manifest import SubjectEntry, load_manifest
from adsys.io.nifti import load_volume
from adsys.metrics.cohort import choose_cohort_threshold, summarize
from adsys.metrics.protocols import get_protocol
from adsys.metrics.subject import SubjectScore, score_subject

log = logging.getLogger(__name__)

__all__ = ["evaluate_maps", "seg_on_grid"]


def seg_on_grid(path: Path, record: dict[str, Any]) -> np.ndarray:
    """A lesion mask file on the preprocessed grid of ``record`` (uint8 {0, 1}).

    Accepts a mask already on that grid, or one on the subject's source grid (resampled with
    nearest neighbour through the recorded registration, as preprocessing does).
    """
    vol = load_volume(path)
    grid = Grid.from_json(record["grid"])
    labels = (vol.data > 0).astype(np.uint8)
    if vol.grid.same_as(grid, atol=1e-3):
        return labels
    canonical = Grid.from_json(record["canonical_grid"])
    if not vol.grid.same_as(canonical, atol=1e-3):
        raise GeometryMismatchError(
            path,
            f"this segmentation lies neither on the preprocessed grid {grid.shape} nor on the "
            f"subject's source grid {canonical.shape}",
            "point the manifest's seg column at the subject's lesion mask",
        )
    reg = np.asarray(record["registration"], dtype=np.float64)
    return resample(labels, canonical, grid, world=reg, order=0)


def _score_saved(
    maps_dir: Path, entry: SubjectEntry, protocol_name: str, threshold: float | None,
    score_range: tuple[float, float], seed: int,
) -> SubjectScore:
    folder = subject_dir(maps_dir, entry.subject_id)
    record = json.loads((folder / "preprocess.json").read_text(encoding="utf-8"))
    if entry.seg is not None:
        seg = seg_on_grid(entry.seg, record)
    elif (folder / "seg.nii.gz").is_file():
        seg = load_volume(folder / "seg.nii.gz").data.astype(np.uint8)
    else:
        seg = None
    rec_path = folder / "reconstruction.nii.gz"
    score, _ = score_subject(
        get_protocol(protocol_name),
        load_volume(folder / MAP).data,
        load_volume(folder / "image.nii.gz").data,
        load_volume(folder / "mask.nii.gz").data.astype(np.uint8),
        seg,
        load_volume(rec_path).data if rec_path.is_file() else None,
        subject_id=entry.subject_id, split=entry.split,
        threshold=threshold if seg is not None else None,
        score_range=score_range, seed=seed,
    )
    return score


def _score_all(
    maps_dir: Path, entries: list[SubjectEntry], protocol_name: str, threshold: float | None,
    score_range: tuple[float, float], seed: int, workers: int, progress: bool, desc: str,
) -> list[SubjectScore]:
    args = [(maps_dir, e, protocol_name, threshold, score_range, seed) for e in entries]
    bar = tqdm(total=len(args), desc=desc, unit="subject", disable=not progress)
    if workers <= 1:
        out = []
        for a in args:
            out.append(_score_saved(*a))
            bar.update(1)
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(_score_saved, *a) for a in args]
            out = []
            for f in futures:
                out.append(f.result())
                bar.update(1)
    bar.close()
    return out


def evaluate_maps(
    maps_dir: str | Path,
    manifest: str | Path,
    protocol: str,
    *,
    splits: tuple[str, ...] = ("test",),
    threshold: str = "val",
    out: str | Path | None = None,
    workers: int = 1,
    progress: bool = True,
) -> dict[str, Any]:
    """Metrics of saved maps under ``protocol`` (module doc); returns the summary.

    Subjects of ``splits`` (and of ``val``, for a ``val…`` threshold) that have maps in
    ``maps_dir`` are evaluated; the others are listed in the summary as missing.
    """
    maps_dir = Path(maps_dir)
    proto = get_protocol(protocol)  # fails early on an unknown name
    run_path = maps_dir / "run.json"
    if not run_path.is_file():
        raise InputError(maps_dir, "no run.json: not an adsys inference output folder",
                         "pass the --out folder of `adsys infer` / ray_jobs/infer.py")
    run = json.loads(run_path.read_text(encoding="utf-8"))
    score_range = tuple(run.get("score_range", (0.0, 1.0)))
    seed = int(run.get("seed", 0))
    entries = load_manifest(manifest).subjects
    present = [e for e in entries if (subject_dir(maps_dir, e.subject_id) / MAP).is_file()]
    missing = [e.subject_id for e in entries if e.split in splits and e not in present]
    val = [e for e in present if e.split == "val"] if threshold.startswith("val") else []
    val_scores = _score_all(maps_dir, val, protocol, None, score_range, seed, workers,
                            progress, "evaluate val")
    choice, note = choose_cohort_threshold(proto, val_scores, threshold)
    tested = [e for e in present if e.split in splits]
    scores = _score_all(maps_dir, tested, protocol, None if choice is None else choice.value,
                        score_range, seed, workers, progress, "evaluate")
    summary = summarize(proto, scores, choice, note)
    summary["run"] = {"maps": str(maps_dir), "maps_digest": run.get("digest"),
                      "manifest": str(manifest), "splits": list(splits),
                      "threshold": threshold, "missing": missing}
    target = Path(out) if out is not None else maps_dir / f"eval-{protocol}"
    target.mkdir(parents=True, exist_ok=True)
    write_json_atomic(target / "summary.json", summary)
    write_metrics_csv(target / "metrics.csv", [s.row for s in scores if s.row is not None])
    summary["run"]["written"] = str(target)
    if missing:
        log.warning("%d subject(s) of %s have no maps in %s", len(missing), list(splits),
                    maps_dir)
    return summary
