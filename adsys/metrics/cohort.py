"""Cohort numbers under a protocol (:mod:`adsys.metrics.protocols`) from the subjects'
:class:`~adsys.metrics.subject.SubjectScore`: the threshold for Dice at a threshold
(:func:`choose_cohort_threshold`) and the summary (:func:`summarize`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from adsys.metrics.protocols import Protocol
from adsys.metrics.ranking import ExactScores
from adsys.metrics.subject import SubjectScore, _best
from adsys.metrics.threshold import choose_threshold

__all__ = ["ThresholdChoice", "choose_cohort_threshold", "mean_std", "summarize"]


@dataclass(frozen=True)
class ThresholdChoice:
    """The cohort threshold for Dice at a threshold, and where it came from."""

    value: float
    source: str
    validation_dice: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {"value": self.value, "source": self.source,
                "validation_dice": self.validation_dice}


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


def mean_std(values: list[float | None]) -> dict[str, float | int | None]:
    """Mean and std (numpy, ddof 0) of the finite values, and their count."""
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
    keys = ["ap", "auroc", "best_dice", "best_dice_exact", "fpr_at_best", "dice", "fpr", "tpr",
            "l1", "l1_healthy", "l1_unhealthy", "l1_ratio", "psnr", "ssim", "kld"]
    per_volume = {k: mean_std([r.get(k) for r in rows]) for k in keys if any(k in r for r in rows)}
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
