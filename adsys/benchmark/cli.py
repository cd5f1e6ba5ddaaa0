"""`adsys benchmark SPEC` (``ray_jobs/benchmark.py`` is the same command for
``ray job submit``): train what is missing, infer, re-score, print the leaderboard."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_benchmark_arguments", "add_parser", "floor_lines", "run_from_args"]


def add_benchmark_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", type=Path, help="benchmark spec YAML (leaderboard/*.yaml)")
    p.add_argument("--out", type=Path, help="output folder (default: the spec's out)")
    p.add_argument("--add", action="append", default=[], metavar="NAME=PATH",
                   help="one more entry: an export / ensemble folder or an inference output "
                        "folder made elsewhere (repeatable)")


def _added(items: list[str]) -> list[dict[str, Any]]:
    from adsys.errors import InputError

    out = []
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise InputError(None, f"--add {item!r} is not NAME=PATH", "e.g. --add "
                             "mine=runs/mine/export")
        key = "maps" if (Path(path) / "run.json").is_file() else "model"
        out.append({"name": name, key: Path(path).resolve()})
    return out


def floor_lines(rows: list[dict[str, Any]], group: str, protocol: str) -> list[str]:
    """One line per trained method of ``group`` × ``protocol``: its AP beside the best
    baseline's, and whether the paired test says the difference is one."""
    here = [r for r in rows if r["group"] == group and r["protocol"] == protocol]
    lines = []
    for r in (r for r in here if not r["baseline"]):
        base = next((b for b in here if b["method"] == r.get("best_baseline")), None)
        if base is None or r["ap_mean"] is None or base["ap_mean"] is None:
            continue
        p = r.get("p_vs_best_baseline")
        verdict = "beats" if r["ap_mean"] > base["ap_mean"] else "does NOT beat"
        sig = ("difference not significant" if p is None or p >= 0.05 else
               "difference significant") + ("" if p is None else f", Wilcoxon p={p:.3g}")
        lines.append(f"{r['method']}: AP {r['ap_mean']:.4f} ± {r['ap_std']:.4f} "
                     f"{verdict} the best baseline {base['method']}: AP "
                     f"{base['ap_mean']:.4f} ± {base['ap_std']:.4f} ({sig}; n={r['subjects']}, "
                     f"protocol {protocol})")
    return lines


def run_from_args(args: argparse.Namespace) -> int:
    """Validate the spec, start (or attach to) Ray, run, print the leaderboard."""
    from adsys.benchmark.leaderboard import ALL
    from adsys.benchmark.runner import plan_runs, run_benchmark
    from adsys.benchmark.spec import BenchmarkSpec, load_benchmark_spec
    from adsys.errors import InputError

    try:
        spec = load_benchmark_spec(args.spec)
        data = spec.model_dump()
        data["methods"] += _added(args.add)
        if args.out is not None:
            data["out"] = args.out.resolve()
        spec = BenchmarkSpec.model_validate(data)
        plan_runs(spec)  # every entry's training config is validated before Ray starts
    except (InputError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    import ray

    if not ray.is_initialized():
        ray.init()  # no address: attaches under `ray job submit`, else starts a local Ray
    result = run_benchmark(spec)
    board = result.leaderboard
    print(board.markdown.read_text(encoding="utf-8"))
    for line in floor_lines(board.rows, ALL, board.rows[0]["protocol"] if board.rows else ""):
        print(line)
    print(f"leaderboard: {board.csv}  {board.markdown}")
    print(f"report:      {board.report}")
    print(f"this call:   trained {len(result.trained)}, inferred "
          f"{sum(result.inferred.values())} subject(s), re-scored {len(result.rescored)}, "
          f"{result.seconds:.0f} s")
    return 1 if result.failed else 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``adsys benchmark`` on the top-level subparsers."""
    p = sub.add_parser("benchmark", help="every method and the baselines on one cohort: "
                                         "train, infer, re-score, leaderboard")
    add_benchmark_arguments(p)
    p.set_defaults(func=run_from_args)
