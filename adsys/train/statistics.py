"""Training of a method with nothing to optimise: one pass of statistics, then the export.

A method whose contract says ``trainable = False`` (the classic baselines,
:mod:`adsys.methods.baselines`) computes what it needs — e.g. the voxel-wise mean and std of
the training subjects — in :meth:`~adsys.methods.base.Method.fit`, from one pass over the
training split of the shards (:func:`adsys.train.data.train_pass`). The result is exported
exactly like a trained model (``run_dir/export``), so inference, ensembles and benchmarks
take it like any other. It runs in the calling process: no Ray, no DeepSpeed, seconds.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from adsys.methods import build_method
from adsys.methods.export import export_model
from adsys.resources import peak_memory_mb
from adsys.train.config import TrainConfig
from adsys.train.data import shard_preprocess_config, train_pass

log = logging.getLogger(__name__)

__all__ = ["fit_statistics"]


def fit_statistics(cfg: TrainConfig) -> Path:
    """Fit ``cfg.method`` (not trainable) on the train split of ``cfg.shards`` and export it
    to ``cfg.run_dir/export``; returns the export folder."""
    method = build_method(cfg.method, cfg.method_spec())
    if method.trainable:
        raise ValueError(f"method {cfg.method!r} is trained with Ray Train (adsys.train.job), "
                         "not fitted")
    t0 = time.perf_counter()
    items = method.fit(train_pass(cfg))
    seconds = time.perf_counter() - t0
    out = export_model(
        cfg.run_dir / "export", cfg.method, method.config, method.state_dict(),
        extra={"train": cfg.model_dump(mode="json"), "steps": 0, "fitted_items": items,
               "train_seconds": round(seconds, 1), "preprocess": shard_preprocess_config(cfg),
               **peak_memory_mb()},
    )  # fmt: skip
    log.info("%s fitted on %d training item(s) in %.1f s: %s", cfg.method, items, seconds, out)
    return out
