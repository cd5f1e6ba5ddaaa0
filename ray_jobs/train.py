"""Train a method with Ray Train + DeepSpeed over streamed shards.

    python ray_jobs/train.py        # the demo preset (builds the demo shards if missing)
    python ray_jobs/train.py --preset smoke --max-steps 6
    ray job submit --address http://HEAD:8265 -- python ray_jobs/train.py --config my.yaml \\
        --method cddpm --shards shards/out/mycohort --num-workers 8 --use-gpu auto

Order of precedence: preset < --config YAML < flags. Calls ``ray.init()`` without an address,
so it attaches to the cluster under ``ray job submit`` and starts a local Ray otherwise.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import yaml


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--preset",
        choices=["smoke", "demo"],
        help="start from a preset (default: demo when no --config)",
    )
    p.add_argument("--config", type=Path, help="TrainConfig YAML")
    p.add_argument("--method", help="ddpm | cddpm")
    p.add_argument("--shards", type=Path, help="shard output folder (has manifest.json)")
    p.add_argument("--num-workers", type=int)
    p.add_argument("--use-gpu", choices=["auto", "true", "false"])
    p.add_argument("--zero-stage", type=int, choices=[0, 1, 2])
    p.add_argument("--max-steps", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--storage-path", type=Path)
    p.add_argument("--name", help="run name (folder under --storage-path)")
    p.add_argument("--max-failures", type=int)
    p.add_argument("--checkpoint-every", type=int)
    return p.parse_args(argv)


REPO = Path(__file__).resolve().parents[1]


def build_demo_shards() -> None:
    """The demo preset's data: the demo cohort (if missing), then shards/demo.yaml."""
    from adsys.demo import write_demo_cohort
    from adsys.shards.build import build_shards
    from adsys.shards.spec import load_spec

    cohort = REPO / "demo" / "data" / "manifest.csv"
    if not cohort.is_file():
        print(f"demo cohort not found at {cohort}: writing it first")
        write_demo_cohort(cohort.parent)
    print("demo shards not found: building them first from shards/demo.yaml")
    build_shards(load_spec(REPO / "shards" / "demo.yaml"))


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    from adsys.train.job import resolve_config, run_training

    file_config = yaml.safe_load(args.config.read_text()) if args.config else None
    preset = args.preset or (None if args.config else "demo")
    flags = {
        "method": args.method,
        "shards": args.shards,
        "num_workers": args.num_workers,
        "use_gpu": args.use_gpu,
        "zero_stage": args.zero_stage,
        "max_steps": args.max_steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
        "storage_path": args.storage_path,
        "name": args.name,
        "max_failures": args.max_failures,
        "checkpoint_every": args.checkpoint_every,
    }
    cfg = resolve_config(preset, file_config, {k: v for k, v in flags.items() if v is not None})
    if preset == "demo" and args.shards is None and not (file_config or {}).get("shards"):
        cfg.shards = REPO / "shards" / "out" / "demo"  # wherever the job is started from
    import ray

    ray.init()  # no address: attaches under `ray job submit`, else starts a local Ray
    if not (Path(cfg.shards) / "manifest.json").is_file():
        if cfg.shards != REPO / "shards" / "out" / "demo":
            print(
                f"error: no shards at {cfg.shards} (manifest.json missing); build them with "
                "`python ray_jobs/build_shards.py SPEC`",
                file=sys.stderr,
            )
            return 2
        build_demo_shards()
    fault = os.environ.get("ADSYS_FAULT_STEP")
    result = run_training(cfg, fault_step=int(fault) if fault else None)
    run_dir = Path(cfg.storage_path).resolve() / cfg.name
    print(f"run:         {run_dir}")
    print(f"checkpoint:  {result.checkpoint.path if result.checkpoint else None}")
    print(f"metrics:     {run_dir / 'logs' / 'metrics.jsonl'}")
    print(f"model:       {run_dir / 'export'}")
    return 0 if result.error is None else 1


if __name__ == "__main__":
    sys.exit(main())
