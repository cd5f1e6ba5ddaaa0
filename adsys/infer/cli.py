"""`adsys infer` and `adsys evaluate` subcommands (``ray_jobs/infer.py`` shares the former)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

# the names are adsys.metrics.protocols.PROTOCOLS' keys (not imported: the CLI starts fast);
# not listed in full, as stages never spell a method's name and one protocol shares one
PROTOCOL_HELP = "an evaluation protocol of adsys.metrics.protocols (e.g. behrendt, upd)"

__all__ = ["add_infer_arguments", "add_parser", "config_from_args", "run_from_args"]


def add_infer_arguments(p: argparse.ArgumentParser) -> None:
    """The inference flags (they override ``--config``; see :class:`InferConfig`)."""
    p.add_argument("--config", type=Path, help="InferConfig YAML; flags below override it")
    p.add_argument("--model", type=Path, action="append", dest="models",
                   help="exported model folder (repeat for an ensemble)")
    p.add_argument("--cohort", type=Path,
                   help="cohort store (shard build folder / cohort.zarr) or manifest CSV")
    p.add_argument("--out", type=Path, help="output folder")
    p.add_argument("--splits", nargs="+", help="splits to run (default: val test)")
    p.add_argument("--protocol", help=f"{PROTOCOL_HELP}; default: the models' recipe")
    p.add_argument("--threshold", help="val | val-fpr=0.05 | a number | none (default val)")
    p.add_argument("--map", dest="map_kind", choices=["l1", "ssim", "shift", "method"],
                   help="anomaly map (default: the models' recipe)")
    p.add_argument("--ssim-data-range", type=float, help="255 reproduces the UPD benchmark")
    p.add_argument("--roi", type=int, nargs="+", help="window size (default: whole slice)")
    p.add_argument("--overlap", type=float)
    p.add_argument("--overlap-mode", choices=["monai", "step", "spread"])
    p.add_argument("--blend", choices=["gaussian", "constant"])
    p.add_argument("--sw-batch-size", type=int)
    p.add_argument("--foreground-weight", action="store_true", default=None)
    p.add_argument("--t-values", type=int, nargs="+",
                   help="diffusion steps (0-based) the restoration uses (default: the recipe)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", dest="settings",
                   help="any InferConfig key, dotted for nested ones, value as YAML (e.g. "
                        "--set inference.window.overlap=0.5); repeatable")
    p.add_argument("--seed", type=int)
    p.add_argument("--num-workers", type=int, help="actors (one GPU each on GPU clusters)")
    p.add_argument("--cpus-per-worker", type=int)
    p.add_argument("--use-gpu", choices=["auto", "true", "false"])
    p.add_argument("--batch-size", type=int, help="subjects per actor call")
    p.add_argument("--no-native", dest="native", action="store_false", default=None,
                   help="skip the native-space maps")
    p.add_argument("--zarr", action="store_true", default=None, help="also write maps.zarr")
    p.add_argument("--inputs", choices=["images", "variants"],
                   help="variants: evaluate on the store's synthetic pairs (each variant an "
                        "input, its lesion the ground truth)")
    p.add_argument("--mask", choices=["brain", "healthy"],
                   help="post-processing mask: the store's brain mask (default) or, with "
                        "--inputs variants, the clean image > 0.01 (the fluid paper's code)")
    p.add_argument("--no-overlays", dest="overlays", action="store_false", default=None)


def config_from_args(args: argparse.Namespace):
    """YAML (``--config``) < flags < ``--set`` → :class:`~adsys.infer.config.InferConfig`."""
    from pydantic import ValidationError

    from adsys.config import deep_merge, dotted_overrides, error_line, read_yaml
    from adsys.errors import InputError
    from adsys.infer.config import InferConfig

    base = read_yaml(args.config) if args.config else {}
    flags = {
        "models": args.models, "cohort": args.cohort, "out": args.out,
        "splits": tuple(args.splits) if args.splits else None,
        "threshold": args.threshold, "seed": args.seed, "num_workers": args.num_workers,
        "cpus_per_worker": args.cpus_per_worker, "use_gpu": args.use_gpu,
        "batch_size": args.batch_size, "native": args.native, "zarr": args.zarr,
        "overlays": args.overlays, "inputs": args.inputs, "mask": args.mask,
    }
    recipe = {
        "protocol": args.protocol,
        "t_values": tuple(args.t_values) if args.t_values else None,
        "map": {"kind": args.map_kind, "ssim_data_range": args.ssim_data_range},
        "window": {"roi": tuple(args.roi) if args.roi else None, "overlap": args.overlap,
                   "overlap_mode": args.overlap_mode, "mode": args.blend,
                   "sw_batch_size": args.sw_batch_size,
                   "foreground_weight": args.foreground_weight},
    }
    merged = deep_merge(base, _given(flags), {"inference": _given(recipe)},
                        dotted_overrides(args.settings))
    try:
        return InferConfig.model_validate(merged)
    except ValidationError as exc:
        raise InputError(args.config, f"invalid inference settings: {error_line(exc)}",
                         "pass --model and --cohort (or set them in --config)") from None


def _given(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` without the unset (``None``) entries, nested mappings included."""
    out = {}
    for k, v in values.items():
        v = _given(v) if isinstance(v, dict) else v
        if v is not None and v != {}:
            out[k] = v
    return out


