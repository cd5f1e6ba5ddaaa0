"""Preprocess a whole cohort manifest into a folder of NIfTI files + per-subject records.

Layout of ``OUT``::

    OUT/manifest.csv                   the preprocessed cohort (same columns, new paths)
    OUT/failed.json                    subjects that failed, with the reason (empty list if none)
    OUT/subjects/<id>/image.nii.gz     float32 in [0, 1] on the preprocessed grid
    OUT/subjects/<id>/mask.nii.gz      uint8 brain mask
    OUT/subjects/<id>/seg.nii.gz       uint8 lesion mask (when the manifest has one)
    OUT/subjects/<id>/wm.nii.gz        float32 white-matter probability (when given)
    OUT/subjects/<id>/preprocess.json  every parameter used + the grids for the way back

A subject is complete when its ``preprocess.json`` exists (it is written last, atomically);
re-running with the same config skips complete subjects whose source file is unchanged.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from adsys.errors import AdsysError
from adsys.io.atomic import write_json_atomic
from adsys.io.manifest import Manifest, SubjectEntry, write_manifest
from adsys.io.nifti import save_volume, sha256_file
from adsys.preprocess.config import PreprocessConfig
from adsys.preprocess.pipeline import preprocess_subject

log = logging.getLogger(__name__)
RECORD_NAME = "preprocess.json"


@dataclass
class CohortResult:
    """What a cohort run did: subject ids processed now, reused from before, and failed."""

    out_dir: Path
    manifest: Path
    processed: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def _is_complete(subject_dir: Path, entry: SubjectEntry, config: PreprocessConfig) -> bool:
    rec_path = subject_dir / RECORD_NAME
    if not rec_path.is_file():
        return False
    try:
        rec = json.loads(rec_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return (
        rec.get("config_digest") == config.digest()
        and rec.get("source", {}).get("sha256") == sha256_file(entry.image)
        and all((subject_dir / f).is_file() for f in rec.get("files", []))
    )


def _run_one(entry: SubjectEntry, config: PreprocessConfig, subject_dir: Path) -> str:
    """Preprocess and write one subject; returns "reused" or "processed"."""
    if _is_complete(subject_dir, entry, config):
        return "reused"
    p = preprocess_subject(entry, config)
    subject_dir.mkdir(parents=True, exist_ok=True)
    save_volume(subject_dir / "image.nii.gz", p.image, p.grid.affine, np.float32)
    save_volume(subject_dir / "mask.nii.gz", p.mask, p.grid.affine, np.uint8)
    files = ["image.nii.gz", "mask.nii.gz"]
    if p.seg is not None:
        save_volume(subject_dir / "seg.nii.gz", p.seg, p.grid.affine, np.uint8)
        files.append("seg.nii.gz")
    if p.wm is not None:
        save_volume(subject_dir / "wm.nii.gz", p.wm, p.grid.affine, np.float32)
        files.append("wm.nii.gz")
    write_json_atomic(subject_dir / RECORD_NAME, {**p.record, "files": files})
    return "processed"


def preprocess_cohort(
    manifest: Manifest,
    out_dir: str | Path,
    config: PreprocessConfig,
    *,
    workers: int = 1,
    progress: bool = True,
) -> CohortResult:
    """Preprocess every subject of ``manifest`` into ``out_dir`` (layout in the module doc).

    A failing subject never stops the run: its reason goes to ``failed.json`` and the result,
    and it is left out of the output manifest. ``workers`` > 1 uses that many processes.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = CohortResult(out_dir=out_dir, manifest=out_dir / "manifest.csv")
    dirs = {e.subject_id: out_dir / "subjects" / e.subject_id for e in manifest.subjects}
    bar = tqdm(total=len(manifest), desc="preprocess", unit="subject", disable=not progress)

    def settle(entry: SubjectEntry, status: str | None, error: BaseException | None) -> None:
        if error is not None:
            if not isinstance(error, AdsysError | ValueError | OSError):
                raise error
            result.failed[entry.subject_id] = f"{type(error).__name__}: {error}"
            log.warning("subject %s failed: %s", entry.subject_id, error)
        elif status == "reused":
            result.reused.append(entry.subject_id)
        else:
            result.processed.append(entry.subject_id)
        bar.update(1)
        bar.set_postfix(failed=len(result.failed), reused=len(result.reused))

    if workers <= 1:
        for e in manifest.subjects:
            try:
                settle(e, _run_one(e, config, dirs[e.subject_id]), None)
            except Exception as exc:  # noqa: BLE001 - settle() re-raises unexpected errors
                settle(e, None, exc)
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = {
                pool.submit(_run_one, e, config, dirs[e.subject_id]): e for e in manifest.subjects
            }
            for fut in as_completed(futures):
                settle(futures[fut], None if fut.exception() else fut.result(), fut.exception())
    bar.close()

    done = [
        replace(
            e,
            image=dirs[e.subject_id] / "image.nii.gz",
            mask=dirs[e.subject_id] / "mask.nii.gz",
            seg=dirs[e.subject_id] / "seg.nii.gz" if e.seg else None,
            wm=dirs[e.subject_id] / "wm.nii.gz" if e.wm else None,
            affine=None,
        )
        for e in manifest.subjects
        if e.subject_id not in result.failed
    ]
    write_manifest(result.manifest, done)
    failed = [{"subject_id": k, "reason": v} for k, v in sorted(result.failed.items())]
    write_json_atomic(out_dir / "failed.json", failed)
    return result
