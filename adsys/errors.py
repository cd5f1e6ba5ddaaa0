"""Exception types. Each message names the file or subject at fault and how to fix it."""

from __future__ import annotations

from pathlib import Path


class AdsysError(Exception):
    """Base class of every error adsys raises on purpose.

    Rebuilt from its message and attributes when unpickled (Ray sends a worker's exception
    to the driver that way), whatever the subclass's constructor takes.
    """

    def __reduce__(self):
        return _rebuild, (type(self), self.args, self.__dict__)


def _rebuild(cls: type[AdsysError], args: tuple, state: dict) -> AdsysError:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


class InputError(AdsysError, ValueError):
    """A user-supplied file or value cannot be used; the message names it and the fix."""

    def __init__(self, path: str | Path | None, problem: str, fix: str = "") -> None:
        self.path = None if path is None else str(path)
        self.problem = problem
        self.fix = fix
        where = f"{self.path}: " if self.path else ""
        hint = f" Fix: {fix}" if fix else ""
        super().__init__(f"{where}{problem}.{hint}")


class VolumeReadError(InputError):
    """The file could not be read as an image (missing, unknown format, corrupt gzip...)."""


class DimensionError(InputError):
    """The image is not a 3D volume (a 4D image with one volume is accepted and squeezed)."""


class NonFiniteError(InputError):
    """The image contains NaN or infinite voxels."""


class AffineError(InputError):
    """The image's voxel-to-world affine is singular or not finite."""


class GeometryMismatchError(InputError):
    """A mask or label map does not share its image's shape or affine."""


class EmptyMaskError(InputError):
    """A brain mask has no voxel inside the brain."""


class CropError(InputError):
    """The brain does not fit into the requested target shape."""


class ManifestError(InputError):
    """A cohort manifest has one or more problems; all of them are listed at once."""

    def __init__(self, path: str | Path, problems: list[str]) -> None:
        self.problems = list(problems)
        listing = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(
            path,
            f"{len(self.problems)} problem(s) in the cohort manifest:\n{listing}\n",
            "correct the rows listed above (paths are relative to the manifest's folder).",
        )
