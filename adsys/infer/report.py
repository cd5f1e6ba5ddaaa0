"""What a person looks at after a run: PNG overlays, an HTML report, a metrics table."""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

import numpy as np

from adsys.io.atomic import atomic_path, write_text_atomic

__all__ = ["format_table", "pick_slice", "save_overlay", "write_report"]


def pick_slice(pp_map: np.ndarray, seg: np.ndarray | None, mask: np.ndarray) -> int:
    """The axial slice with the most lesion voxels, else the one with most map in the brain."""
    if seg is not None and np.any(seg):
        return int(np.argmax((np.asarray(seg) > 0).sum(axis=(0, 1))))
    return int(np.argmax((pp_map * (np.asarray(mask) > 0)).sum(axis=(0, 1))))


def save_overlay(
    path: Path,
    image: np.ndarray,
    reconstruction: np.ndarray | None,
    pp_map: np.ndarray,
    seg: np.ndarray | None,
    mask: np.ndarray,
    *,
    title: str = "",
) -> Path:
    """Input | reconstruction (when there is one) | anomaly map of one axial slice, GT
    contour in red; atomic.

    Volumes are (x, y, z) RAS+; the slice is shown with x to the right and y up.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    z = pick_slice(pp_map, seg, mask)
    vmax = float(np.percentile(pp_map[..., z], 99.5)) or 1.0
    panels = [("input", image[..., z], "gray", 0.0, 1.0)]
    if reconstruction is not None:
        panels.append(("reconstruction", reconstruction[..., z], "gray", 0.0, 1.0))
    panels.append(("anomaly map", pp_map[..., z], "inferno", 0.0, vmax))
    fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3.4), dpi=100)
    for ax, (name, data, cmap, lo, hi) in zip(axes, panels, strict=True):
        ax.imshow(data.T, origin="lower", cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest")
        if seg is not None and np.any(seg[..., z]):
            ax.contour((seg[..., z] > 0).T.astype(float), levels=[0.5], colors="red",
                       linewidths=0.8)
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    fig.suptitle(f"{title}  (axial slice z={z})", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
        plt.close(fig)
    return path


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


def _headline_rows(summary: dict[str, Any]) -> list[tuple[str, str]]:
    rows = []
    for key, value in summary.get("headline", {}).items():
        if key.startswith("per_volume."):
            stats = summary["per_volume"].get(key.split(".", 1)[1]) or {}
            text = (f"{_fmt(stats.get('mean'))} ± {_fmt(stats.get('std'))} (n={stats.get('n')})"
                    if stats.get("n") else "–")
        else:
            text = _fmt(value)
        rows.append((key, text))
    return rows


def format_table(summary: dict[str, Any]) -> str:
    """A plain-text table of the protocol's headline numbers and the other per-volume means."""
    proto = summary["protocol"]["name"]
    lines = [f"protocol: {proto} — {summary['protocol']['description']}",
             f"subjects: {summary['subjects']} ({summary['subjects_with_lesions']} with lesions)"]
    rows = [(f"{proto}: {k}", v) for k, v in _headline_rows(summary)]
    shown = {k.split(".", 1)[1] for k in summary.get("headline", {}) if k.startswith("per_vol")}
    for name, stats in summary.get("per_volume", {}).items():
        if name not in shown and stats.get("n"):
            rows.append((f"{proto}: per_volume.{name}",
                         f"{_fmt(stats['mean'])} ± {_fmt(stats['std'])} (n={stats['n']})"))
    for name, value in summary.get("pooled", {}).items():
        if name in ("ap", "auroc", "best_dice") and f"pooled.{name}" not in summary["headline"]:
            rows.append((f"{proto}: pooled.{name}", _fmt(value)))
    width = max(len(r[0]) for r in rows) if rows else 10
    lines += [f"  {k:<{width}}  {v}" for k, v in rows]
    if summary.get("threshold_note"):
        lines.append(f"threshold: {summary['threshold_note']}")
    return "\n".join(lines)


def write_report(
    out: Path, summary: dict[str, Any], subjects: list[dict[str, Any]], run: dict[str, Any]
) -> Path:
    """``OUT/report.html``: the headline table, the protocol, and one card per subject
    (metrics, overlay, links to its NIfTI maps). ``subjects`` are result.json records."""
    esc = html.escape
    head = "".join(f"<tr><td>{esc(k)}</td><td>{esc(v)}</td></tr>"
                   for k, v in _headline_rows(summary))
    metric_keys = ["ap", "auroc", "best_dice", "dice", "fpr", "l1_ratio", "ssim", "psnr"]
    cards = []
    for res in subjects:
        sid = res["subject_id"]
        base = f"subjects/{esc(sid)}"
        row = res.get("row") or {}
        cells = "".join(f"<td>{esc(k)}={esc(_fmt(row.get(k)))}</td>" for k in metric_keys
                        if k in row)
        links = " · ".join(
            f'<a href="{base}/{esc(f)}">{esc(f)}</a>' for f in res.get("files", [])
            if f.endswith(".nii.gz")
        )
        img = (f'<img src="{base}/overlay.png" alt="overlay {esc(sid)}">'
               if "overlay.png" in res.get("files", []) else "")
        cards.append(
            f"<div class='card'><h3>{esc(sid)} <small>({esc(res['split'])})</small></h3>"
            f"<table><tr>{cells}</tr></table>{img}<p class='links'>{links}</p></div>"
        )
    proto = summary["protocol"]
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>adsys inference report</title>
<style>body{{font-family:sans-serif;margin:2em}}td{{padding:2px 8px}}
.card{{border:1px solid #ccc;margin:1em 0;padding:0.5em}}img{{max-width:100%}}
.links{{font-size:small}}</style></head><body>
<h1>adsys inference report</h1>
<p>models: {esc(", ".join(str(m) for m in run.get("models", [])))}<br>
cohort: {esc(str(run.get("cohort", "")))}<br>
protocol: <b>{esc(proto["name"])}</b> — {esc(proto["description"])}
({esc(proto["reference"])})</p>
<h2>Headline ({esc(proto["name"])} protocol)</h2><table>{head}</table>
<p>{esc(summary.get("threshold_note", ""))}</p>
<p>Full numbers: <a href="summary.json">summary.json</a>,
per subject: <a href="metrics.csv">metrics.csv</a>.</p>
<h2>Subjects</h2>{"".join(cards)}
</body></html>
"""
    path = Path(out) / "report.html"
    write_text_atomic(path, page)
    return path
