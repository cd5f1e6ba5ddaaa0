"""Benchmark every method and the classic baselines on one cohort, one protocol, one table.

    python ray_jobs/benchmark.py leaderboard/demo.yaml     # `make benchmark`
    python ray_jobs/benchmark.py leaderboard/smoke.yaml --out /tmp/bench
    ray job submit --address http://HEAD:8265 -- python ray_jobs/benchmark.py my-bench.yaml

Trains what is not trained yet (concurrent Ray Train runs), infers every model with Ray
Data, re-scores the saved maps under the spec's further protocols, and writes
``leaderboard.csv``, ``leaderboard.md`` and ``report.html`` in the spec's ``out``. A re-run
of a finished benchmark does no work; a killed one resumes. Calls ``ray.init()`` without an
address, so it attaches to the cluster under ``ray job submit`` and starts a local Ray
otherwise. ``adsys benchmark`` is the same command.
"""

from __future__ import annotations

import argparse
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    from adsys.benchmark.cli import add_benchmark_arguments, run_from_args

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_benchmark_arguments(p)
    return run_from_args(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
