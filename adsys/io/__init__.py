"""NIfTI I/O, voxel grids and cohort manifests."""

from adsys.io.geometry import Grid, resample
from adsys.io.manifest import Manifest, SubjectEntry, load_manifest, write_manifest
from adsys.io.nifti import Volume, load_aligned, load_label, load_volume, save_volume, sha256_file

__all__ = [
    "Grid",
    "Manifest",
    "SubjectEntry",
    "Volume",
    "load_aligned",
    "load_label",
    "load_manifest",
    "load_volume",
    "resample",
    "save_volume",
    "sha256_file",
    "write_manifest",
]
