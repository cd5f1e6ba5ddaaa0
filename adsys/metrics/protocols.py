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
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from adsys.errors import InputError
from adsys.metrics.histogram import ScoreHistogram
from adsys.metrics.ranking import BestDice, ExactScores, dice_from_counts
from adsys.metrics.reconstruction import reconstruction_metrics
from adsys.metrics.segmentation import metrics_at_threshold
from adsys.metrics.slices import SliceReduction, slice_labels, slice_scores
from adsys.metrics.threshold import ThresholdSearch, choose_threshold, interval_search
from adsys.scoring.postprocess import PostprocessConfig, postprocess

__all__ = [
    "PROTOCOLS",
    "Protocol",
    "SubjectScore",
    "ThresholdChoice",
    "choose_cohort_threshold",
    "get_protocol",
    "score_subject",
    "summarize",
]

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


@dataclass(frozen=True)
class ThresholdChoice:
    """The cohort threshold for Dice at a threshold, and where it came from."""

    value: float
    source: str
    validation_dice: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {"value": self.value, "source": self.source,
                "validation_dice": self.validation_dice}


@dataclass
class SubjectScore:
    """Everything one subject contributes to the cohort numbers.

    ``row``: per-volume metrics (``None`` without a segmentation); ``histogram``: the
    protocol's selected voxels (negatives only without a segmentation); ``slices``: slice
    scores per reduction and ``slice_labels`` (``None`` without a segmentation).
    """

    subject_id: str
    split: str
    row: dict[str, Any] | None
    histogram: ScoreHistogram
    slices: dict[str, np.ndarray] = field(default_factory=dict)
    slice_labels: np.ndarray | None = None

    def arrays(self) -> dict[str, np.ndarray]:
        """Arrays for ``np.savez_compressed`` (read back with :meth:`from_arrays`)."""
        out = dict(self.histogram.state_dict())
        out.update({f"slice_{k}": v for k, v in self.slices.items()})
        if self.slice_labels is not None:
            out["slice_labels"] = self.slice_labels
        return out

    @classmethod
    def from_arrays(
        cls, subject_id: str, split: str, row: dict[str, Any] | None, arrays: Any
    ) -> SubjectScore:
        keys = list(arrays.keys())
        return cls(
            subject_id=subject_id,
            split=split,
            row=row,
            histogram=ScoreHistogram.from_state({k: arrays[k] for k in keys
                                                 if k.startswith("hist_")}),
            slices={k[6:]: np.asarray(arrays[k]) for k in keys if k.startswith("slice_")
                    and k != "slice_labels"},
            slice_labels=np.asarray(arrays["slice_labels"]) if "slice_labels" in keys else None,
        )


def _subject_rng(seed: int, subject_id: str) -> np.random.Generator:
    return np.random.default_rng([int(seed), zlib.crc32(subject_id.encode())])


