"""``adsys synth ...`` subcommands.

``adsys synth fluid IMAGE --mask MASK --out DIR [--lesions DIR] [--seed S] [--n K] [--wm WM]``
writes, per variant ``k``: ``<stem>_fluid-<k>.nii.gz`` (pathological image),
``<stem>_fluid-<k>_lesion.nii.gz`` (binary lesion mask), ``<stem>_fluid-<k>_prob.nii.gz``
(soft map P_T) and ``<stem>_fluid-<k>.json`` (the parameter record for
:func:`adsys.synth.fluid.replay`), all on the input's grid and affine.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from adsys.errors import InputError

logger = logging.getLogger(__name__)

_NIFTI_SUFFIXES = (".nii.gz", ".nii", ".mgz")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``adsys synth`` on the top-level subparsers."""
    synth = sub.add_parser("synth", help="synthesise pseudo-pathology")
    kinds = synth.add_subparsers(dest="synth_command", metavar="GENERATOR", required=True)
    fluid = kinds.add_parser(
        "fluid",
        help="fluid-driven lesions (advection–diffusion of a lesion map)",
        description="Add fluid-driven pseudo-lesions (advected and diffused lesion maps) to a "
        "preprocessed image. Per variant k it writes <stem>_fluid-<k>.nii.gz (image), "
        "_lesion.nii.gz (binary mask), _prob.nii.gz (soft map P_T) and .json (parameters "
        "for adsys.synth.fluid.replay), on the input's grid and affine.",
    )
    fluid.add_argument("image", type=Path, help="healthy image (NIfTI), preprocessed grid")
    fluid.add_argument("--mask", type=Path, required=True, help="brain mask on the image grid")
    fluid.add_argument("--out", type=Path, required=True, help="output folder")
    fluid.add_argument(
        "--lesions",
        type=Path,
        help="folder of lesion probability maps (NIfTI, image grid); default: random Perlin shapes",
    )
    fluid.add_argument(
        "--wm", type=Path, help="white-matter probability map (μ_w); default: k-means estimate"
    )
    fluid.add_argument("--seed", type=int, default=0, help="run seed (default 0)")
    fluid.add_argument("--n", type=int, default=1, help="number of variants (default 1)")
    fluid.add_argument(
        "--mode",
        choices=["paper", "una_compat"],
        default="paper",
        help="paper: advection + diffusion, zero flux at the brain boundary (default); "
        "una_compat: UNA/CondDiff's advection-only solver",
    )
    fluid.add_argument(
        "--intensity",
        choices=["paper", "conddiff", "una"],
        default="paper",
        help="lesion intensity model (default: paper, N(-μ_w/2, μ_w/2) with 20%% sign flips)",
    )
    fluid.add_argument(
        "--wm-tissue",
        choices=["bright", "dark"],
        default="bright",
        help="without --wm: the k-means intensity cluster taken as white matter "
        "(bright for T1, the default; dark for T2/FLAIR)",
    )
    fluid.add_argument("--device", default="cpu", help="cpu or cuda[:i] (CUDA runs Triton)")
    fluid.set_defaults(func=run_fluid)


def _stem(path: Path) -> str:
    name = path.name
    for suffix in _NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _lesion_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise InputError(
            folder, "the lesion folder does not exist", "pass a folder of lesion probability maps"
        )
    files = sorted(p for p in folder.iterdir() if p.name.endswith(_NIFTI_SUFFIXES))
    if not files:
        raise InputError(
            folder,
            "no NIfTI lesion maps (*.nii, *.nii.gz, *.mgz) in this folder",
            "put the lesion probability maps there, or omit --lesions",
        )
    return files


def run_fluid(args: argparse.Namespace) -> int:
    """Write ``args.n`` fluid variants of ``args.image``; returns the exit status."""
    from adsys.io import load_label, load_volume, save_volume
    from adsys.seeding import derive_seed
    from adsys.synth.fluid import FluidConfig, generate

    if args.n < 1:
        raise InputError(None, f"--n must be >= 1, got {args.n}", "ask for one variant or more")
    volume = load_volume(args.image)
    mask = load_label(args.mask, like=volume, role="mask")
    wm = None
    if args.wm is not None:
        wm_vol = load_volume(args.wm)
        if not wm_vol.grid.same_as(volume.grid, atol=1e-3):
            raise InputError(
                args.wm,
                f"the WM map is not on the grid of {args.image}",
                "resample it onto the image grid",
            )
        wm = wm_vol.data
    lesions = _lesion_files(args.lesions) if args.lesions else None
    config = FluidConfig(mode=args.mode, intensity=args.intensity, wm_tissue=args.wm_tissue)
    stem = _stem(args.image)
    args.out.mkdir(parents=True, exist_ok=True)
    written, attempt, max_attempts = 0, 0, 20 * args.n
    while written < args.n and attempt < max_attempts:
        seed = derive_seed("synth", args.seed, attempt)
        attempt += 1
        sample = generate(
            volume.data,
            mask,
            seed=seed,
            config=config,
            lesion_maps=lesions,
            wm=wm,
            affine=volume.affine,
            device=args.device,
        )
        if sample is None:
            logger.warning("variant seed %d gave an empty lesion; drawing another", seed)
            continue
        base = args.out / f"{stem}_fluid-{written:02d}"
        save_volume(f"{base}.nii.gz", sample.image, volume.affine)
        save_volume(f"{base}_lesion.nii.gz", sample.lesion, volume.affine, dtype=np.uint8)
        save_volume(f"{base}_prob.nii.gz", sample.p_t, volume.affine)
        record = {
            **sample.params,
            "source": {
                "image": str(args.image),
                "mask": str(args.mask),
                "wm": None if args.wm is None else str(args.wm),
                "run_seed": args.seed,
                "variant": written,
                "attempt": attempt - 1,
            },
        }
        Path(f"{base}.json").write_text(json.dumps(record, indent=2))
        logger.info(
            "wrote %s (%d lesion voxels, T=%.2f)",
            base,
            sample.params["lesion_voxels"],
            sample.params["t_max"],
        )
        written += 1
    if written < args.n:
        logger.error(
            "only %d of %d variants had a non-empty lesion after %d attempts",
            written,
            args.n,
            attempt,
        )
        return 1
    return 0
