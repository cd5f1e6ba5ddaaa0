"""Per-volume inference time of every registered method, on one UNet size and one volume;
peak memory of a 3D training step with and without activation checkpointing.

Each slice method is built from its ``demo`` preset with one shared UNet (``--unet demo``:
the demo presets' 32-channel UNet; ``paper``: the published 128-channel one); a 3D latent
method (``conddiff``, ``cldm``, ``aekl``) keeps its own networks (``--unet demo``: its demo
preset's; ``paper``: its published ones) as it diffuses in the autoencoder's latent space.
Every method runs its own default
inference recipe (t values, boxes, ...), random weights, and is timed as users run it: the
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

**3D training memory** (``--memory``, default the 3D methods): one training step (forward +
backward, batch 1 of the grid's volume and a fluid-like variant) of each 3D method's
published networks (``--unet paper``) or its demo preset's, with and without activation
checkpointing (``unet.gradient_checkpointing``, ``autoencoder.gradient_checkpointing``), each
in a fresh process: the peak resident memory the step adds over the built model (CPU;
``torch.cuda.max_memory_allocated`` on a GPU).

    python bench/bench_methods.py [--repeats 2] [--unet demo|paper] [--grid X Y Z]
        [--methods ddpm,pddpm,icdm:inference.steps=10] [--reference cddpm]
        [--memory conddiff,cldm,aekl]
"""

from __future__ import annotations

import argparse
import multiprocessing
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


def _shares_the_unet(name: str) -> bool:
    """Slice methods share ``--unet``; 3D latent methods keep their own networks."""
    return method_class(name).config_cls(method=name).data.dims == 2


def build(entry: str, unet: str) -> torch.nn.Module:
    """Method ``NAME[:KEY=VALUE...]``: its demo preset, the shared UNet (slice methods) or,
    with ``unet`` "paper", a 3D method's published networks, then the entry's overrides."""
    name, *settings = entry.split(":")
    preset = method_class(name).presets["demo"].get("method_config", {})
    if _shares_the_unet(name):
        preset = deep_merge(preset, {"unet": UNETS[unet]})
    elif unet == "paper":
        preset = {}
    torch.manual_seed(0)
    return build_method(name, deep_merge(preset, dotted_overrides(settings)))


def scorer(entry: str, unet: str) -> VolumeScorer:
    """The inference job's scorer of one method entry (:func:`build`)."""
    return VolumeScorer([build(entry, unet).eval()], seed=0, device=torch.device("cpu"))


def _status_bytes(field: str) -> int:
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``), bytes (Linux)."""
    with open("/proc/self/status", encoding="ascii") as f:
        line = next(x for x in f if x.startswith(field + ":"))
    return int(line.split()[1]) * 1024


def _step_memory(entry: str, unet: str, grid: tuple[int, ...], queue) -> None:
    """(In a fresh process) the peak memory one training step adds over the built model,
    bytes: on CPU the resident-set high-water mark (reset to the current RSS through
    ``/proc/self/clear_refs`` before the step) minus that RSS; on a GPU
    ``max_memory_allocated`` minus ``memory_allocated``."""
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    method = build(entry, unet).to(device).train()
    image = torch.from_numpy(volume(grid))[None, None].to(device)
    batch = {"image": image, "variant": (image * 0.7).clamp(0, 1), "mask": image > 0}
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")  # resets VmHWM to the current RSS
        base = _status_bytes("VmRSS")
    method.training_loss(batch, torch.Generator().manual_seed(0)).backward()
    peak = torch.cuda.max_memory_allocated() if cuda else _status_bytes("VmHWM")
    queue.put(peak - base)


def step_memory(entry: str, unet: str, grid: tuple[int, ...]) -> float:
    """:func:`_step_memory` in a spawned process (nothing of the others' allocations), GiB."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_step_memory, args=(entry, unet, grid, queue))
    proc.start()
    proc.join()
    if proc.exitcode:
        raise RuntimeError(f"the training step of {entry} failed (exit {proc.exitcode})")
    return queue.get(timeout=10) / 2**30


def checkpointing(name: str) -> str:
    """The override that turns activation checkpointing on for method ``name``'s networks."""
    keys = method_class(name).config_cls.model_fields
    on = [f"{k}.gradient_checkpointing=true" for k in ("unet", "autoencoder") if k in keys]
    return ":".join([name, *on])


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
    three_d = [n for n in registered if not _shares_the_unet(n)]
    p.add_argument("--memory", default=",".join(three_d),
                   help="3D methods whose training-step memory to measure ('' for none)")
    args = p.parse_args(argv)
    grid = tuple(args.grid)
    names = args.methods.split(",")
    if args.reference not in names:
        names.insert(0, args.reference)
    vol = volume(grid)
    scorers = {n: scorer(n, args.unet) for n in names}
    print(f"# bench_methods: {len(names)} methods, volume {grid} (MNI152 2 mm), "
          f"unet={args.unet} {UNETS[args.unet] or '(UNetConfig defaults)'} for slice "
          f"methods, {'published' if args.unet == 'paper' else 'demo'} networks for 3D ones, "
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
    memory = [n for n in args.memory.split(",") if n]
    if memory:
        print(f"# training step, batch 1, {'published' if args.unet == 'paper' else 'demo'} "
              f"networks, peak memory added by the step (GiB)")
        print(f"{'method':<{width}} {'plain':>9} {'ckpt':>9} {'ckpt/plain':>10}")
        for n in memory:
            plain = step_memory(n, args.unet, grid)
            ckpt = step_memory(checkpointing(n), args.unet, grid)
            print(f"{n:<{width}} {plain:>9.2f} {ckpt:>9.2f} {ckpt / plain:>9.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
