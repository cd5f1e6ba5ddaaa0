"""Ray job: cohort spec -> preprocessed volumes + pseudo-pathology variants -> shards.

    python ray_jobs/build_shards.py shards/demo.yaml [--address ADDR] [--overwrite]
    ray job submit --address http://HEAD:8265 -- python ray_jobs/build_shards.py SPEC

``ray.init()`` gets no address unless ``--address`` is given, so the same command runs on a
laptop (a local Ray) or inside ``ray job submit`` (it attaches to the cluster). Re-running
resumes; the exit status is 1 when more subjects failed than the spec's ``max_failures``,
2 for an unusable spec or output folder.
"""

from __future__ import annotations

import argparse
import logging
import sys

from adsys.errors import AdsysError
from adsys.shards.cli import add_build_arguments, run_build


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_build_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return run_build(args)
    except AdsysError as exc:
        print(f"build_shards: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
