"""The ``adsys`` command line: demo data, preprocessing, and (per stage) its subcommands."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from adsys import __version__
from adsys.errors import AdsysError

log = logging.getLogger("adsys")


def _cmd_demo_data(args: argparse.Namespace) -> int:
    from adsys.demo import write_demo_cohort

    manifest = write_demo_cohort(
        args.out, n_train=args.n_train, n_val=args.n_val, n_test=args.n_test, seed=args.seed
    )
    print(f"demo cohort written: {manifest}")
    return 0


def _cmd_preprocess(args: argparse.Namespace) -> int:
    from adsys.config import load_yaml_config
    from adsys.io.manifest import load_manifest
    from adsys.preprocess import preprocess_cohort
    from adsys.preprocess.config import PreprocessConfig

    overrides = {
        k: v
        for k, v in {
            "spacing": args.spacing,
            "shape": tuple(args.shape) if args.shape else None,
            "normalization": args.normalization,
            "interpolation": args.interpolation,
            "template": args.template,
            "n4": True if args.n4 else None,
        }.items()
        if v is not None
    }
    if args.config:
        config = load_yaml_config(PreprocessConfig, args.config, overrides)
    else:
        config = PreprocessConfig(**overrides)
    manifest = load_manifest(args.manifest)
    result = preprocess_cohort(manifest, args.out, config, workers=args.workers)
    print(
        f"preprocessed {len(result.processed)} subject(s), reused {len(result.reused)}, "
        f"failed {len(result.failed)} -> {result.manifest}"
    )
    for sid, reason in sorted(result.failed.items()):
        print(f"  FAILED {sid}: {reason}", file=sys.stderr)
    return 1 if result.failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="adsys",
        description="Diffusion-based anomaly detection for brain MRI at cohort scale.",
    )
    parser.add_argument("--version", action="version", version=f"adsys {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("demo-data", help="write the embedded demo cohort (NIfTI + manifest)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--n-train", type=int, default=16)
    p.add_argument("--n-val", type=int, default=4)
    p.add_argument("--n-test", type=int, default=8, help="test subjects get synthetic lesions")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_demo_data)

    p = sub.add_parser("preprocess", help="preprocess a cohort manifest into NIfTI + records")
    p.add_argument("manifest", type=Path, help="cohort manifest CSV (see README)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--config", type=Path, help="PreprocessConfig YAML; flags below override it")
    p.add_argument("--spacing", type=float, help="target voxel size in mm (default 1)")
    p.add_argument("--shape", type=int, nargs=3, metavar=("X", "Y", "Z"), help="crop/pad shape")
    p.add_argument("--normalization", choices=["percentile", "quantile", "max"])
    p.add_argument("--interpolation", choices=["bspline", "linear"])
    p.add_argument("--template", type=Path, help="NIfTI whose field of view is the target grid")
    p.add_argument("--n4", action="store_true", help="N4 bias-field correction (SimpleITK)")
    p.add_argument("--workers", type=int, default=1, help="parallel processes")
    p.set_defaults(func=_cmd_preprocess)

    from adsys.benchmark import cli as benchmark_cli
    from adsys.infer import cli as infer_cli
    from adsys.shards import cli as shards_cli
    from adsys.synth import cli as synth_cli
    from adsys.train import cli as train_cli

    synth_cli.add_parser(sub)
    shards_cli.add_parser(sub)
    train_cli.add_parser(sub)
    infer_cli.add_parser(sub)
    benchmark_cli.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except AdsysError as exc:
        print(f"adsys {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
