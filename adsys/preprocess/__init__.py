"""Preprocessing: registration with a given affine, resampling, brain mask, crop/pad, N4,
intensity normalisation; every parameter recorded so maps can go back to native space."""

from adsys.preprocess.cohort import CohortResult, preprocess_cohort
from adsys.preprocess.normalize import normalize_intensity
from adsys.preprocess.pipeline import (
    Preprocessed,
    load_registration,
    preprocess_subject,
    preprocess_volume,
    to_native,
)

__all__ = [
    "CohortResult",
    "Preprocessed",
    "load_registration",
    "normalize_intensity",
    "preprocess_cohort",
    "preprocess_subject",
    "preprocess_volume",
    "to_native",
]
