"""Per-volume inference time of every registered method, on one UNet size and one volume.

Each method is built from its ``demo`` preset with one shared UNet (``--unet demo``: the
demo presets' 32-channel UNet; ``paper``: the published 128-channel one) and its own default
inference recipe (t values, boxes, ...), random weights, and timed as users run it: the
inference job's :class:`adsys.infer.scorer.VolumeScorer` on the skull-stripped MNI152 T1 at
2 mm, centred in ``--grid`` (default the demo's 96×112×96; ``--grid 96 96 50`` is the
papers' 96×96 slices), all slices of the volume in one call. Methods are
timed round-robin, ``--repeats`` times; the best time per method is reported as a ratio to
``--reference`` (cddpm) measured in the same run.

A method entry may carry overrides of its config, ``NAME:KEY=VALUE[:KEY=VALUE...]`` (dotted
keys of the method config, values as YAML), timed as one more row: by default icdm also runs
its paper chain, ``icdm:inference.sampler=ddpm:inference.steps=50`` (50 ancestral steps),
beside its demo preset's 3-step DDIM — per fold model; the paper's ensemble runs 10 of them.

Published reference (the cDDPM paper's timing table): pDDPM ≈ 37 % slower than cDDPM at
inference — its 4 boxes per 96×96 slice cost 4 forward passes against cDDPM's 3 t values
(on the demo's 96×112 slices the 48-voxel boxes are 2×3 = 6 per slice).

    python bench/bench_methods.py [--repeats 2] [--unet demo|paper] [--grid X Y Z]
        [--methods ddpm,pddpm,icdm:inference.steps=10] [--reference cddpm]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from adsys.config import deep_merge, dotted_overrides
from adsys.demo import mni152_2mm
from adsys.infer.scorer import VolumeScorer
from adsys.methods import build_method, method_class, method_names
from adsys.train.config import resolve_config

UNETS = {
    "demo": resolve_config("demo", None, {"method": "ddpm"}).method_config["unet"],
    "paper": {},  # the UNetConfig defaults: the public code's 128-channel UNet
}
DEMO_GRID = (96, 112, 96)


def volume(grid: tuple[int, ...]) -> np.ndarray:
    """The MNI152 T1 (2 mm) in [0, 1], zero outside the brain, centred in ``grid`` (cropped
    or zero-padded per axis)."""
    t1, mask, _, _ = mni152_2mm()
    t1 = np.where(mask, t1 / np.percentile(t1[mask], 99), 0).clip(0, 1).astype(np.float32)
    out = np.zeros(grid, np.float32)
    src, dst = [], []
    for g, s in zip(grid, t1.shape, strict=True):
        n = min(g, s)
        src.append(slice((s - n) // 2, (s - n) // 2 + n))
        dst.append(slice((g - n) // 2, (g - n) // 2 + n))
    out[tuple(dst)] = t1[tuple(src)]
    return out


# rows timed beside the registered methods' own (NAME:KEY=VALUE overrides)
EXTRA_ROWS = ("icdm:inference.sampler=ddpm:inference.steps=50",)


def scorer(entry: str, unet: dict) -> VolumeScorer:
    """The scorer of ``NAME[:KEY=VALUE...]``: the method's demo preset, the shared UNet,
    then the entry's overrides."""
    name, *settings = entry.split(":")
    preset = method_class(name).presets["demo"].get("method_config", {})
    config = deep_merge(deep_merge(preset, {"unet": unet}), dotted_overrides(settings))
    torch.manual_seed(0)
    method = build_method(name, config).eval()
    return VolumeScorer([method], seed=0, device=torch.device("cpu"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--unet", choices=sorted(UNETS), default="demo")
    registered = method_names()
    default = [*registered, *(r for r in EXTRA_ROWS if r.split(":")[0] in registered)]
    p.add_argument("--methods", default=",".join(default),
                   help="NAME or NAME:KEY=VALUE[:KEY=VALUE...], comma-separated")
    p.add_argument("--reference", default="cddpm")
    p.add_argument("--grid", type=int, nargs=3, default=DEMO_GRID, metavar=("X", "Y", "Z"))
    args = p.parse_args(argv)
    grid = tuple(args.grid)
    names = args.methods.split(",")
    if args.reference not in names:
        names.insert(0, args.reference)
    vol = volume(grid)
    scorers = {n: scorer(n, UNETS[args.unet]) for n in names}
    print(f"# bench_methods: {len(names)} methods, volume {grid} (MNI152 2 mm), "
          f"unet={args.unet} {UNETS[args.unet] or '(UNetConfig defaults)'}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, cpu, "
          f"best of {args.repeats} round-robin")
    for n, s in scorers.items():
        cfg = s.models[0].config
        extra = {k: v for k, v in cfg.inference.model_dump().items()
                 if k not in ("map", "window", "protocol")}
        print(f"#   {n}: inference {extra}, data.dims {cfg.data.dims}")
    best = {n: float("inf") for n in names}
    for _ in range(args.repeats):
        for n in names:
            start = time.perf_counter()
            scorers[n](vol, "mni152")
            best[n] = min(best[n], time.perf_counter() - start)
    ref = best[args.reference]
    width = max(10, *(len(n) for n in names))
    print(f"{'method':<{width}} {'s/volume':>9} {'vs ' + args.reference:>10}")
    for n in names:
        print(f"{n:<{width}} {best[n]:>9.2f} {best[n] / ref:>9.2f}x")
    if "pddpm" in best:
        print(f"pddpm is {100 * (best['pddpm'] / ref - 1):+.0f} % vs {args.reference} "
              "(the cDDPM paper: pDDPM ≈ +37 % vs cDDPM)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
