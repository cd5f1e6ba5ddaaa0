"""The DeepSpeed engine of a training rank: its config, generated from ours."""

from __future__ import annotations

import logging
from typing import Any

import torch

from adsys.train.config import TrainConfig

log = logging.getLogger(__name__)

__all__ = ["deepspeed_config", "make_engine"]


def deepspeed_config(cfg: TrainConfig, on_gpu: bool) -> dict[str, Any]:
    """The DeepSpeed config generated from ours (the optimizer is a client torch Adam).

    Precision: ``auto`` = bf16 on GPU; ``fp16`` uses DeepSpeed's dynamic loss scaling; on
    CPU every setting trains in fp32.
    """
    precision = cfg.precision if on_gpu else "fp32"
    if precision == "auto":
        precision = "bf16"
    return {
        "train_micro_batch_size_per_gpu": cfg.batch_size,
        "gradient_accumulation_steps": 1,
        "gradient_clipping": cfg.grad_clip,
        "zero_optimization": {"stage": cfg.zero_stage},
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": precision == "fp16"},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def make_engine(method: torch.nn.Module, cfg: TrainConfig, world: int, on_gpu: bool) -> Any:
    """``deepspeed.initialize`` with a client Adam over ``method``'s parameters."""
    import deepspeed

    if not on_gpu and cfg.precision not in ("auto", "fp32"):
        log.info("precision %s applies on GPU; this CPU run trains in fp32", cfg.precision)
    optimizer = torch.optim.Adam(method.parameters(), lr=cfg.lr)
    engine, _, _, _ = deepspeed.initialize(
        model=method, optimizer=optimizer, config=deepspeed_config(cfg, on_gpu)
    )
    if world == 1 and cfg.zero_stage == 0:
        # averaging gradients over one rank is the identity; DeepSpeed would still flatten,
        # all-reduce and copy back every gradient each step (measured: 2-4 % of a CPU step)
        engine.enable_backward_allreduce = False
    return engine
