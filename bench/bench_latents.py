"""A latent method's training step: encoding its pairs on the fly (the default) against
reading them from a latent shard set written once (``adsys shards encode``).

Measured as users run it: the ``conddiff`` ``demo`` preset (its autoencoder, latent UNet and
batch size), one optimizer step (``training_loss`` + backward + AdamW) on pairs of the
MNI152 T1 at 2 mm on the demo's 96×112×96 grid and a copy with a dark lesion, in one
process with this machine's threads; weights are random (the cost does not depend on them).
The stored path runs the same step on the folded latents of the same pairs (what the
stream yields from a latent set) with ``latents_from_shards``. The one-off cost is the
encoding of a subject's volumes (the image and its ``--variants`` variants) at the
autoencoder's batch size; the break-even is the step at which writing the set once has paid
for itself.

    python bench/bench_latents.py [--steps 5] [--variants 8] [--subjects 20]
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from bench_methods import DEMO_GRID, volume
from common import machine_line

from adsys.methods import build_method
from adsys.shards.latents import fold
from adsys.train.config import resolve_config


def _step_seconds(method, batch: dict, steps: int) -> float:
    """Median seconds of ``steps`` optimizer steps (after one warm-up step)."""
    opt = torch.optim.AdamW([p for p in method.parameters() if p.requires_grad], lr=1e-4)
    times = []
    for i in range(steps + 1):
        start = time.perf_counter()
        loss = method.training_loss(batch, torch.Generator().manual_seed(i))
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - start)
    return sorted(times[1:])[len(times[1:]) // 2]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--variants", type=int, default=8, help="variants per subject (demo: 8)")
    p.add_argument("--subjects", type=int, default=20, help="train + val subjects (demo: 20)")
    args = p.parse_args(argv)
    cfg = resolve_config("demo", None, {"method": "conddiff"})
    image = torch.from_numpy(volume(DEMO_GRID))[None, None]
    variant = image.clone()
    variant[..., 40:56, 50:66, 40:56] *= 0.3
    batch = {"image": image.expand(cfg.batch_size, -1, -1, -1, -1).contiguous(),
             "variant": variant.expand(cfg.batch_size, -1, -1, -1, -1).contiguous()}
    torch.manual_seed(0)
    live = build_method("conddiff", cfg.method_config).train()
    stored = build_method("conddiff", {**cfg.method_config, "latents_from_shards": True})
    stored.load_state_dict(live.state_dict())
    stored.train()
    print(f"# bench_latents: conddiff demo preset (batch {cfg.batch_size}, autoencoder "
          f"{cfg.method_config['autoencoder']}, unet {cfg.method_config['unet']}), grid "
          f"{DEMO_GRID}, median of {args.steps} steps; {machine_line()}")
    start = time.perf_counter()
    with torch.no_grad():
        pairs = torch.cat([batch["image"], batch["variant"]])
        latents, _ = live.latents(pairs)
    encode_per_volume = (time.perf_counter() - start) / len(pairs)
    folded = fold(latents / live.latent_scale)[:, None]
    stored_batch = {"image": folded[:cfg.batch_size], "variant": folded[cfg.batch_size:]}
    on_the_fly = _step_seconds(live, batch, args.steps)
    from_set = _step_seconds(stored, stored_batch, args.steps)
    one_off = encode_per_volume * args.subjects * (1 + args.variants)
    saved = on_the_fly - from_set
    print(f"{'path':<28} {'s/step':>8} {'vs on the fly':>14}")
    print(f"{'encode on the fly (default)':<28} {on_the_fly:>8.2f} {1.0:>13.2f}x")
    print(f"{'latent shard set':<28} {from_set:>8.2f} {from_set / on_the_fly:>13.2f}x")
    print(f"one-off encoding: {encode_per_volume:.2f} s per volume, "
          f"{args.subjects} subjects x {1 + args.variants} volumes = {one_off:.0f} s "
          f"= {one_off / on_the_fly:.0f} on-the-fly steps; pays off after "
          f"{one_off / max(saved, 1e-9):.0f} steps")
    return 0


if __name__ == "__main__":
    sys.exit(main())