def _slice_keep(protocol: Protocol, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(z,) bool: the axial slices this protocol looks at."""
    z = image.shape[2]
    if protocol.slice_selection == "all":
        return np.ones(z, dtype=bool)
    if protocol.slice_selection == "nonempty":
        return np.abs(image).reshape(-1, z).sum(axis=0) > 0
    brain = (np.asarray(mask) > 0).reshape(-1, z).any(axis=0)
    keep = np.zeros(z, dtype=bool)
    if brain.any():
        idx = np.flatnonzero(brain)
        keep[idx[0] : idx[-1] + 1] = True
    return keep


def _select_voxels(
    protocol: Protocol, scores: np.ndarray, labels: np.ndarray, keep: np.ndarray, rng
) -> tuple[np.ndarray, np.ndarray]:
    if protocol.voxels == "all":
        return scores.ravel(), labels.ravel()
    s, lab = scores[..., keep].ravel(), labels[..., keep].ravel()
    if protocol.voxels == "nonempty_slices":
        return s, lab
    n = min(protocol.samples_per_volume, s.size)
    pick = rng.choice(s.size, size=n, replace=False)
    return s[pick], lab[pick]


def _best(protocol: Protocol, scores: ExactScores | ScoreHistogram) -> BestDice:
    """The protocol's best Dice of a score set with positives."""
    if protocol.best_dice == "exact":
        return scores.metrics().best
    if protocol.best_dice == "interval":
        return interval_search(scores)
    grid = np.linspace(scores.min_score, 1.0, 200)
    tp, fp = scores.counts_at(grid)
    dice = dice_from_counts(tp, fp, scores.positives)
    i = int(np.argmax(dice))
    n = scores.negatives
    return BestDice(float(dice[i]), float(grid[i]), float(fp[i]) / n if n else float("nan"))


def score_subject(
    protocol: Protocol,
    raw_map: np.ndarray,
    image: np.ndarray,
    mask: np.ndarray,
    seg: np.ndarray | None = None,
    reconstruction: np.ndarray | None = None,
    *,
    subject_id: str,
    split: str,
    threshold: float | None = None,
    score_range: tuple[float, float] = (0.0, 1.0),
    seed: int = 0,
) -> tuple[SubjectScore, np.ndarray]:
    """Post-process ``raw_map`` as ``protocol`` says and compute this subject's share.

    All arrays are (x, y, z) on the same grid: ``image`` the model input in [0, 1], ``mask``
    the brain mask, ``seg`` the lesion map (optional), ``reconstruction`` (optional, for the
    reconstruction metrics). ``threshold`` adds Dice / FPR / TPR at that threshold (after
    the protocol's component filtering). ``seed`` drives DISYRE's voxel sampling (with the
    subject id). Returns the :class:`SubjectScore` and the post-processed map.
    """
    pp = postprocess(raw_map, image, mask, protocol.postprocess)
    labels = protocol.labels(seg) if seg is not None else np.zeros(pp.shape, dtype=bool)
    keep = _slice_keep(protocol, image, mask)
    scores_sel, labels_sel = _select_voxels(
        protocol, pp, labels, keep, _subject_rng(seed, subject_id)
    )
    hist = ScoreHistogram(lo=score_range[0], hi=score_range[1]).update(scores_sel, labels_sel)
    slices = {
        r: slice_scores(pp, r, mask if (r == "mean" and protocol.slice_mask) else None)[keep]
        for r in protocol.slice_reductions
    }
    row = None
    s_labels = None
    if seg is not None:
        s_labels = slice_labels(labels)[keep]
        exact = ExactScores(scores_sel, labels_sel)
        rank = exact.metrics()
        best = _best(protocol, exact) if rank.positives else rank.best
        row = {
            "subject_id": subject_id,
            "split": split,
            "protocol": protocol.name,
            "lesion_voxels": int(labels.sum()),
            "ap": rank.ap,
            "auroc": rank.auroc,
            "best_dice": best.dice,
            "best_dice_threshold": best.threshold,
            "fpr_at_best": best.fpr,
        }
        if threshold is not None:
            at = metrics_at_threshold(pp, labels, threshold, protocol.cc_max_size)
            row.update(threshold=at.threshold, dice=at.dice, fpr=at.fpr, tpr=at.tpr)
        if reconstruction is not None:
            row.update(reconstruction_metrics(image, reconstruction, mask, labels))
    score = SubjectScore(subject_id, split, row, hist, slices, s_labels)
    return score, pp


def choose_cohort_threshold(
    protocol: Protocol, validation: list[SubjectScore], spec: str | float | None
) -> tuple[ThresholdChoice | None, str]:
    """The threshold for Dice at a threshold, from ``spec``:

    * a number — used as is;
    * ``"val"`` — maximise Dice on the pooled validation maps with the protocol's search
      (``exact`` max-F1, or cDDPM's ``interval`` search); needs validation lesions;
    * ``"val-fpr=A"`` — the threshold at false-positive rate ``A`` over the validation
      voxels without lesions (cDDPM's healthy-set thresholds, e.g. ``val-fpr=0.05``);
    * ``None`` / ``"none"`` — no threshold.

    Returns the choice (or ``None``) and a sentence saying what was done.
    """
    if spec is None or spec == "none":
        return None, "no threshold requested"
    if isinstance(spec, int | float) or _is_number(spec):
        value = float(spec)
        return ThresholdChoice(value, "given"), f"threshold {value:g} given"
    pool = None
    for s in validation:
        pool = s.histogram.copy() if pool is None else pool.__iadd__(s.histogram)
    if spec == "val":
        if pool is None or pool.positives == 0:
            return None, "no validation subjects with lesions: Dice at a threshold not computed"
        best = choose_threshold(pool, protocol.threshold_search)
        return (
            ThresholdChoice(best.threshold, f"val pool, {protocol.threshold_search} max Dice",
                            best.dice),
            f"threshold {best.threshold:.6g} maximises Dice on {len(validation)} validation "
            f"subject(s) ({protocol.threshold_search} search)",
        )
    if isinstance(spec, str) and spec.startswith("val-fpr="):
        rate = float(spec.split("=", 1)[1])
        if pool is None or pool.negatives == 0:
            return None, "no validation voxels: Dice at a threshold not computed"
        value = pool.threshold_at_fpr(rate)
        return (
            ThresholdChoice(value, f"val pool, FPR {rate:g}"),
            f"threshold {value:.6g} gives FPR <= {rate:g} on {len(validation)} validation "
            f"subject(s)",
        )
    raise ValueError(
        f"unknown threshold {spec!r}; use a number, 'val', 'val-fpr=0.05' or 'none'"
    )


def _is_number(text: str) -> bool:
    try:
        float(text)
    except (TypeError, ValueError):
        return False
    return True


def _mean_std(values: list[float]) -> dict[str, float | int]:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    if not v.size:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(v.mean()), "std": float(v.std()), "n": int(v.size)}


