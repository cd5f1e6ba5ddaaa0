"""Segmentation and reconstruction metrics, exact and mergeable histogram forms, protocols.

* :mod:`~adsys.metrics.ranking` — exact AP, AUROC, best Dice (sorting-based, vectorised);
* :mod:`~adsys.metrics.histogram` — :class:`ScoreHistogram`, the mergeable pooled form;
* :mod:`~adsys.metrics.threshold` — validation thresholds (exact max-F1, cDDPM interval);
* :mod:`~adsys.metrics.segmentation` — Dice / FPR at a threshold after component filtering;
* :mod:`~adsys.metrics.slices` — slice-level scores and labels;
* :mod:`~adsys.metrics.reconstruction` — SSIM, PSNR, L1 split, cDDPM's histogram KLD;
* :mod:`~adsys.metrics.protocols` — the papers' protocols by name;
* :mod:`~adsys.metrics.subject` — one subject's share of the numbers under a protocol;
* :mod:`~adsys.metrics.cohort` — the cohort threshold and summary under a protocol.
"""

from adsys.metrics.cohort import ThresholdChoice, choose_cohort_threshold, summarize
from adsys.metrics.histogram import ScoreHistogram
from adsys.metrics.protocols import PROTOCOLS, Protocol, get_protocol
from adsys.metrics.ranking import (
    BestDice,
    ExactScores,
    RankMetrics,
    average_precision,
    best_dice,
    roc_auc,
)
from adsys.metrics.reconstruction import histogram_kld, reconstruction_metrics
from adsys.metrics.segmentation import dice_score, metrics_at_threshold
from adsys.metrics.slices import slice_labels, slice_scores
from adsys.metrics.subject import SubjectScore, score_subject
from adsys.metrics.threshold import choose_threshold, interval_search

__all__ = [
    "PROTOCOLS",
    "BestDice",
    "ExactScores",
    "Protocol",
    "RankMetrics",
    "ScoreHistogram",
    "SubjectScore",
    "ThresholdChoice",
    "average_precision",
    "best_dice",
    "choose_cohort_threshold",
    "choose_threshold",
    "dice_score",
    "get_protocol",
    "histogram_kld",
    "interval_search",
    "metrics_at_threshold",
    "reconstruction_metrics",
    "roc_auc",
    "score_subject",
    "slice_labels",
    "slice_scores",
    "summarize",
]
