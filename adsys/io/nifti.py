"""Read and write NIfTI / MGZ volumes in RAS+ canonical voxel order, with validation.

Every volume adsys touches goes through :func:`load_volume`: it returns float32 data in
nibabel's closest-canonical (RAS+) order together with the affine, and remembers the on-disk
grid so that maps can later be written back in the subject's native space.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import uuid
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation

from adsys.errors import (
    AffineError,
    DimensionError,
    GeometryMismatchError,
    NonFiniteError,
    VolumeReadError,
)
from adsys.io.geometry import Grid

log = logging.getLogger(__name__)

_READ_ERRORS = (ImageFileError, OSError, EOFError, zlib.error, gzip.BadGzipFile, ValueError)


@dataclass
class Volume:
    """A 3D image in RAS+ canonical order.

    ``data``: float32 (x, y, z); ``affine``: 4×4 voxel→world (mm) of ``data``;
    ``source``: the grid as stored on disk (before reorientation), for the way back;
    ``warnings``: what was suspicious but usable in the file (recorded with the outputs).
    """

    data: np.ndarray
    affine: np.ndarray
    source: Grid
    path: Path | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def grid(self) -> Grid:
        return Grid(self.data.shape, self.affine)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes (provenance of every subject we process)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _squeeze_to_3d(data: np.ndarray, path: Path) -> np.ndarray:
    shape = data.shape
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        what = f"a {len(shape)}D image of shape {shape}"
        fix = (
            "split the series and pass one 3D volume (e.g. `fslsplit` or nibabel `image.slicer`)"
            if data.ndim > 3
            else "pass a 3D volume"
        )
        raise DimensionError(path, f"expected a 3D volume but found {what}", fix)
    return data


def _check_affine(affine: np.ndarray, path: Path) -> None:
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise AffineError(
            path,
            f"the voxel-to-world affine is singular or not finite:\n{np.array2string(affine)}",
            "repair the header's qform/sform (e.g. `fslorient` or nibabel `set_sform`)",
        )


def _header_warnings(img: nib.spatialimages.SpatialImage, path: Path) -> list[str]:
    """Logged warnings about a usable header: a NIfTI whose qform and sform codes are both 0
    holds no orientation, and nibabel falls back to a guessed affine."""
    if not isinstance(img, nib.Nifti1Pair):  # NIfTI-2 included; MGH always has an affine
        return []
    if int(img.header["qform_code"]) or int(img.header["sform_code"]):
        return []
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    warning = (
        f"{path}: the NIfTI header holds no orientation (qform_code and sform_code are 0); "
        f"nibabel's fallback affine is used (voxel sizes {zooms} from pixdim, axes assumed "
        "LAS, origin at the centre), so left/right and the world position may be wrong. "
        "Fix: set the header's sform/qform from the scanner export (e.g. nibabel "
        "`set_sform(affine, code=1)`)"
    )
    log.warning("%s", warning)
    return [warning]


def load_volume(path: str | Path) -> Volume:
    """Load a .nii, .nii.gz or .mgz file as float32 RAS+ :class:`Volume`.

    Raises a specific :class:`~adsys.errors.InputError` naming ``path`` when the file is
    missing or unreadable (corrupt gzip included), not 3D (4D with one volume is squeezed),
    has a singular affine, or holds non-finite voxels. A NIfTI header without orientation
    (qform and sform codes 0) is logged as a warning and kept in ``Volume.warnings``.
    """
    path = Path(path)
    if not path.is_file():
        raise VolumeReadError(path, "file not found", "check the path in the manifest")
    try:
        img = nib.load(str(path))
        affine = np.asarray(img.affine, dtype=np.float64)
        data = np.asarray(img.get_fdata(dtype=np.float32))
    except _READ_ERRORS as exc:
        raise VolumeReadError(
            path,
            f"cannot be read as a NIfTI/MGZ image ({type(exc).__name__}: {exc})",
            "re-export the file; a truncated or corrupt .gz must be re-copied from its source",
        ) from exc
    data = _squeeze_to_3d(data, path)
    _check_affine(affine, path)
    bad = ~np.isfinite(data)
    if bad.any():
        raise NonFiniteError(
            path,
            f"{int(bad.sum())} voxel(s) are NaN or infinite",
            "replace them (e.g. `np.nan_to_num`) or fix the step that produced the file",
        )
    source = Grid(data.shape, affine)
    ornt = io_orientation(affine)
    data = np.ascontiguousarray(apply_orientation(data, ornt), dtype=np.float32)
    canonical = affine @ inv_ornt_aff(ornt, source.shape)
    return Volume(data=data, affine=canonical, source=source, path=path,
                  warnings=_header_warnings(img, path))


def load_aligned(path: str | Path, like: Volume, *, role: str) -> Volume:
    """Load a map that must share ``like``'s grid (a mask, a label or tissue map).

    ``role`` ("mask", "seg", "wm", ...) only words the error. Raises
    :class:`~adsys.errors.GeometryMismatchError` naming both files when shape or affine differ.
    """
    vol = load_volume(path)
    if not vol.source.same_as(like.source, atol=1e-3):
        raise GeometryMismatchError(
            vol.path,
            f"this {role} does not match its image {like.path}: shape {vol.source.shape} vs "
            f"{like.source.shape}, affine\n{np.array2string(vol.source.affine, precision=3)}\nvs\n"
            f"{np.array2string(like.source.affine, precision=3)}",
            f"resample the {role} onto its image's grid or point the manifest at the right file",
        )
    return vol


def load_label(path: str | Path, like: Volume, *, role: str = "mask") -> np.ndarray:
    """Load a mask or label map on ``like``'s grid as uint8 labels (x, y, z), RAS+."""
    return np.rint(load_aligned(path, like, role=role).data).clip(0, 255).astype(np.uint8)


def save_volume(
    path: str | Path, data: np.ndarray, affine: np.ndarray, dtype: np.dtype | type = np.float32
) -> Path:
    """Write ``data`` (x, y, z) with ``affine`` as NIfTI-1 (``.nii`` or ``.nii.gz``), atomically.

    The file appears complete or not at all (temporary file + rename). float16 is not a
    NIfTI-1 type, so ask for float32 or an integer type instead.
    """
    path = Path(path)
    dtype = np.dtype(dtype)
    if dtype == np.float16:
        raise ValueError("NIfTI-1 cannot store float16; write float32 (or int16) instead")
    if data.ndim != 3:
        raise ValueError(f"save_volume writes 3D volumes, got shape {data.shape}")
    img = nib.Nifti1Image(np.asarray(data).astype(dtype, copy=False), np.asarray(affine, float))
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    if not np.allclose(img.get_qform(), affine, atol=1e-5):
        img.set_qform(None, code=0)  # sheared: only the sform can hold it exactly
    img.header.set_xyzt_units("mm")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{path.name}")
    try:
        nib.save(img, str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
