"""Named evaluation protocols: how each paper turns anomaly maps into the numbers it reports.

The papers disagree on post-processing, on which voxels count, on pooling and on what "best
Dice" means, so their numbers are not comparable. A :class:`Protocol` fixes all of it; every
number adsys reports carries the protocol's name. Definitions used throughout:

* a voxel is *predicted* anomalous when its (post-processed) score is ``>= threshold``;
* **AP** = scikit-learn's average precision, **AUROC** = scikit-learn's ROC AUC (exact, ties
  included; :mod:`adsys.metrics.ranking`);
* **best Dice** (rule ``exact``) = the maximum of ``2PR/(P+R)`` over the precision–recall
  curve, i.e. the Dice of the best single threshold, found over all thresholds; rule
  ``interval`` = cDDPM's 10-step interval search (:func:`~adsys.metrics.threshold.
  interval_search`); rule ``grid200`` = DISYRE's MaxDSC: the best Dice over 200 thresholds
  spaced linearly from the minimum score to 1 (the label maximum);
* **per-volume** numbers are computed on each volume and reported as mean ± std (numpy
  ``std``, ddof 0) over volumes with lesions; **pooled** numbers treat the voxels of all
  volumes as one set, accumulated in a 2¹⁶-bin :class:`~adsys.metrics.histogram.
  ScoreHistogram` (exact up to the bin width);
* **slice level**: one score per axial slice (:mod:`adsys.metrics.slices`), label = the slice
  holds any ground-truth voxel; AP and AUROC over all slices of the cohort.

The protocols (see :data:`PROTOCOLS` for the exact settings):

``behrendt`` (cDDPM / pDDPM code): map × brain mask eroded per axial slice (cross, ``X//25``
iterations), 3D median 5; all voxels of the volume, background included; per-volume AUROC,
AP and best Dice (interval search); Dice at one threshold chosen on the pooled validation
maps (interval search), after removing components ≤ 7 voxels; slice score = mean inside the
un-eroded brain mask.

``upd`` (UPD benchmark / ICDM): background zeroed (``x > min x`` per slice); voxels of all
slices with any non-zero intensity, pooled; AP and exact best Dice; slice score = the
slice's mean.

``disyre`` (DISYRE v2): background (``x == 0``) zeroed; 10 000 random voxels per volume (from
the slices spanning the brain, seeded), pooled; AP and MaxDSC (200-threshold grid); slice
scores mean / max / mean of the top 100, each with AP and AUROC.

``conddiff`` (CondDiff): map ÷ its maximum, clipped to [0, 1], × brain mask eroded in 3D
(6-neighbour cross, ``X//25``), 3D median 5, clipped; all voxels; ground truth = seg ≥ 0.1;
per-volume exact best Dice, AP, AUROC and the FPR at the best-Dice threshold.

This module is the registry; :mod:`adsys.metrics.subject` scores one subject under a
protocol and :mod:`adsys.metrics.cohort` chooses the cohort threshold and summarises.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from adsys.errors import InputError
from adsys.metrics.slices import SliceReduction
from adsys.metrics.threshold import ThresholdSearch
from adsys.scoring.postprocess import PostprocessConfig

__all__ = ["PROTOCOLS", "Protocol", "get_protocol"]

BestDiceRule = Literal["exact", "interval", "grid200"]
VoxelSelection = Literal["all", "nonempty_slices", "sample"]
SliceSelection = Literal["all", "nonempty", "brain_extent"]


@dataclass(frozen=True)
class Protocol:
    """One paper's reporting recipe (module doc). ``headline`` lists the summary keys
    (``section.metric``) the paper itself reports."""

    name: str
    reference: str
    description: str
    postprocess: PostprocessConfig
    voxels: VoxelSelection
    pooling: Literal["volume", "pooled"]
    best_dice: BestDiceRule
    gt_min: float | None  # label = seg >= gt_min; None: seg > 0
    threshold_search: ThresholdSearch  # how a validation threshold is chosen
    cc_max_size: int | None  # components removed before Dice at a threshold
    slice_reductions: tuple[SliceReduction, ...]
    slice_mask: bool  # the "mean" slice score is taken inside the brain mask
    slice_selection: SliceSelection
    headline: tuple[str, ...]
    samples_per_volume: int = 10_000

    def labels(self, seg: np.ndarray) -> np.ndarray:
        """Binary ground truth from a (possibly soft) lesion map."""
        seg = np.asarray(seg)
        return seg > 0 if self.gt_min is None else seg >= self.gt_min

    def describe(self) -> dict[str, Any]:
        """A JSON-ready record of the protocol (written next to every number)."""
        return {
            "name": self.name,
            "reference": self.reference,
            "description": self.description,
            "postprocess": self.postprocess.model_dump(mode="json"),
            "voxels": self.voxels,
            "pooling": self.pooling,
            "best_dice": self.best_dice,
            "gt": "seg > 0" if self.gt_min is None else f"seg >= {self.gt_min}",
            "threshold_search": self.threshold_search,
            "cc_max_size": self.cc_max_size,
            "slice_reductions": list(self.slice_reductions),
            "slice_selection": self.slice_selection,
            "headline": list(self.headline),
            "definitions": DEFINITIONS,
        }


DEFINITIONS = {
    "predicted": "a voxel is predicted anomalous when its post-processed score >= threshold",
    "ap": "average precision, exact, equal to sklearn.metrics.average_precision_score",
    "auroc": "area under the ROC curve, exact, equal to sklearn.metrics.roc_auc_score",
    "best_dice/exact": "max over the precision-recall curve of 2PR/(P+R) (all thresholds)",
    "best_dice/interval": "cDDPM's 10-step interval search on [0, max score]",
    "best_dice/grid200": "max Dice over 200 thresholds linspace(min score, 1) (DISYRE MaxDSC)",
    "dice": "Dice at the cohort threshold, after removing small connected components",
    "per_volume": "mean and std (ddof 0) over volumes with lesions",
    "pooled": "all selected voxels of the split as one set, 2^16-bin histogram",
    "slice": "one score per axial slice; label = slice holds any ground-truth voxel",
}

PROTOCOLS: dict[str, Protocol] = {
    "behrendt": Protocol(
        name="behrendt",
        reference="Behrendt et al., cDDPM / pDDPM (utils_eval.py)",
        description=(
            "map x brain mask eroded per axial slice (X//25), 3D median 5; all voxels; "
            "per-volume AUROC, AP, best Dice (interval search); Dice at a validation "
            "threshold (interval search) after removing components <= 7 voxels"
        ),
        postprocess=PostprocessConfig(erosion="slice2d", median_size=5),
        voxels="all",
        pooling="volume",
        best_dice="interval",
        gt_min=None,
        threshold_search="interval",
        cc_max_size=7,
        slice_reductions=("mean",),
        slice_mask=True,
        slice_selection="all",
        headline=("per_volume.dice", "per_volume.best_dice", "per_volume.ap",
                  "per_volume.auroc"),
    ),
    "upd": Protocol(
        name="upd",
        reference="Lagogiannis et al. UPD benchmark, as used by Baugh et al. (ICDM)",
        description=(
            "background zeroed (x > min x per slice); voxels of non-empty slices pooled; "
            "AP and exact best Dice; slice score = slice mean"
        ),
        postprocess=PostprocessConfig(background="above_min_slice"),
        voxels="nonempty_slices",
        pooling="pooled",
        best_dice="exact",
        gt_min=None,
        threshold_search="exact",
        cc_max_size=None,
        slice_reductions=("mean",),
        slice_mask=False,
        slice_selection="nonempty",
        headline=("pooled.ap", "pooled.best_dice", "slice.mean.ap", "slice.mean.auroc"),
    ),
    "disyre": Protocol(
        name="disyre",
        reference="Naval Marimont et al., DISYRE v2 (evaluate.py)",
        description=(
            "background (x == 0) zeroed; 10,000 random voxels per volume pooled; AP and "
            "MaxDSC on 200 thresholds; slice scores mean / max / top-100 mean"
        ),
        postprocess=PostprocessConfig(background="nonzero"),
        voxels="sample",
        pooling="pooled",
        best_dice="grid200",
        gt_min=None,
        threshold_search="exact",
        cc_max_size=None,
        slice_reductions=("mean", "max", "top100"),
        slice_mask=False,
        slice_selection="brain_extent",
        headline=("pooled.ap", "pooled.best_dice", "slice.mean.ap", "slice.max.ap",
                  "slice.top100.ap"),
    ),
    "conddiff": Protocol(
        name="conddiff",
        reference="Lawry Aguila et al., CondDiff (scripts/inference.py)",
        description=(
            "map / max, clipped, x brain mask eroded in 3D (X//25), 3D median 5, clipped; "
            "all voxels; GT = seg >= 0.1; per-volume exact best Dice, AP, AUROC, FPR at "
            "the best-Dice threshold"
        ),
        postprocess=PostprocessConfig(normalize_max=True, erosion="3d", median_size=5,
                                      clip=True),
        voxels="all",
        pooling="volume",
        best_dice="exact",
        gt_min=0.1,
        threshold_search="exact",
        cc_max_size=None,
        slice_reductions=(),
        slice_mask=False,
        slice_selection="all",
        headline=("per_volume.best_dice", "per_volume.ap", "per_volume.auroc",
                  "per_volume.fpr_at_best"),
    ),
}


def get_protocol(name: str) -> Protocol:
    """The protocol called ``name``; unknown names list the known ones."""
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise InputError(None, f"unknown protocol {name!r}",
                         f"use one of {', '.join(sorted(PROTOCOLS))}") from None
