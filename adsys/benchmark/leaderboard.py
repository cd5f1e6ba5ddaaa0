"""The leaderboard of a benchmark: one row per method × group × protocol.

Numbers are **per volume** (each test subject's own AP, AUROC, exact best Dice = the max F1
over its precision–recall curve, Dice and FPR at the validation threshold — the infer job's
``metrics.csv`` rows), reported as mean ± std (numpy, ddof 0) over the subjects with lesions
of the group. With several seeds, a subject's value is its mean over the seeds (subjects
every seed scored) and ``*_seed_std`` is the std over seeds of the per-seed cohort means.

**Paired comparisons** (:func:`paired_wilcoxon`): each method against the best baseline of
the group and protocol (the non-trainable entry with the highest mean AP) and against the
``compare_to`` entry (``ddpm`` by default), on the per-subject AP of the subjects both
scored: scipy's two-sided Wilcoxon signed-rank p-value (``zero_method="wilcox"``; 1.0 when
every difference is 0, empty under 2 subjects). **PR curves**: the pooled voxels of the
group (the first protocol's histograms, every seed). **Overlays**: the best trained method's
post-processed map beside each baseline's on the 3 subjects where its AP and the best
baseline's differ most. **Cost**: training wall seconds and peak memory (rank 0) from each
export's record, inference seconds per subject and the actors' peak memory from each
subject's ``result.json``.

Outputs in ``spec.out``: ``leaderboard.csv``, ``leaderboard.md``, ``report.html`` (with
``pr-<group>.png`` and ``overlays/<subject>.png``).
"""

from __future__ import annotations

import csv
import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from adsys.errors import InputError
from adsys.io.atomic import atomic_path, write_text_atomic
from adsys.metrics.cohort import mean_std

if TYPE_CHECKING:
    from adsys.benchmark.runner import Run
    from adsys.benchmark.spec import BenchmarkSpec

__all__ = ["METRICS", "Leaderboard", "format_rows", "paired_wilcoxon", "write_leaderboard"]

# leaderboard metric → the per-subject metrics.csv column
METRICS = {"ap": "ap", "auroc": "auroc", "best_dice": "best_dice_exact", "dice": "dice",
           "fpr": "fpr"}
ALL = "all"


def paired_wilcoxon(a: list[float], b: list[float]) -> float | None:
    """Two-sided Wilcoxon signed-rank p-value of the paired values ``a`` vs ``b`` (scipy);
    1.0 when they are equal everywhere, ``None`` under 2 pairs."""
    from scipy.stats import wilcoxon

    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.size < 2:
        return None
    if np.all(x == y):
        return 1.0
    return float(wilcoxon(x, y, zero_method="wilcox", alternative="two-sided").pvalue)


@dataclass
class Leaderboard:
    """The rows (dicts, as in ``leaderboard.csv``) and where they were written."""

    rows: list[dict[str, Any]]
    csv: Path
    markdown: Path
    report: Path
    groups: list[str] = field(default_factory=list)


def _float(v: str) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _subject_rows(maps: Path, protocol: str, primary: bool, splits: tuple[str, ...]
                  ) -> dict[str, dict[str, float]]:
    """subject → {column: value} of one run under one protocol (the scored splits)."""
    path = maps / "metrics.csv" if primary else maps / f"eval-{protocol}" / "metrics.csv"
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] in splits]
    return {r["subject_id"]: {c: _float(r.get(c)) for c in METRICS.values()} for r in rows}


def _groups(spec: BenchmarkSpec) -> dict[str, str]:
    """subject → its value of the ``group_by`` column (all subjects: ``all`` without one)."""
    from adsys.io.manifest import load_manifest

    subjects = load_manifest(spec.manifest).subjects
    if spec.group_by is None:
        return {s.subject_id: ALL for s in subjects}
    if not any(spec.group_by in s.meta for s in subjects):
        columns = sorted({k for s in subjects for k in s.meta})
        raise InputError(spec.manifest, f"group_by column {spec.group_by!r} is not in the "
                         f"manifest (metadata columns: {columns})", "name one of them")
    return {s.subject_id: s.meta.get(spec.group_by) or "(empty)" for s in subjects}


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    m = mean_std(values)
    return m["mean"], m["std"]


