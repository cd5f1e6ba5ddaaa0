"""Set-up shared by the benchmarks: a local Ray, demo shards in a scratch folder, the header's
machine line.

Run as scripts (``python bench/bench_x.py``), the benchmarks import this module from their own
folder (``sys.path[0]``); it is not a benchmark itself (``make bench`` runs ``bench_*.py``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import ray
import torch

from adsys.demo import write_demo_cohort
from adsys.shards.build import build_shards
from adsys.shards.spec import load_spec

REPO = Path(__file__).resolve().parents[1]


def start_ray() -> float:
    """Start a local Ray with all this machine's CPUs; returns the seconds it took.

    A loaded shared machine can stall the raylet past Ray's node health check (by default 5
    missed checks, 10 s each): Ray then declares the node dead and the run is lost. The
    benchmarks' Ray tolerates 60 missed checks of 30 s; what they measure is unchanged.
    """
    os.environ.setdefault("RAY_health_check_failure_threshold", "60")
    os.environ.setdefault("RAY_health_check_timeout_ms", "30000")
    start = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    return time.perf_counter() - start


def demo_shards(
    folder: Path,
    spec: str = "smoke",
    *,
    n_train: int = 3,
    n_val: int = 1,
    n_test: int = 0,
    overrides: dict[str, Any] | None = None,
) -> Path:
    """Write a demo cohort of ``n_*`` subjects into ``folder/cohort`` and build it with the
    repository's ``shards/<spec>.yaml`` (``overrides``: top-level spec keys) into
    ``folder/shards``; returns the build's output folder. Ray must be initialised."""
    manifest = write_demo_cohort(
        folder / "cohort", n_train=n_train, n_val=n_val, n_test=n_test, progress=False
    )
    shard_spec = load_spec(
        REPO / "shards" / f"{spec}.yaml",
        {"manifest": manifest, "out": folder / "shards", **(overrides or {})},
    )
    return build_shards(shard_spec, progress=False).out


def machine_line() -> str:
    """CPUs, torch threads and the load average now: timings on a shared machine are only
    comparable within one run, and the load says how contended that run was."""
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"{os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} "
            f"threads in this process), load average {load} (1/5/15 min)")
