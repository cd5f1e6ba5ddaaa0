"""Per-subject scoring under a protocol (:mod:`adsys.metrics.protocols`): the map
post-processed, the protocol's voxels and slices selected, its best-Dice rule applied, and
the subject's share of the cohort numbers (:class:`SubjectScore`).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from adsys.metrics.histogram import ScoreHistogram
from adsys.metrics.protocols import Protocol
from adsys.metrics.ranking import BestDice, ExactScores, dice_from_counts
from adsys.metrics.reconstruction import reconstruction_metrics
from adsys.metrics.segmentation import metrics_at_threshold
from adsys.metrics.slices import slice_labels, slice_scores
from adsys.metrics.threshold import interval_search
from adsys.scoring.postprocess import postprocess

__all__ = ["SubjectScore", "score_subject"]


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
            "best_dice_exact": rank.best.dice,  # the exact max-F1, whatever the protocol's rule
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