def _costs(runs: list[Run]) -> dict[str, float | None]:
    """Training seconds (sum over folds, mean over seeds), peak memory; inference seconds
    per subject (model + scoring, in its actor) and the actors' peak memory."""
    train_s, train_mb, infer_s, infer_mb = [], [], [], []
    for run in runs:
        records = [json.loads((p / "config.json").read_text(encoding="utf-8"))
                   for p in run.exports if (p / "config.json").is_file()]
        if records and all("train_seconds" in r for r in records):
            train_s.append(sum(r["train_seconds"] for r in records))
        train_mb += [r["peak_rss_mb"] for r in records if "peak_rss_mb" in r]
        for res in (run.maps / "subjects").glob("*/result.json"):
            rec = json.loads(res.read_text(encoding="utf-8"))
            if "seconds" in rec:
                infer_s.append(rec["seconds"]["model"] + rec["seconds"]["scoring"])
            if "peak_rss_mb" in rec:
                infer_mb.append(rec["peak_rss_mb"])

    def agg(values: list[float], how) -> float | None:
        return round(float(how(values)), 2) if values else None

    return {"train_seconds": agg(train_s, np.mean), "train_peak_rss_mb": agg(train_mb, max),
            "infer_seconds_per_subject": agg(infer_s, np.mean),
            "infer_peak_rss_mb": agg(infer_mb, max)}


def _per_subject(runs: list[Run], protocol: str, primary: bool, splits: tuple[str, ...]
                 ) -> tuple[dict[str, dict[str, float]], list[dict[str, dict[str, float]]]]:
    """(subject → seed-mean values over the subjects every run scored, per-run rows)."""
    per_run = [_subject_rows(r.maps, protocol, primary, splits) for r in runs]
    common = set.intersection(*(set(p) for p in per_run)) if per_run else set()
    mean = {sid: {c: float(np.mean([p[sid][c] for p in per_run])) for c in METRICS.values()}
            for sid in sorted(common)}
    return mean, per_run


def write_leaderboard(
    spec: BenchmarkSpec, runs: list[Run], failed: dict[str, str] | None = None
) -> Leaderboard:
    """Rank the finished ``runs`` of ``spec`` and write the three outputs (module doc)."""
    splits = spec.scored_splits
    groups_of = _groups(spec)
    entries: dict[str, list[Run]] = {}
    for r in runs:
        entries.setdefault(r.entry.label, []).append(r)
    baseline = {label: not rs[0].trainable for label, rs in entries.items()}
    method_of = {label: rs[0].method for label, rs in entries.items()}
    reference = next((label for label, m in method_of.items() if m == spec.compare_to), None)
    costs = {label: _costs(rs) for label, rs in entries.items()}
    scored = {(label, protocol): _per_subject(rs, protocol, i == 0, splits)
              for i, protocol in enumerate(spec.protocols) for label, rs in entries.items()}
    subject_values = {key: mean for key, (mean, _) in scored.items()}
    # the groups of the scored subjects (a group of healthy subjects has no row)
    group_names = [ALL] + sorted({groups_of.get(s, ALL) for mean in subject_values.values()
                                  for s in mean} - {ALL})
    rows: list[dict[str, Any]] = []
    for protocol in spec.protocols:
        for label, rs in entries.items():
            mean, per_run = scored[(label, protocol)]
            for group in group_names:
                members = [s for s in mean if group == ALL or groups_of.get(s) == group]
                row: dict[str, Any] = {
                    "benchmark": spec.name, "group": group, "protocol": protocol,
                    "method": label, "method_name": method_of[label],
                    "baseline": baseline[label], "seeds": len(rs), "subjects": len(members)}
                for key, col in METRICS.items():
                    row[f"{key}_mean"], row[f"{key}_std"] = _mean_std(
                        [mean[s][col] for s in members])
                if len(rs) > 1:
                    seed_means = [_mean_std([p[s]["ap"] for s in members if s in p])[0]
                                  for p in per_run]
                    row["ap_seed_std"] = _mean_std([m for m in seed_means if m is not None])[1]
                rows.append(row | costs[label])
    for group in group_names:
        for protocol in spec.protocols:
            _compare(rows, subject_values, groups_of, group, protocol, reference, spec)
    rows.sort(key=lambda r: (group_names.index(r["group"]), spec.protocols.index(r["protocol"]),
                             -(r["ap_mean"] if r["ap_mean"] is not None else -1)))
    out = spec.out
    csv_path = _write_csv(out / "leaderboard.csv", rows, spec)
    md = format_rows(rows, spec, failed or {})
    write_text_atomic(out / "leaderboard.md", md)
    figures = _pr_curves(out, entries, groups_of, group_names, spec, splits)
    overlays = _overlays(out, entries, subject_values, baseline, spec)
    report = _write_report(out, spec, md, figures, overlays)
    return Leaderboard(rows, csv_path, out / "leaderboard.md", report, group_names)


