"""adsys: diffusion-based anomaly detection for brain MRI at cohort scale."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("adsys")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
