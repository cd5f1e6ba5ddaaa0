"""Foreign blending sources for task 1 ("other-dataset" Poisson blending).

The public code blends patches of other modalities' training sets into brain MRI (chest X-rays
and retinal fundus images for the UPD benchmark; MOOD or ImageNet in MTML, implementations.md
§3.3 and §7 item 17). adsys cannot ship those datasets, so the sources are either

* **a folder** (``foreign_source``): its ``.png`` / ``.jpg`` / ``.jpeg`` images (read with
  ``skimage.io``, RGB(A) turned grey) and ``.nii`` / ``.nii.gz`` volumes (nibabel), sorted by
  name; or
* **by default**, the natural images that scikit-image installs with its package (its
  ``skimage/data`` folder: :data:`PACKAGED`, the ones present). They are read from disk
  directly, never through ``skimage.data``'s downloader, so nothing touches the network.

A source is resampled (linear, anti-aliased) to the target item's spatial shape — the public
code's datasets were all preprocessed to the training resolution — and min–max rescaled to
[0, 1]. Dimensions: a 2D target takes a 2D image, or a volume's middle slice along its last
axis; a 3D target takes a volume, or a 2D image **extruded** along the first axis (constant
along it: the patch's random 3D rotation then tilts that texture; a stack of different images
would instead put an unnatural edge between every pair of slices). Records name a source by
its file name.

Loaded sources are cached per (name, shape) on first use; the cache is dropped when the object
is pickled (loader workers fill their own).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np

from adsys.errors import InputError

__all__ = ["PACKAGED", "ForeignSources"]

PACKAGED = (
    "astronaut.png", "brick.png", "camera.png", "cell.png", "chelsea.png", "coffee.png",
    "coins.png", "grass.png", "gravel.png", "hubble_deep_field.jpg", "ihc.png",
    "microaneurysms.png", "moon.png", "motorcycle_left.png", "page.png", "retina.jpg",
    "rocket.jpg", "text.png",
)  # fmt: skip
"""scikit-image's packaged natural images used by default (synthetic ones left out)."""

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
VOLUME_SUFFIXES = (".nii", ".nii.gz")


def _packaged_folder() -> Path:
    import skimage

    return Path(skimage.__file__).parent / "data"


class ForeignSources:
    """The foreign sources in ``folder`` (``None``: scikit-image's packaged images)."""

    def __init__(self, folder: str | None = None) -> None:
        self.folder = None if folder is None else Path(folder)
        self._cache: dict[tuple[str, tuple[int, ...]], np.ndarray] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_cache": {}}

    @functools.cached_property
    def names(self) -> list[str]:
        """The sources' file names, sorted; ``InputError`` when there is none."""
        if self.folder is None:
            root = _packaged_folder()
            found = [n for n in PACKAGED if (root / n).is_file()]
            where, fix = root, "reinstall scikit-image, or set foreign_source to a folder"
        else:
            if not self.folder.is_dir():
                raise InputError(
                    self.folder,
                    "the foreign-source folder does not exist",
                    "set foreign_source to a folder of images or NIfTI volumes",
                )
            suffixes = IMAGE_SUFFIXES + VOLUME_SUFFIXES
            found = sorted(
                p.name
                for p in self.folder.iterdir()
                if p.is_file() and p.name.lower().endswith(suffixes)
            )
            where, fix = self.folder, f"put images or volumes ({', '.join(suffixes)}) there"
        if not found:
            raise InputError(where, "no foreign blending source found", fix)
        return found

    def path(self, name: str) -> Path:
        return (_packaged_folder() if self.folder is None else self.folder) / name

    def load(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """Source ``name`` as a float64 array of ``shape`` (2D or 3D) in [0, 1] (module doc)."""
        key = (name, tuple(shape))
        if key not in self._cache:
            path = self.path(name)
            try:
                self._cache[key] = _read(path, key[1])
            except Exception as exc:  # any reader's failure: name the file
                raise InputError(
                    path, f"cannot read this foreign source ({exc})", "fix or remove the file"
                ) from exc
        return self._cache[key]


def _read(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """The file at ``path`` resampled to ``shape`` and rescaled to [0, 1] (module doc)."""
    from skimage import color, io, transform

    if path.name.lower().endswith(VOLUME_SUFFIXES):
        import nibabel as nib

        data = np.asarray(nib.load(path).dataobj, dtype=np.float64)
        data = data[(...,) + (0,) * (data.ndim - 3)]  # a 4D file's first volume
        if data.ndim == 3 and len(shape) == 2:
            data = data[..., data.shape[-1] // 2]
    else:
        data = io.imread(path)
        if data.ndim == 3 and data.shape[-1] == 4:
            data = color.rgba2rgb(data)
        if data.ndim == 3:
            data = color.rgb2gray(data)
        data = data.astype(np.float64)
    plane = shape if data.ndim == len(shape) else shape[1:]
    data = transform.resize(data, plane, order=1, anti_aliasing=True, preserve_range=True)
    data = np.broadcast_to(data, shape)  # extrude a 2D image along a 3D target's first axis
    low, high = data.min(), data.max()
    scaled = (data - low) / (high - low) if high > low else np.zeros(shape)
    return np.ascontiguousarray(scaled)