def _compare(rows, subject_values, groups_of, group, protocol, reference, spec) -> None:
    """Fill each row's paired comparisons against the best baseline and the reference."""
    here = [r for r in rows if r["group"] == group and r["protocol"] == protocol]
    bases = [r for r in here if r["baseline"] and r["ap_mean"] is not None]
    best = max(bases, key=lambda r: r["ap_mean"])["method"] if bases else None
    ref_key = f"p_vs_{spec.compare_to}"

    def values(label: str) -> dict[str, float]:
        return {s: v["ap"] for s, v in subject_values[(label, protocol)].items()
                if (group == ALL or groups_of.get(s) == group) and math.isfinite(v["ap"])}

    for row in here:
        row["best_baseline"] = best
        for other, key in ((best, "p_vs_best_baseline"), (reference, ref_key)):
            row[key] = None
            if other is None or other == row["method"]:
                continue
            a, b = values(row["method"]), values(other)
            common = sorted(set(a) & set(b))
            row[key] = paired_wilcoxon([a[s] for s in common], [b[s] for s in common])
            if key == "p_vs_best_baseline" and common:
                row["ap_minus_best_baseline"] = float(np.mean([a[s] - b[s] for s in common]))


_COLUMNS = ["benchmark", "group", "protocol", "method", "method_name", "baseline", "seeds",
            "subjects"]


def _write_csv(path: Path, rows: list[dict[str, Any]], spec: BenchmarkSpec) -> Path:
    metric_cols = [f"{k}_{s}" for k in METRICS for s in ("mean", "std")] + ["ap_seed_std"]
    rest = ["best_baseline", "ap_minus_best_baseline", "p_vs_best_baseline",
            f"p_vs_{spec.compare_to}", "train_seconds", "train_peak_rss_mb",
            "infer_seconds_per_subject", "infer_peak_rss_mb"]
    cols = _COLUMNS + metric_cols + rest
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=cols, restval="")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if v is None else v) for k, v in r.items() if k in cols})
    return path


def _pm(row: dict[str, Any], key: str) -> str:
    m, s = row.get(f"{key}_mean"), row.get(f"{key}_std")
    return "–" if m is None else f"{m:.3f} ± {s:.3f}"


def _v(v: float | None) -> str:
    return "–" if v is None else f"{v:g}"


def _p(v: float | None) -> str:
    return "–" if v is None else f"{v:.3g}"


