"""Training-loop overhead: Ray Train + DeepSpeed (1 worker) vs a plain PyTorch loop.

Both loops run the same method, model config, shards, batch size, optimizer (Adam),
gradient clipping and EMA update, one step at a time, with checkpointing and validation
moved to the last step. Throughput is steady-state steps/s after ``--warmup`` steps, so the
one-off Ray start and DeepSpeed initialisation are not counted (they are reported apart).
The Ray run logs at the default ``log_every`` (10 steps); its rate is the mean over the
logged windows after the warm-up (``--warmup`` a multiple of 10). This shared 2-core box
drifts by ±10 % between minutes, so the two loops run ``--repeats`` times, alternating; the
overhead is given best run vs best run (noise only ever slows a run down) and as the median
over adjacent (Ray, plain) pairs (drift hits both runs of a pair alike).

    python bench/bench_train.py [--steps 80] [--warmup 20] [--repeats 5] [--preset demo]

Prints: every run's steps/s, the best of each loop, and the overhead of the Ray + DeepSpeed
loop (goal: ≤ 10 %).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import ray
import torch

from adsys.demo import write_demo_cohort
from adsys.methods import build_method
from adsys.seeding import generator
from adsys.shards.build import build_shards
from adsys.shards.spec import load_spec
from adsys.train.config import TrainConfig, resolve_config
from adsys.train.data import train_batches
from adsys.train.ema import EMA
from adsys.train.job import run_training

REPO = Path(__file__).resolve().parents[1]


def plain_loop(cfg: TrainConfig, steps: int, warmup: int) -> float:
    """Steady-state steps/s of a single-process loop doing the same work per step."""
    torch.manual_seed(cfg.seed)
    method = build_method(cfg.method, cfg.method_spec())
    opt = torch.optim.Adam(method.parameters(), lr=cfg.lr)
    ema = EMA(method, cfg.ema_decay)
    gen = generator("train", cfg.seed, 0)
    batches = train_batches(cfg, 0, 1)
    t0 = None
    for step in range(steps):
        if step == warmup:
            t0 = time.perf_counter()
        loss = method(next(batches), gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(method.parameters(), cfg.grad_clip)
        opt.step()
        ema.update(method)
    return (steps - warmup) / (time.perf_counter() - t0)


def ray_loop(cfg: TrainConfig, warmup: int) -> tuple[float, float]:
    """(steady-state steps/s, wall seconds of the whole fit) of the Ray Train + DeepSpeed run."""
    t = time.perf_counter()
    result = run_training(cfg)
    wall = time.perf_counter() - t
    assert result.error is None, result.error
    log = Path(cfg.storage_path).resolve() / cfg.name / "logs" / "metrics.jsonl"
    rows = [json.loads(x) for x in log.read_text().splitlines()]
    # each rate covers the log_every steps before it: keep those after the warm-up
    steady = [r["samples_per_s"] for r in rows
              if "samples_per_s" in r and r["step"] - cfg.log_every >= warmup]
    per_step_s = sum(cfg.batch_size / r for r in steady) / len(steady)
    return 1.0 / per_step_s, wall


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=80)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--repeats", type=int, default=5, help="alternating runs of each loop")
    p.add_argument("--preset", default="demo", help="model size preset (data: smoke shards)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        tmp = Path(tmp)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        manifest = write_demo_cohort(tmp / "cohort", n_train=3, n_val=1, n_test=0, progress=False)
        spec = load_spec(
            REPO / "shards" / "smoke.yaml", {"manifest": manifest, "out": tmp / "shards"}
        )
        shards = build_shards(spec, progress=False).out
        overrides = {
            "shards": shards,
            "storage_path": tmp / "runs",
            "log_every": 10,  # the default: per-step logging is not what runs pay
            "max_steps": args.steps,
            "checkpoint_every": args.steps,
            "val_every": args.steps,
            "val_batches": 1,
            "zero_stage": 0,
        }
        ray_rates, plain_rates, walls = [], [], []
        for i in range(args.repeats):
            cfg = resolve_config(args.preset, None, {**overrides, "name": f"bench-{i}"})
            ray_rate, wall = ray_loop(cfg, args.warmup)
            ray_rates.append(ray_rate)
            walls.append(wall)
            plain_rates.append(plain_loop(cfg, args.steps, args.warmup))
        ray.shutdown()
    ray_rate, plain_rate = max(ray_rates), max(plain_rates)
    overhead = plain_rate / ray_rate - 1.0
    print(
        f"model preset {args.preset}, batch {cfg.batch_size}, {args.steps} steps "
        f"({args.warmup} warm-up), 1 worker, CPU"
    )
    runs = ", ".join(f"{r:.3f}" for r in plain_rates)
    print(f"plain PyTorch loop:        {plain_rate:8.3f} steps/s   (runs: {runs})")
    runs = ", ".join(f"{r:.3f}" for r in ray_rates)
    print(f"Ray Train + DeepSpeed:     {ray_rate:8.3f} steps/s   (runs: {runs}; whole fit: "
          f"{min(walls):.0f} s incl. Ray Train start and DeepSpeed init)")
    paired = sorted(p / r - 1.0 for p, r in zip(plain_rates, ray_rates, strict=True))
    print(f"overhead of Ray+DeepSpeed: {100 * overhead:+.1f} % best vs best, "
          f"{100 * statistics.median(paired):+.1f} % median of the adjacent pairs   (goal <= 10 %)")


if __name__ == "__main__":
    main()
