"""Preprocess one subject: the steps of :class:`~adsys.preprocess.config.PreprocessConfig`,
recorded.

The record returned with every output holds each parameter used and the geometry of every
grid involved, so :func:`to_native` can put any map computed on the preprocessed grid back
onto the subject's source grid (the scan as stored on disk).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from adsys import __version__
from adsys.errors import AffineError, CropError, EmptyMaskError, InputError, VolumeReadError
from adsys.io.geometry import Grid, bounding_grid, resample, translate
from adsys.io.manifest import SubjectEntry
from adsys.io.nifti import Volume, load_aligned, load_label, load_volume, sha256_file
from adsys.preprocess.bias import n4_correct
from adsys.preprocess.config import PreprocessConfig
from adsys.preprocess.crop import centred_window, extract_window
from adsys.preprocess.mask import threshold_mask
from adsys.preprocess.normalize import normalize_intensity

RECORD_VERSION = 1


@dataclass
class Preprocessed:
    """A preprocessed subject. Arrays are (x, y, z) on ``grid`` (RAS+)."""

    subject_id: str
    image: np.ndarray  # float32 in [0, 1], 0 outside the brain
    mask: np.ndarray  # uint8 {0, 1}
    seg: np.ndarray | None  # uint8 {0, 1} ground-truth lesion mask, if any
    wm: np.ndarray | None  # float32 white-matter probability in [0, 1], 0 outside, if any
    grid: Grid
    record: dict[str, Any]


def load_registration(path: str | Path) -> np.ndarray:
    """Read a 4×4 subject→template world matrix (RAS mm) from a whitespace-separated text file."""
    path = Path(path)
    try:
        m = np.loadtxt(path, dtype=np.float64)
    except (OSError, ValueError) as exc:
        raise VolumeReadError(
            path, f"cannot read a 4x4 matrix ({exc})", "write 4 rows of 4 numbers"
        ) from exc
    if m.shape != (4, 4) or not np.all(np.isfinite(m)) or not np.allclose(m[3], [0, 0, 0, 1]):
        raise AffineError(path, f"expected a finite 4x4 affine with last row 0 0 0 1, got\n{m}")
    if abs(np.linalg.det(m[:3, :3])) < 1e-9:
        raise AffineError(path, "the registration matrix is singular", "check how it was exported")
    return m


@functools.lru_cache(maxsize=8)
def _template_corners(path: Path) -> np.ndarray:
    try:
        img = nib.load(str(path))
    except Exception as exc:
        raise VolumeReadError(
            path, f"cannot read the template ({exc})", "check config.template"
        ) from exc
    return Grid(img.shape[:3], img.affine).world_corners()


def target_grid(source: Grid, registration: np.ndarray, config: PreprocessConfig) -> Grid:
    """The RAS-aligned grid at ``config.spacing`` covering the template (if any) or the source."""
    if config.template is not None:
        corners = _template_corners(Path(config.template))
    else:
        c = source.world_corners()
        corners = (registration @ np.c_[c, np.ones(len(c))].T)[:3].T
    return bounding_grid(corners, config.spacing3)


def preprocess_volume(
    volume: Volume,
    config: PreprocessConfig,
    *,
    mask: np.ndarray | None = None,
    seg: np.ndarray | None = None,
    wm: np.ndarray | None = None,
    registration: np.ndarray | None = None,
    subject_id: str = "",
) -> Preprocessed:
    """Run the preprocessing steps on an already-loaded volume (and its optional labels)."""
    where = volume.path or subject_id or None
    reg = np.eye(4) if registration is None else np.asarray(registration, dtype=np.float64)
    data = volume.data
    n4_done = False
    if config.n4:
        data = n4_correct(data, mask, volume.grid.spacing)
        n4_done = True

    grid = target_grid(volume.grid, reg, config)
    order = 3 if config.interpolation == "bspline" else 1
    image = resample(data, volume.grid, grid, world=reg, order=order)
    if order == 3:  # B-splines overshoot; keep the source's intensity range
        np.clip(image, float(data.min()), float(data.max()), out=image)
    if mask is not None:
        mask_record: dict[str, Any] = {"source": "file"}
    else:  # threshold on the source grid: resampled intensities ring into the background
        mask, mask_record = threshold_mask(data, config.mask_threshold, config.mask_background)
    brain = resample(mask.astype(np.uint8), volume.grid, grid, world=reg, order=0) > 0
    if not brain.any():
        raise EmptyMaskError(
            where,
            f"the brain mask ({mask_record['source']}) is empty on the preprocessed grid",
            "check the mask file, or lower mask_threshold / set mask_background for images "
            "without a given mask",
        )
    lesions = None
    if seg is not None:
        lesions = resample((seg > 0).astype(np.uint8), volume.grid, grid, world=reg, order=0)
    if wm is not None:
        wm = np.clip(resample(wm, volume.grid, grid, world=reg, order=1), 0.0, 1.0)

    start = np.zeros(3, dtype=int)
    if config.shape is not None:
        try:
            start = centred_window(brain, config.shape)
        except ValueError as exc:
            raise CropError(
                where, str(exc), "increase `shape` (or `spacing`) so the whole brain fits"
            ) from exc
        image = extract_window(image, start, config.shape)
        brain = extract_window(brain, start, config.shape)
        if lesions is not None:
            lesions = extract_window(lesions, start, config.shape)
        if wm is not None:
            wm = extract_window(wm, start, config.shape)
        grid = Grid(config.shape, translate(grid.affine, start))

    try:
        image, norm = normalize_intensity(
            image,
            brain,
            config.normalization,
            percentiles=config.percentiles,
            quantiles=config.quantiles,
        )
    except ValueError as exc:
        raise InputError(where, str(exc), "check that the image is not blank") from exc

    record = {
        "record_version": RECORD_VERSION,
        "adsys_version": __version__,
        "subject_id": subject_id,
        "config": config.model_dump(mode="json"),
        "config_digest": config.digest(),
        "source_grid": volume.source.to_json(),
        "canonical_grid": volume.grid.to_json(),
        "registration": reg.tolist(),
        "grid": grid.to_json(),
        "crop_start": [int(v) for v in start],
        "mask": {**mask_record, "voxels": int(brain.sum())},
        "n4": n4_done,
        "normalization": norm,
        "warnings": list(volume.warnings),
    }
    return Preprocessed(
        subject_id=subject_id,
        image=image,
        mask=brain.astype(np.uint8),
        seg=None if lesions is None else lesions.astype(np.uint8),
        wm=None if wm is None else wm * brain,
        grid=grid,
        record=record,
    )


def preprocess_subject(entry: SubjectEntry, config: PreprocessConfig) -> Preprocessed:
    """Load a manifest row's files, validate them against each other, and preprocess."""
    volume = load_volume(entry.image)
    mask = load_label(entry.mask, volume, role="mask") if entry.mask else None
    seg = load_label(entry.seg, volume, role="seg") if entry.seg else None
    wm = load_aligned(entry.wm, volume, role="wm").data if entry.wm else None
    reg = load_registration(entry.affine) if entry.affine else None
    out = preprocess_volume(
        volume, config, mask=mask, seg=seg, wm=wm, registration=reg, subject_id=entry.subject_id
    )
    out.record["source"] = {
        "image": str(entry.image),
        "sha256": sha256_file(entry.image),
        "mask": str(entry.mask) if entry.mask else None,
        "seg": str(entry.seg) if entry.seg else None,
        "wm": str(entry.wm) if entry.wm else None,
        "affine": str(entry.affine) if entry.affine else None,
    }
    return out


def to_native(
    data: np.ndarray, record: dict[str, Any], *, order: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Map ``data`` on the preprocessed grid back onto the subject's source grid.

    Returns ``(array, affine)`` in the on-disk voxel order of the source scan, ready for
    :func:`~adsys.io.save_volume`, so the map overlays the original file voxel for voxel.
    ``order`` 0 for label maps, 1 (default) for continuous maps.
    """
    src = Grid.from_json(record["grid"])
    dst = Grid.from_json(record["source_grid"])
    reg = np.asarray(record["registration"], dtype=np.float64)
    return resample(data, src, dst, world=np.linalg.inv(reg), order=order), dst.affine