def format_rows(rows: list[dict[str, Any]], spec: BenchmarkSpec,
                failed: dict[str, str] | None = None) -> str:
    """The leaderboard as Markdown: one table per group × protocol, best AP first."""
    ref = f"p_vs_{spec.compare_to}"
    lines = [f"# Benchmark `{spec.name}`", "",
             f"Per-volume mean ± std over the test subjects with lesions (splits "
             f"{', '.join(spec.splits)}; threshold `{spec.threshold}` for Dice/FPR); best "
             f"Dice is exact (max F1); p: paired Wilcoxon on per-subject AP.", ""]
    keys = list(dict.fromkeys((r["group"], r["protocol"]) for r in rows))
    for group, protocol in keys:
        lines += [f"## {group} — protocol `{protocol}`", "",
                  "| method | n | AP | AUROC | best Dice | Dice@thr | FPR@thr | "
                  f"p vs best baseline | p vs {spec.compare_to} | train s | infer s/subj | "
                  "peak MiB (train/infer) |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in (r for r in rows if (r["group"], r["protocol"]) == (group, protocol)):
            name = f"{r['method']} (baseline)" if r["baseline"] else r["method"]
            if r["seeds"] > 1:
                name += f" ×{r['seeds']} seeds"
            mem = f"{_v(r.get('train_peak_rss_mb'))} / {_v(r.get('infer_peak_rss_mb'))}"
            lines.append(
                f"| {name} | {r['subjects']} | {_pm(r, 'ap')} | {_pm(r, 'auroc')} | "
                f"{_pm(r, 'best_dice')} | {_pm(r, 'dice')} | {_pm(r, 'fpr')} | "
                f"{_p(r.get('p_vs_best_baseline'))} | {_p(r.get(ref))} | "
                f"{_v(r.get('train_seconds'))} | {_v(r.get('infer_seconds_per_subject'))} | "
                f"{mem} |")
        lines.append("")
    for name, why in sorted((failed or {}).items()):
        lines.append(f"- **{name} failed**: {why}")
    return "\n".join(lines).rstrip() + "\n"


def _pr_curves(out: Path, entries, groups_of, group_names, spec, splits) -> list[Path]:
    """One PR plot per group: every entry's pooled curve under the first protocol."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from adsys.infer.outputs import load_result, load_score

    hists: dict[str, dict[str, Any]] = {}  # entry → subject → its pooled histograms (seeds)
    for label, rs in entries.items():
        hists[label] = {}
        for r in rs:
            for sub in sorted((r.maps / "subjects").glob("*")):
                res = load_result(r.maps, sub.name)
                if res is None or res["split"] not in splits or not res.get("has_seg"):
                    continue
                h, prev = load_score(r.maps, sub.name).histogram, hists[label].get(sub.name)
                hists[label][sub.name] = h if prev is None else prev + h
    paths = []
    for group in group_names:
        fig, ax = plt.subplots(figsize=(5, 4.2), dpi=100)
        for label, rs in entries.items():
            members = [h for sid, h in hists[label].items()
                       if group == ALL or groups_of.get(sid) == group]
            if not members:
                continue
            hist = sum(members[1:], members[0].copy())
            precision, recall = hist.pr_curve()
            ax.plot(recall, precision, lw=1.2, ls="--" if not rs[0].trainable else "-",
                    label=f"{label} (AP {hist.metrics().ap:.3f})")
        ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02),
               title=f"{group} — {spec.protocols[0]} (pooled voxels)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out / f"pr-{group}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
        plt.close(fig)
        paths.append(path)
    return paths


def _overlays(out: Path, entries, subject_values, baseline, spec) -> list[Path]:
    """The best trained method's map beside the baselines' on the 3 most-disagreeing
    subjects (group all, first protocol); none without both kinds of entries."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from adsys.infer.outputs import MAP_PP, subject_dir
    from adsys.infer.report import pick_slice
    from adsys.io.nifti import load_volume

    protocol = spec.protocols[0]

    def ap(label: str) -> dict[str, float]:
        return {s: v["ap"] for s, v in subject_values[(label, protocol)].items()
                if math.isfinite(v["ap"])}

    trained = [m for m in entries if not baseline[m] and ap(m)]
    bases = [m for m in entries if baseline[m] and ap(m)]
    if not trained or not bases:
        return []
    best = max(trained, key=lambda m: np.mean(list(ap(m).values())))
    best_base = max(bases, key=lambda m: np.mean(list(ap(m).values())))
    common = sorted(set(ap(best)) & set(ap(best_base)))
    worst = sorted(common, key=lambda s: -abs(ap(best)[s] - ap(best_base)[s]))[:3]
    (out / "overlays").mkdir(exist_ok=True)
    paths = []
    for sid in worst:
        folder = subject_dir(entries[best][0].maps, sid)
        image = load_volume(folder / "image.nii.gz").data
        seg = load_volume(folder / "seg.nii.gz").data > 0
        z = pick_slice(image, seg, image > 0)
        panels = [("input", image[..., z], None)]
        for label in [best, *bases]:
            pp = load_volume(subject_dir(entries[label][0].maps, sid) / MAP_PP).data[..., z]
            panels.append((f"{label}\nAP {ap(label).get(sid, float('nan')):.3f}", pp, label))
        fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 3.2), dpi=100)
        for ax, (title, data, label) in zip(axes, panels, strict=True):
            vmax = float(np.percentile(data, 99.5)) or 1.0
            ax.imshow(data.T, origin="lower", cmap="gray" if label is None else "inferno",
                      vmin=0, vmax=1 if label is None else vmax, interpolation="nearest")
            if seg[..., z].any():
                ax.contour(seg[..., z].T.astype(float), levels=[0.5], colors="cyan",
                           linewidths=0.7)
            ax.set_title(title, fontsize=8)
            ax.axis("off")
        fig.suptitle(f"{sid} (axial z={z}, {protocol})", fontsize=9)
        fig.tight_layout()
        path = out / "overlays" / f"{sid}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
        plt.close(fig)
        paths.append(path)
    return paths


