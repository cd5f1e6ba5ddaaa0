"""The per-batch predictor of the Ray Data job, and the per-subject work it does.

:class:`SubjectPredictor` is a callable class for ``Dataset.map_batches``: Ray Data keeps a
pool of actors, each loads the models once (on its GPU when it has one) and then handles
batches of subject ids. For each subject, :func:`process_subject` loads the data (cohort
store or on-the-fly preprocessing), reconstructs and scores it (:class:`VolumeScorer`),
post-processes and scores the map under the run's protocol, and writes every output
(:mod:`adsys.infer.outputs`). A subject that fails (unreadable scan, ...) is reported with
its reason and does not stop the run.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adsys.errors import AdsysError
from adsys.infer.config import InferConfig
from adsys.infer.outputs import write_subject
from adsys.infer.scorer import VolumeScorer
from adsys.infer.sources import SubjectData, open_source
from adsys.methods.export import load_exported
from adsys.metrics.protocols import Protocol, get_protocol
from adsys.metrics.subject import score_subject
from adsys.resources import peak_memory_mb

log = logging.getLogger(__name__)

__all__ = ["SubjectPredictor", "process_subject", "shared_preprocess"]


def shared_preprocess(model_configs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The preprocessing every model of the ensemble was trained on (they must agree)."""
    recorded = {str(c.get("preprocess")) for c in model_configs}
    if len(recorded) > 1:
        raise ValueError("the ensemble's models were trained on differently preprocessed data")
    return model_configs[0].get("preprocess")


def process_subject(
    data: SubjectData,
    scorer: VolumeScorer,
    protocol: Protocol,
    config: InferConfig,
    *,
    digest: str,
    threshold: float | None,
) -> dict[str, Any]:
    """Reconstruct, score, post-process, evaluate and write one subject; its result record."""
    t0 = time.perf_counter()
    rec, raw = scorer(data.image, data.subject_id)
    t1 = time.perf_counter()
    score, pp = score_subject(
        protocol, raw, data.image, data.mask, data.seg, rec,
        subject_id=data.subject_id, split=data.split,
        threshold=threshold if data.seg is not None else None,
        score_range=scorer.recipe.map.score_range, seed=config.seed,
    )
    t2 = time.perf_counter()
    return write_subject(
        config.out, data, rec, raw, pp, score, digest=digest, threshold=threshold,
        native=config.native, zarr_output=config.zarr, overlay=config.overlays,
        extra={"seconds": {"model": round(t1 - t0, 3), "scoring": round(t2 - t1, 3)},
               **peak_memory_mb()},  # the actor's peak so far (models loaded included)
    )


class SubjectPredictor:
    """``map_batches`` callable class: ``{"subject_id", "split"}`` → status per subject.

    Args:
        config: :meth:`InferConfig.model_dump` (JSON) of the run.
        digest: the run's scoring digest (recorded in each ``result.json``).
        threshold: the cohort threshold for Dice at a threshold, or ``None``.
        preprocess: the models' preprocessing (for a manifest cohort).
    """

    def __init__(self, config: dict[str, Any], digest: str, threshold: float | None,
                 preprocess: dict[str, Any] | None) -> None:
        self.config = InferConfig.model_validate(config)
        torch.set_num_threads(self.config.cpus_per_worker)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        models = [load_exported(Path(p), self.device, self.config.inference)[0]
                  for p in self.config.models]
        self.scorer = VolumeScorer(models, self.config.seed, self.device)
        self.source = open_source(self.config.cohort, preprocess, self.config.inputs,
                                  self.config.mask)
        self.protocol = get_protocol(self.scorer.recipe.protocol)
        self.digest = digest
        self.threshold = threshold

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ids, status, errors, seconds = [], [], [], []
        for sid in batch["subject_id"]:
            sid = str(sid)
            t0 = time.perf_counter()
            try:
                data = self.source.load(sid)
                process_subject(data, self.scorer, self.protocol, self.config,
                                digest=self.digest, threshold=self.threshold)
                status.append("done")
                errors.append("")
            except (AdsysError, ValueError, OSError) as exc:
                log.warning("subject %s failed: %s", sid, exc)
                status.append("failed")
                errors.append(f"{type(exc).__name__}: {exc}")
            ids.append(sid)
            seconds.append(time.perf_counter() - t0)
        return {"subject_id": np.array(ids), "status": np.array(status),
                "error": np.array(errors), "seconds": np.array(seconds)}
