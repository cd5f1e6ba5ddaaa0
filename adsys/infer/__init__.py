"""Batch inference: per-batch predictor, writers (NIfTI, Zarr, CSV), report (PNG/HTML)."""
