"""Shards: schema, Zarr + WebDataset writers, the Ray build job's logic, streaming reader."""
