"""Training-loop overhead: Ray Train + DeepSpeed (ZeRO 0/1/2) vs plain PyTorch, 1 and 2 ranks.

Every loop runs the same method, model config, shards, batch size per rank, client Adam,
gradient clipping and EMA update, one step at a time, with checkpointing and validation moved
to the last step, and with the threads per rank the training job gives its ranks (CPUs /
ranks) and the same loader processes per rank (``data_workers: auto``). References:

* **1 worker**: a plain single-process PyTorch loop;
* **2 workers**: ``torch.nn.parallel.DistributedDataParallel`` over 2 processes (gloo), each
  streaming its rank's share of the shards as the training job's ranks do.

Measured (``--runs``, ``WORKERS:STAGE`` pairs; default ZeRO-0, 1 and 2 at 1 worker and ZeRO-0
and 1 at 2 workers): ``ray_jobs/train.py``'s run (:func:`adsys.train.job.run_training`) with that
``zero_stage`` and ``num_workers``. Throughput is steady-state optimizer steps/s after
``--warmup`` steps (each rank takes one micro-batch per step), so the one-off Ray start and
DeepSpeed initialisation are not counted (the whole fit's wall time is reported apart). The
Ray run logs at the default ``log_every`` (10 steps); its rate is the mean over the logged
windows after the warm-up (``--warmup`` a multiple of 10). This shared machine drifts between
minutes, so every loop runs ``--repeats`` times, round-robin, every other round in reverse
order (a rising or falling load then hits every loop alike); the overhead is given best vs
best (noise only ever slows a run down) and as the median over the rounds of (reference,
run) pairs of the same round.

    python bench/bench_train.py [--steps 40] [--warmup 10] [--repeats 2] [--preset demo]
        [--runs 1:0,1:1,1:2,2:0,2:1]

Prints: the configuration (default ZeRO stage per worker count), every loop's steps/s per
round and the overhead of each Ray + DeepSpeed run against its reference (goal: <= 10 % at
the default configuration).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from common import demo_shards, machine_line, start_ray
from torch.nn.parallel import DistributedDataParallel

from adsys.methods import build_method
from adsys.seeding import generator
from adsys.train.config import TrainConfig, resolve_config
from adsys.train.data import train_batches
from adsys.train.ema import EMA
from adsys.train.job import run_training


@dataclass(frozen=True)
class Loop:
    """One loop of the comparison: ``stage`` None = the PyTorch reference for ``workers``."""

    workers: int
    stage: int | None

    @property
    def label(self) -> str:
        if self.stage is not None:
            return f"Ray Train + DeepSpeed ZeRO-{self.stage}"
        return "plain PyTorch loop" if self.workers == 1 else f"torch DDP, {self.workers} procs"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torch_rank(rank: int, cfg_json: dict[str, Any], world: int, steps: int, warmup: int,
                port: int, rates: Any) -> None:
    """One rank of the reference: the plain loop (1 rank) or DDP over gloo (several)."""
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))  # as the job's ranks get
    cfg = TrainConfig.model_validate(cfg_json)
    torch.manual_seed(cfg.seed)
    method = build_method(cfg.method, cfg.method_spec())
    model: torch.nn.Module = method
    if world > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                world_size=world)
        model = DistributedDataParallel(method)
    opt = torch.optim.Adam(method.parameters(), lr=cfg.lr)
    ema = EMA(method, cfg.ema_decay)
    gen = generator("train", cfg.seed, rank)
    batches = train_batches(cfg, rank, world, local_world=world)
    t0 = 0.0
    for step in range(steps):
        if step == warmup:
            if world > 1:
                dist.barrier()
            t0 = time.perf_counter()
        loss = model(next(batches), gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(method.parameters(), cfg.grad_clip)
        opt.step()
        ema.update(method)
        loss.item()  # the job logs every step's loss
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    if rank == 0:
        rates.put((steps - warmup) / (time.perf_counter() - t0))


def torch_loop(cfg: TrainConfig, steps: int, warmup: int) -> float:
    """Steady-state steps/s of the PyTorch reference with ``cfg.num_workers`` processes."""
    ctx = mp.get_context("spawn")
    rates = ctx.SimpleQueue()
    mp.spawn(_torch_rank, args=(cfg.model_dump(mode="json"), cfg.num_workers, steps, warmup,
                                _free_port(), rates), nprocs=cfg.num_workers)
    return rates.get()


def ray_loop(cfg: TrainConfig, warmup: int) -> tuple[float, float]:
    """(steady-state steps/s, wall seconds of the whole fit) of the Ray Train + DeepSpeed run.

    A run whose worker a loaded machine killed (failed health check, OOM killer) is run once
    more under a fresh name; a second failure is raised."""
    t = time.perf_counter()
    result = run_training(cfg)
    if result.error is not None:
        print(f"# {cfg.name} failed ({type(result.error).__name__}), run again", flush=True)
        cfg = cfg.model_copy(update={"name": f"{cfg.name}-again"})
        t = time.perf_counter()
        result = run_training(cfg)
    wall = time.perf_counter() - t
    if result.error is not None:
        raise result.error
    log = Path(cfg.storage_path).resolve() / cfg.name / "logs" / "metrics.jsonl"
    rows = [json.loads(x) for x in log.read_text().splitlines()]
    # each rate covers the log_every steps before it: keep those after the warm-up
    steady = [r["samples_per_s"] for r in rows
              if "samples_per_s" in r and r["step"] - cfg.log_every >= warmup]
    per_step_s = sum(cfg.batch_size * cfg.num_workers / r for r in steady) / len(steady)
    return 1.0 / per_step_s, wall


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--repeats", type=int, default=2, help="round-robin rounds of every loop")
    p.add_argument("--preset", default="demo", help="model size preset (data: smoke shards)")
    p.add_argument("--runs", default="1:0,1:1,1:2,2:0,2:1",
                   help="Ray + DeepSpeed runs as WORKERS:STAGE, comma-separated")
    args = p.parse_args()
    runs = [Loop(int(w), int(s)) for w, s in (r.split(":") for r in args.runs.split(","))]
    loops = [Loop(w, None) for w in sorted({r.workers for r in runs})] + runs
    loops.sort(key=lambda lp: (lp.workers, lp.stage is not None, lp.stage or 0))
    header = machine_line()
    rates: dict[Loop, list[float]] = {lp: [] for lp in loops}
    walls: dict[Loop, list[float]] = {lp: [] for lp in loops}
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        tmp = Path(tmp)
        start_ray()
        shards = demo_shards(tmp)
        base = {
            "shards": shards,
            "storage_path": tmp / "runs",
            "log_every": 10,  # the default: per-step logging is not what runs pay
            "max_steps": args.steps,
            "checkpoint_every": args.steps,
            "val_every": args.steps,
            "val_batches": 1,
        }
        defaults = {w: resolve_config(args.preset, None, {**base, "num_workers": w}).zero_stage
                    for w in sorted({lp.workers for lp in loops})}
        for i in range(args.repeats):
            for lp in loops if i % 2 == 0 else loops[::-1]:  # ABBA: a load trend hits all
                over = {**base, "num_workers": lp.workers, "name": f"bench-{i}-{lp.workers}"
                        f"-{lp.stage}"}
                if lp.stage is not None:
                    over["zero_stage"] = lp.stage
                cfg = resolve_config(args.preset, None, over)
                if lp.stage is None:
                    rates[lp].append(torch_loop(cfg, args.steps, args.warmup))
                else:
                    rate, wall = ray_loop(cfg, args.warmup)
                    rates[lp].append(rate)
                    walls[lp].append(wall)
        ray.shutdown()
    print(f"# bench_train: model preset {args.preset} ({cfg.method}), batch {cfg.batch_size} "
          f"per rank, {args.steps} steps ({args.warmup} warm-up), fp32 CPU, data_workers "
          f"{cfg.data_workers}, smoke shards; default zero_stage "
          + ", ".join(f"{s} at {w} worker(s)" for w, s in defaults.items()))
    print(f"# at start: {header}")
    print(f"# at end:   {machine_line()}")
    print(f"{'workers':>7}  {'loop':<34} {'best steps/s':>12}  overhead best/median   rounds")
    for lp in loops:
        ref = Loop(lp.workers, None)
        cells = ", ".join(f"{r:.3f}" for r in rates[lp])
        line = f"{lp.workers:>7}  {lp.label:<34} {max(rates[lp]):>12.3f}  "
        if lp.stage is None:
            line += f"{'(reference)':<22} {cells}"
        else:
            best = max(rates[ref]) / max(rates[lp]) - 1.0
            med = statistics.median(a / b - 1.0 for a, b in zip(rates[ref], rates[lp],
                                                                 strict=True))
            tag = "  <- default" if defaults[lp.workers] == lp.stage else ""
            line += (f"{100 * best:+6.1f} % / {100 * med:+6.1f} %    {cells}; whole fit "
                     f"{min(walls[lp]):.0f} s{tag}")
        print(line)
    for w, stage in defaults.items():
        lp = Loop(w, stage)
        if lp in rates:
            ref = max(rates[Loop(w, None)])
            print(f"overhead at the default (ZeRO-{stage}, {w} worker(s)) vs "
                  f"{Loop(w, None).label}: {100 * (ref / max(rates[lp]) - 1):+.1f} % best vs "
                  f"best (goal <= 10 %)")


if __name__ == "__main__":
    main()
