"""Shards: schema, codecs, samples, Zarr + WebDataset writers, the Ray build job's logic,
tar and streaming readers.

Public names are imported lazily (the reader pulls in torch and webdataset, the builder Ray),
so ``adsys shards inspect`` and the CLI start fast.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ShardSpec": "adsys.shards.spec",
    "VariantRecipe": "adsys.shards.spec",
    "load_spec": "adsys.shards.spec",
    "Sample": "adsys.shards.sample",
    "ShardManifest": "adsys.shards.schema",
    "ShardFormatError": "adsys.shards.schema",
    "ShardManifestError": "adsys.shards.schema",
    "BuildResult": "adsys.shards.build",
    "SpecMismatchError": "adsys.shards.build",
    "build_shards": "adsys.shards.build",
    "CohortStore": "adsys.shards.store",
    "ShardStream": "adsys.shards.stream",
    "ShardLoader": "adsys.shards.loader",
    "CorruptShardError": "adsys.shards.stream",
    "make_loader": "adsys.shards.loader",
    "read_shard": "adsys.shards.tar",
    "replay_variant": "adsys.synth.variants",
    "verify_shards": "adsys.shards.verify",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'adsys.shards' has no attribute {name!r}")