def _write_report(out: Path, spec: BenchmarkSpec, md: str, figures: list[Path],
                  overlays: list[Path]) -> Path:
    """``report.html``: the leaderboard section (tables, PR curves, overlays)."""
    esc = html.escape
    blocks, table = [], []
    for line in md.splitlines():
        if line.startswith("|"):
            if set(line) <= {"|", "-"}:
                continue
            cells = [c.strip() for c in line.strip("|").split("|")]
            tag = "th" if not table else "td"
            table.append("<tr>" + "".join(f"<{tag}>{esc(c)}</{tag}>" for c in cells) + "</tr>")
            continue
        if table:
            blocks.append("<table>" + "".join(table) + "</table>")
            table = []
        if line.startswith("## "):
            blocks.append(f"<h3>{esc(line[3:])}</h3>")
        elif line.startswith("# "):
            continue
        elif line.strip():
            blocks.append(f"<p>{esc(line)}</p>")
    if table:
        blocks.append("<table>" + "".join(table) + "</table>")
    pr = "".join(f'<img src="{esc(p.name)}" alt="{esc(p.stem)}">' for p in figures)
    ov = "".join(f'<p><img src="overlays/{esc(p.name)}" alt="{esc(p.stem)}"></p>'
                 for p in overlays)
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>adsys benchmark {esc(spec.name)}</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:2px 8px;text-align:left}}
table{{border-collapse:collapse;margin-bottom:1em}}tr:nth-child(even){{background:#f4f4f4}}
img{{max-width:100%}}</style></head><body>
<h1>adsys benchmark <code>{esc(spec.name)}</code></h1>
<p>shards: {esc(str(spec.shards))}<br>manifest: {esc(str(spec.manifest))}<br>
protocols: {esc(", ".join(spec.protocols))}</p>
<section id="leaderboard"><h2>Leaderboard</h2>{"".join(blocks)}
<p>Also as <a href="leaderboard.csv">leaderboard.csv</a> and
<a href="leaderboard.md">leaderboard.md</a>; each method's maps and report under
<code>infer/</code>.</p>
<h2>Precision–recall ({esc(spec.protocols[0])}, pooled voxels)</h2>{pr}
<h2>Where the best method and the baselines disagree most</h2>{ov or "<p>–</p>"}
</section></body></html>
"""
    path = out / "report.html"
    write_text_atomic(path, page)
    return path
