"""The DeepSpeed engine of a training rank: its config, generated from ours."""

from __future__ import annotations

import logging
from typing import Any

import torch

from adsys.train.config import TrainConfig

log = logging.getLogger(__name__)

__all__ = ["deepspeed_config", "make_engine", "make_optimizer"]


def deepspeed_config(cfg: TrainConfig, on_gpu: bool) -> dict[str, Any]:
    """The DeepSpeed config generated from ours (the optimizer is a client torch optimizer,
    :func:`make_optimizer`; a ``cosine`` schedule is DeepSpeed's ``WarmupCosineLR``, linear
    warm-up from 0, stepped with the optimizer and saved in its checkpoints).

    Precision: ``auto`` = bf16 on GPU; ``fp16`` uses DeepSpeed's dynamic loss scaling; on
    CPU every setting trains in fp32.
    """
    precision = cfg.precision if on_gpu else "fp32"
    if precision == "auto":
        precision = "bf16"
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": cfg.batch_size,
        "gradient_accumulation_steps": 1,
        "gradient_clipping": cfg.grad_clip,
        "zero_optimization": {"stage": cfg.zero_stage},
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": precision == "fp16"},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if cfg.lr_schedule == "cosine":
        config["scheduler"] = {"type": "WarmupCosineLR", "params": {
            "total_num_steps": cfg.max_steps, "warmup_num_steps": max(cfg.warmup_steps, 1),
            "warmup_type": "linear", "warmup_min_ratio": 0.0, "cos_min_ratio": 0.0,
        }}  # fmt: skip
    return config


def make_optimizer(method: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The client optimizer: torch Adam or AdamW with ``lr``, ``betas``, ``weight_decay``
    (a torch optimizer, so DeepSpeed builds no fused kernel), over the trainable parameters
    only (a frozen stage, ``requires_grad`` False, has no optimizer state)."""
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    params = [p for p in method.parameters() if p.requires_grad]
    return cls(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)


def make_engine(method: torch.nn.Module, cfg: TrainConfig, world: int, on_gpu: bool) -> Any:
    """``deepspeed.initialize`` with the client optimizer over ``method``'s parameters."""
    import deepspeed

    if not on_gpu and cfg.precision not in ("auto", "fp32"):
        log.info("precision %s applies on GPU; this CPU run trains in fp32", cfg.precision)
    optimizer = make_optimizer(method, cfg)
    engine, _, _, _ = deepspeed.initialize(
        model=method, optimizer=optimizer, config=deepspeed_config(cfg, on_gpu)
    )
    if world == 1 and cfg.zero_stage == 0:
        # averaging gradients over one rank is the identity; DeepSpeed would still flatten,
        # all-reduce and copy back every gradient each step (measured: 2-4 % of a CPU step)
        engine.enable_backward_allreduce = False
    return engine
