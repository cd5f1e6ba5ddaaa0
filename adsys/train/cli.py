"""`adsys train` (``ray_jobs/train.py`` is the same command for ``ray job submit``).

The full configuration — the method's included — is resolved and validated before Ray starts,
so a wrong key fails at once, in one line naming the key and the method.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

__all__ = ["add_parser", "add_train_arguments", "config_from_args", "run_from_args"]


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """The training flags (they override the preset and ``--config``)."""
    from adsys.methods import DEFAULT_METHOD, PRESET_NAMES, method_names

    p.add_argument("--preset", choices=PRESET_NAMES,
                   help="start from the method's preset (default: demo when no --config)")
    p.add_argument("--config", type=Path, help="TrainConfig YAML; flags below override it")
    p.add_argument("--method", help=f"one of: {', '.join(method_names())} "
                                    f"(default {DEFAULT_METHOD})")
    p.add_argument("--shards", type=Path, help="shard output folder (has manifest.json)")
    p.add_argument("--num-workers", type=int, help="training ranks (one GPU each on GPUs)")
    p.add_argument("--use-gpu", choices=["auto", "true", "false"])
    p.add_argument("--zero-stage", type=_zero_stage, choices=["auto", 0, 1, 2],
                   help="DeepSpeed ZeRO stage; auto (default): 0 on one worker, 1 on several")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"])
    p.add_argument("--data-workers", help="loader processes per rank, or auto")
    p.add_argument("--max-steps", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--storage-path", type=Path)
    p.add_argument("--name", help="run name (folder under --storage-path)")
    p.add_argument("--max-failures", type=int)
    p.add_argument("--checkpoint-every", type=int)
    p.add_argument("--export", choices=["last", "best_val"],
                   help="export the last EMA weights, or those of the lowest val loss")
    p.add_argument("--folds", help="for a method with folds: train 'all' of them or the "
                   "listed ones (e.g. 0,3,7) as concurrent runs under --name; inference "
                   "takes the folder as their ensemble")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", dest="settings",
                   help="any TrainConfig key, dotted for nested ones, value as YAML "
                        "(e.g. --set method_config.unet.model_channels=64); repeatable")


def _zero_stage(value: str) -> int | str:
    return value if value == "auto" else int(value)


def config_from_args(args: argparse.Namespace, root: Path | None = None):
    """Preset < ``--config`` < flags < ``--set`` → a validated
    :class:`~adsys.train.config.TrainConfig`.

    With the ``demo`` preset and no shards given, the shards are ``root/shards/out/demo``
    (``root``: the checkout the job runs from).
    """
    from adsys.config import deep_merge, dotted_overrides, read_yaml
    from adsys.train.config import resolve_config

    file_config = read_yaml(args.config) if args.config else None
    preset = args.preset or (None if args.config else "demo")
    workers = args.data_workers
    flags = {
        "method": args.method, "shards": args.shards, "num_workers": args.num_workers,
        "use_gpu": args.use_gpu, "zero_stage": args.zero_stage, "precision": args.precision,
        "data_workers": int(workers) if workers and workers.isdigit() else workers,
        "max_steps": args.max_steps, "batch_size": args.batch_size, "lr": args.lr,
        "seed": args.seed, "storage_path": args.storage_path, "name": args.name,
        "max_failures": args.max_failures, "checkpoint_every": args.checkpoint_every,
        "export": args.export,
    }  # fmt: skip
    overrides = deep_merge({k: v for k, v in flags.items() if v is not None},
                           dotted_overrides(args.settings))
    cfg = resolve_config(preset, file_config, overrides, source=args.config)
    given = "shards" in overrides or "shards" in (file_config or {})
    if preset == "demo" and not given and root is not None:
        cfg.shards = root / "shards" / "out" / "demo"  # wherever the job is started from
    return cfg


def _build_demo_shards(root: Path) -> None:
    """The demo preset's data: the demo cohort (if missing), then shards/demo.yaml."""
    from adsys.demo import write_demo_cohort
    from adsys.shards.build import build_shards
    from adsys.shards.spec import load_spec

    cohort = root / "demo" / "data" / "manifest.csv"
    if not cohort.is_file():
        print(f"demo cohort not found at {cohort}: writing it first")
        write_demo_cohort(cohort.parent)
    print("demo shards not found: building them first from shards/demo.yaml")
    build_shards(load_spec(root / "shards" / "demo.yaml"))


def run_from_args(args: argparse.Namespace, root: Path | None = None) -> int:
    """Validate, start (or attach to) Ray, train, print where everything went."""
    from adsys.errors import InputError
    from adsys.train.checkpoint import check_resume

    root = root or Path.cwd()
    folds = None
    try:
        cfg = config_from_args(args, root)
        if args.folds is not None:
            from adsys.train.folds import parse_folds

            folds = parse_folds(args.folds, cfg.method)  # each fold's resume is checked later
        else:
            check_resume(cfg)  # before Ray starts, like the rest of the validation
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    missing = not (Path(cfg.shards) / "manifest.json").is_file()
    demo = Path(cfg.shards) == root / "shards" / "out" / "demo"
    if missing and not (demo and (root / "shards" / "demo.yaml").is_file()):
        print(f"error: no shards at {cfg.shards} (manifest.json missing); build them with "
              "`python ray_jobs/build_shards.py SPEC`", file=sys.stderr)
        return 2
    import ray

    from adsys.methods import method_class
    from adsys.train.job import run_training

    if missing:
        if not ray.is_initialized():
            ray.init()  # no address: attaches under `ray job submit`, else starts a local Ray
        _build_demo_shards(root)
    if not method_class(cfg.method).trainable:  # a baseline: one pass of statistics, no Ray
        from adsys.train.statistics import fit_statistics

        print(f"model:       {fit_statistics(cfg)}  (fitted: {cfg.method} has nothing to "
              "optimise)")
        return 0
    if not ray.is_initialized():
        ray.init()
    fault = os.environ.get("ADSYS_FAULT_STEP")
    fault_step = int(fault) if fault else None
    run_dir = cfg.run_dir
    if folds is not None:
        from adsys.train.folds import run_folds

        try:
            outcome = run_folds(cfg, folds, faults=dict.fromkeys(folds, fault_step)
                                if fault_step is not None else None)
        except InputError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        for k, why in outcome.items():
            print(f"fold {k}:      {run_dir / f'fold-{k}'}  {why or 'finished'}")
        print(f"ensemble:    {run_dir / 'ensemble.json'}  (--model {run_dir})")
        return 0 if all(why is None for why in outcome.values()) else 1
    result = run_training(cfg, fault_step=fault_step)
    print(f"run:         {run_dir}")
    print(f"checkpoint:  {result.checkpoint.path if result.checkpoint else None}")
    print(f"metrics:     {run_dir / 'logs' / 'metrics.jsonl'}")
    print(f"model:       {run_dir / 'export'}")
    return 0 if result.error is None else 1


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``adsys train`` on the top-level subparsers."""
    p = sub.add_parser("train", help="train a method with Ray Train + DeepSpeed over shards")
    add_train_arguments(p)
    p.set_defaults(func=run_from_args)
