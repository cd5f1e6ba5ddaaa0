"""The per-worker training loop that Ray Train runs on every rank.

Each rank: builds the method with the same seed, wraps it in a DeepSpeed engine
(:mod:`adsys.train.engine`: ZeRO 0/1/2, mixed precision on GPU, fp32 on CPU, gradient
clipping, client Adam), streams its own share of the method's declared data (corrupted in the
loader's workers when the method says so; :mod:`adsys.train.data`), keeps an EMA of the
weights, evaluates a fixed validation loss (all-reduced, so every rank takes the same
early-stopping decision), checkpoints on every rank through
``ray.train.report`` and resumes from ``ray.train.get_checkpoint()`` at the same step with the
same RNG streams. Rank 0 logs metrics (JSONL + TensorBoard) and exports the EMA model: the
last step's, or (``export: best_val``) the one at the lowest validation loss.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from adsys.methods import build_method
from adsys.methods.export import export_model
from adsys.resources import peak_memory_mb
from adsys.seeding import generator
from adsys.train.checkpoint import TrainerState, load_checkpoint, save_checkpoint
from adsys.train.config import TrainConfig
from adsys.train.data import shard_preprocess_config, train_batches, val_batches
from adsys.train.ema import EMA
from adsys.train.engine import make_engine
from adsys.train.metrics import MetricsLog

log = logging.getLogger(__name__)


def _to(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {
        k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()
    }


def _all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if torch.distributed.is_initialized():
        torch.distributed.all_reduce(t)
    return t.tolist()


@torch.no_grad()
def validation_loss(
    engine: Any, cfg: TrainConfig, rank: int, world: int, device: torch.device
) -> float:
    """Loss over fixed val batches with fixed noise draws (the same every time), pooled over
    all ranks so that every rank takes the same early-stopping decision."""
    engine.module.eval()
    gen = generator("val", cfg.seed, rank)
    total, count = 0.0, 0
    for b in val_batches(cfg, rank, world):
        n = b["image"].shape[0]
        total += float(engine.module(_to(b, device), gen)) * n
        count += n
    engine.module.train()
    total, count = _all_reduce_sum([total, float(count)], device)
    return total / max(count, 1.0)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Entry point for ``TorchTrainer(train_loop_per_worker=...)``; ``config`` is a TrainConfig dict
    plus ``run_dir`` (absolute) and optionally ``fault_step`` (test-only fault injection)."""
    import ray.train
    from ray.train import Checkpoint

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("adsys").setLevel(logging.INFO)
    run_dir = Path(config.pop("run_dir"))
    fault_step = config.pop("fault_step", None)
    cfg = TrainConfig.model_validate(config)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    on_gpu = torch.cuda.is_available()
    device = ray.train.torch.get_device() if on_gpu else torch.device("cpu")

    t_start = time.perf_counter()
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    method = build_method(cfg.method, cfg.method_spec())
    method.load_pretrained()  # a resumed run then overwrites them with its checkpoint
    method = method.to(device)
    engine = make_engine(method, cfg, world, on_gpu)
    ema = EMA(engine.module, cfg.ema_decay)
    gen = generator("train", cfg.seed, rank)
    state = TrainerState()
    restored = ray.train.get_checkpoint()
    if restored is not None:
        with restored.as_directory() as folder:
            state = load_checkpoint(Path(folder), engine, ema, gen, rank)
        log.info("rank %d resumed at step %d", rank, state.step)

    metrics_log = MetricsLog(run_dir / "logs") if rank == 0 else None
    stopped_early = False
    t_last, n_last = time.perf_counter(), 0
    batches = train_batches(cfg, rank, world, start_step=state.step,
                            local_world=ctx.get_local_world_size())
    while state.step < cfg.max_steps and not stopped_early:
        batch = next(batches)
        if fault_step is not None and state.step == fault_step and rank == 0:
            marker = run_dir / f".fault-injected-{fault_step}"
            if not marker.exists():
                marker.touch()
                # crash once the last report is committed (a crash right after a report may
                # otherwise lose that checkpoint and resume from the one before: also correct,
                # but the test wants a known resume step)
                ray.train.get_all_reported_checkpoints(
                    consistency_mode=ray.train.CheckpointConsistencyMode.COMMITTED
                )
                os._exit(17)  # a hard crash: Ray must restart the worker group
        loss = engine(_to(batch, device), gen)
        engine.backward(loss)
        engine.step()
        ema.update(engine.module)
        state.step += 1
        n_last += batch["image"].shape[0]
        metrics: dict[str, float] = {"loss": loss.item(), "lr": engine.get_lr()[0]}
        if state.step % cfg.log_every == 0:
            now = time.perf_counter()
            metrics["samples_per_s"] = n_last * world / max(now - t_last, 1e-9)
            t_last, n_last = now, 0
        if state.step % cfg.val_every == 0 or state.step == cfg.max_steps:
            metrics["val_loss"] = val = validation_loss(engine, cfg, rank, world, device)
            if cfg.val_smoothing:
                a, prev = cfg.val_smoothing, state.val_smoothed
                state.val_smoothed = val = val if prev is None else a * prev + (1 - a) * val
                metrics["val_loss_smoothed"] = val
            if val < state.best_val - 1e-12:
                state.best_val, state.best_step = val, state.step
                state.evals_without_improvement = 0
                if rank == 0 and cfg.export == "best_val":
                    ema.keep_best()
            else:
                state.evals_without_improvement += 1
            if cfg.patience is not None and state.evals_without_improvement >= cfg.patience:
                stopped_early = True
        if metrics_log is not None and (state.step % cfg.log_every == 0 or "val_loss" in metrics):
            metrics_log.write(state.step, metrics)
            log.info(
                "step %d/%d %s",
                state.step,
                cfg.max_steps,
                " ".join(f"{k}={v:.4g}" for k, v in metrics.items()),
            )
        last = state.step == cfg.max_steps or stopped_early
        if state.step % cfg.checkpoint_every == 0 or last:
            with tempfile.TemporaryDirectory(prefix="adsys-ckpt-") as tmp:
                save_checkpoint(
                    Path(tmp), engine, ema, gen, state, rank, cfg.model_dump(mode="json")
                )
                ray.train.report(
                    {**metrics, "step": state.step},
                    checkpoint=Checkpoint.from_directory(tmp),
                    checkpoint_dir_name=f"checkpoint_{state.step:08d}",
                )
    if rank == 0:
        metrics_log.close()
        best = cfg.export == "best_val" and ema.best is not None
        export_model(
            run_dir / "export",
            cfg.method,
            engine.module.config,
            ema.best if best else ema.state_dict(),
            extra={
                "train": cfg.model_dump(mode="json"),
                "steps": state.step,
                "exported_step": state.best_step if best else state.step,
                "stopped_early": stopped_early,
                "best_val_loss": _finite(state.best_val),
                "preprocess": shard_preprocess_config(cfg),  # inference repeats it on NIfTI
                # this attempt's wall time and rank 0's peak memory (a resumed run: the last)
                "train_seconds": round(time.perf_counter() - t_start, 1),
                **peak_memory_mb(),
            },
        )


def _finite(v: float) -> float | None:
    return v if math.isfinite(v) else None
