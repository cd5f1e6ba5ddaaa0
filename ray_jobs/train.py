"""Train a method with Ray Train + DeepSpeed over streamed shards.

    python ray_jobs/train.py        # the demo preset (builds the demo shards if missing)
    python ray_jobs/train.py --preset smoke --method NAME --max-steps 6
    ray job submit --address http://HEAD:8265 -- python ray_jobs/train.py --config my.yaml \\
        --method NAME --shards shards/out/mycohort --num-workers 8 --use-gpu auto

``--help`` lists the registered methods (``adsys.methods``).

Order of precedence: preset < --config YAML < flags. The whole configuration is validated
before Ray starts. Calls ``ray.init()`` without an address, so it attaches to the cluster under
``ray job submit`` and starts a local Ray otherwise. ``adsys train`` is the same command.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    from adsys.train.cli import add_train_arguments, run_from_args

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_train_arguments(p)
    return run_from_args(p.parse_args(argv), root=REPO)


if __name__ == "__main__":
    sys.exit(main())