def _rank_summary(scores: np.ndarray, labels: np.ndarray) -> dict[str, float | int | None]:
    m = ExactScores(scores, labels).metrics()
    clean = (lambda x: None if not np.isfinite(x) else x)  # noqa: E731 - JSON has no NaN
    return {"ap": clean(m.ap), "auroc": clean(m.auroc), "slices": int(labels.size),
            "positive_slices": int(labels.sum())}


def summarize(
    protocol: Protocol,
    scores: list[SubjectScore],
    threshold: ThresholdChoice | None = None,
    threshold_note: str = "",
) -> dict[str, Any]:
    """The cohort summary: per-volume mean ± std, pooled histogram metrics, slice level.

    ``scores`` are the evaluated subjects (typically the test split); subjects without a
    segmentation contribute negatives to the pooled and slice numbers only.
    """
    rows = [s.row for s in scores if s.row is not None]
    keys = ["ap", "auroc", "best_dice", "fpr_at_best", "dice", "fpr", "tpr", "l1", "l1_healthy",
            "l1_unhealthy", "l1_ratio", "psnr", "ssim", "kld"]
    per_volume = {k: _mean_std([r.get(k) for r in rows]) for k in keys if any(k in r for r in rows)}
    pooled: dict[str, Any] = {}
    if scores:
        hist = scores[0].histogram.copy()
        for s in scores[1:]:
            hist += s.histogram
        m = hist.metrics()
        best = _best(protocol, hist) if m.positives else m.best

        def clean(x):
            return None if x is None or not np.isfinite(x) else float(x)

        pooled = {
            "ap": clean(m.ap),
            "auroc": clean(m.auroc),
            "best_dice": clean(best.dice),
            "best_dice_threshold": clean(best.threshold),
            "voxels": hist.positives + hist.negatives,
            "positive_voxels": hist.positives,
            "histogram": {"bins": hist.bins, "range": [hist.lo, hist.hi],
                          "clipped": hist.clipped},
        }
    slice_level: dict[str, Any] = {}
    labelled = [s for s in scores if s.slice_labels is not None]
    if labelled:
        labels = np.concatenate([s.slice_labels for s in labelled])
        for r in protocol.slice_reductions:
            values = np.concatenate([s.slices[r] for s in labelled])
            slice_level[r] = _rank_summary(values, labels)
    summary = {
        "protocol": protocol.describe(),
        "subjects": len(scores),
        "subjects_with_lesions": len(rows),
        "per_volume": per_volume,
        "pooled": pooled,
        "slice": slice_level,
        "threshold": None if threshold is None else threshold.to_json(),
        "threshold_note": threshold_note,
    }
    summary["headline"] = {key: _lookup(summary, key) for key in protocol.headline}
    return summary


def _lookup(summary: dict[str, Any], key: str) -> Any:
    """``per_volume.ap`` → the mean; ``pooled.ap`` / ``slice.mean.ap`` → the value."""
    section, *rest = key.split(".")
    node: Any = summary.get(section, {})
    for part in rest:
        node = node.get(part, {}) if isinstance(node, dict) else None
    if section == "per_volume" and isinstance(node, dict):
        return node.get("mean")
    return node if not isinstance(node, dict) or node else None
