"""Batch inference with Ray Data: exported model(s) + cohort → anomaly maps, metrics, report.

    python ray_jobs/infer.py          # the demo: runs/demo/export on the demo shards' val+test
    python ray_jobs/infer.py --model runs/x/export --cohort shards/out/mycohort --out runs/x/infer
    python ray_jobs/infer.py --model runs/x/export --cohort raw/manifest.csv --splits test \\
        --protocol upd --threshold none
    ray job submit --address http://HEAD:8265 -- python ray_jobs/infer.py --config infer.yaml \\
        --num-workers 8 --use-gpu auto

Order of precedence: --config YAML < flags (see ``adsys.infer.config.InferConfig``). Calls
``ray.init()`` without an address, so it attaches to the cluster under ``ray job submit`` and
starts a local Ray otherwise. Prints the protocol's metrics table and the report's path.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMO = {
    "models": [REPO / "runs" / "demo" / "export"],
    "cohort": REPO / "shards" / "out" / "demo",
    "out": REPO / "runs" / "demo" / "infer",
}


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from adsys.errors import AdsysError
    from adsys.infer.cli import add_infer_arguments, run_from_args

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_infer_arguments(parser)
    args = parser.parse_args(argv)
    if args.config is None:  # the demo unless told otherwise
        if args.cohort is None:  # the demo's val subjects are healthy: a 5 %-FPR threshold
            args.cohort, args.threshold = DEMO["cohort"], args.threshold or "val-fpr=0.05"
        args.models = args.models or DEMO["models"]
        args.out = args.out or DEMO["out"]
    try:
        return run_from_args(args)
    except AdsysError as exc:
        print(f"infer: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