def run_from_args(args: argparse.Namespace) -> int:
    """Start (or attach to) Ray, run inference, print the metrics table and the report."""
    import ray

    from adsys.infer.job import run_inference
    from adsys.infer.report import format_table

    config = config_from_args(args)
    if not ray.is_initialized():
        ray.init()  # no address: attaches under `ray job submit`, else starts a local Ray
    result = run_inference(config)
    print(format_table(result.summary))
    print(f"subjects: {len(result.processed)} computed, {len(result.skipped)} already done, "
          f"{len(result.failed)} failed ({result.seconds:.1f} s)")
    for sid, reason in sorted(result.failed.items()):
        print(f"  FAILED {sid}: {reason}")
    print(f"metrics: {result.metrics_csv}")
    print(f"summary: {result.summary_path}")
    print(f"report:  {result.report}")
    return 1 if result.failed else 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from adsys.infer.evaluate import evaluate_maps
    from adsys.infer.report import format_table

    summary = evaluate_maps(
        args.maps_dir, args.manifest, args.protocol, splits=tuple(args.splits),
        threshold=args.threshold, out=args.out, workers=args.workers,
    )
    print(format_table(summary))
    if summary["run"]["missing"]:
        print(f"missing maps: {', '.join(summary['run']['missing'])}")
    print(f"written: {summary['run']['written']}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``adsys infer`` and ``adsys evaluate`` on the top-level subparsers."""
    p = sub.add_parser("infer", help="batch inference with Ray Data: maps, metrics, report")
    add_infer_arguments(p)
    p.set_defaults(func=run_from_args)

    p = sub.add_parser("evaluate", help="metrics of saved anomaly maps under a named protocol")
    p.add_argument("maps_dir", type=Path, help="an inference output folder (--out of infer)")
    p.add_argument("--manifest", type=Path, required=True,
                   help="cohort manifest (splits and ground-truth seg, raw or preprocessed)")
    p.add_argument("--protocol", required=True, help=PROTOCOL_HELP)
    p.add_argument("--splits", nargs="+", default=["test"])
    p.add_argument("--threshold", default="val",
                   help="val | val-fpr=0.05 | a number | none (default val)")
    p.add_argument("--out", type=Path, help="default MAPS_DIR/eval-PROTOCOL")
    p.add_argument("--workers", type=int, default=1, help="parallel processes")
    p.set_defaults(func=_cmd_evaluate)
