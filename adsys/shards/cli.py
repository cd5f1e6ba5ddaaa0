"""``adsys shards build|encode|inspect|verify``; ``ray_jobs/build_shards.py`` reuses
:func:`run_build`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_build_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of a shard build (shared by ``adsys shards build`` and the Ray job)."""
    parser.add_argument("spec", type=Path, help="shard spec YAML (see shards/README.md)")
    parser.add_argument("--address", help="Ray address (default: RAY_ADDRESS, else local)")
    parser.add_argument("--manifest", type=Path, help="override the spec's cohort manifest")
    parser.add_argument("--out", type=Path, help="override the spec's output folder")
    parser.add_argument(
        "--overwrite", action="store_true", help="delete an existing output and start over"
    )
    parser.add_argument(
        "--max-in-flight", type=int, help="subjects queued at once (default: 2 x cluster CPUs)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_build(args: argparse.Namespace) -> int:
    """Build the shards; 0 when done within the failure budget, 1 when over it."""
    import ray

    from adsys.shards.build import build_shards
    from adsys.shards.spec import load_spec

    overrides = {k: getattr(args, k) for k in ("manifest", "out") if getattr(args, k)}
    spec = load_spec(args.spec, overrides)
    if not ray.is_initialized():
        ray.init(address=args.address)
    result = build_shards(
        spec,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        max_in_flight=args.max_in_flight,
    )
    print(
        f"shards {spec.name}: {len(result.computed)} subject(s) built, "
        f"{len(result.reused)} reused, {len(result.failed)} failed -> {result.out}"
    )
    for sid, reason in result.failed.items():
        print(f"  FAILED {sid}: {reason}", file=sys.stderr)
    if not result.within_budget:
        print(
            f"error: {len(result.failed)} failure(s) exceed the spec's budget of {result.budget}",
            file=sys.stderr,
        )
        return 1
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from adsys.shards.verify import summary

    print(summary(args.path))
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from adsys.shards.verify import verify_shards

    report = verify_shards(args.path)
    for problem in report.problems:
        print(f"PROBLEM {problem}", file=sys.stderr)
    print(
        f"verified {report.shards} shard(s), {report.samples} tar sample(s), "
        f"{report.zarr_rows} Zarr row(s): "
        + ("OK" if report.ok else f"{len(report.problems)} problem(s)")
    )
    return 0 if report.ok else 1


def _cmd_encode(args: argparse.Namespace) -> int:
    from adsys.shards.latents import encode_shard_set

    result = encode_shard_set(
        args.shards, args.model, args.out, pad_multiple=args.pad_multiple,
        splits=tuple(args.splits.split(",")), batch_size=args.batch_size, device=args.device,
        overwrite=args.overwrite, progress=not args.no_progress,
    )  # fmt: skip
    print(f"latents: {len(result.encoded)} subject(s) encoded, {len(result.reused)} reused "
          f"-> {result.out}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``adsys shards`` on the top-level subparsers."""
    shards = sub.add_parser("shards", help="build, inspect and verify Zarr + WebDataset shards")
    cmds = shards.add_subparsers(dest="shards_command", metavar="COMMAND", required=True)

    p = cmds.add_parser("build", help="build shards from a spec with Ray (resumable)")
    add_build_arguments(p)
    p.set_defaults(func=run_build)

    p = cmds.add_parser("encode", help="encode a shard set once into a latent shard set "
                        "with an exported autoencoder (resumable)")
    p.add_argument("shards", type=Path, help="the source shard set (build folder)")
    p.add_argument("--model", type=Path, required=True, help="the autoencoder's export folder")
    p.add_argument("--out", type=Path, required=True, help="the latent shard set's folder")
    p.add_argument("--pad-multiple", type=int, required=True,
                   help="pad volumes to this multiple before encoding: the latent method's "
                        "pad_multiple (autoencoder factor x its UNet's, e.g. 32)")
    p.add_argument("--splits", default="train,val", help="comma-separated (default train,val)")
    p.add_argument("--batch-size", type=int, default=4, help="volumes per encoder pass")
    p.add_argument("--device", default="cpu", help="torch device (e.g. cuda)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a latent set made from other shards or another encoder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_encode)

    p = cmds.add_parser("inspect", help="summary table of a build")
    p.add_argument("path", help="build folder or manifest.json (path or URL)")
    p.set_defaults(func=_cmd_inspect)

    p = cmds.add_parser("verify", help="check every checksum and decode every sample")
    p.add_argument("path", help="build folder or manifest.json (path or URL)")
    p.set_defaults(func=_cmd_verify)
