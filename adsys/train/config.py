"""The training configuration: which method, which shards, how to scale, when to check."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from adsys.config import GpuSetting, StrictModel


class TrainConfig(StrictModel):
    """Everything a training run needs; saved with its checkpoints and exported model.

    Steps count optimizer steps of the whole job (each rank takes one micro-batch per step).
    """

    method: str = "cddpm"
    method_config: dict[str, Any] = Field(default_factory=dict)
    shards: Path = Path("shards/out/demo")
    batch_size: int = 32
    max_steps: int = 20_000
    lr: float = 1e-4
    zero_stage: Literal[0, 1, 2] = 1
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    val_every: int = 500
    val_batches: int = 4
    patience: int | None = None
    checkpoint_every: int = 1000
    log_every: int = 10
    seed: int = 3141
    min_brain_fraction: float = 0.0
    data_workers: int = 0
    num_workers: int = 1
    use_gpu: GpuSetting = "auto"
    storage_path: Path = Path("runs")
    name: str = "adsys"
    max_failures: int = 0
    num_to_keep: int = 2

    @field_validator(
        "batch_size",
        "max_steps",
        "val_every",
        "checkpoint_every",
        "log_every",
        "num_workers",
        "val_batches",
    )
    @classmethod
    def _positive(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"must be >= 1, got {v}")
        return v


PRESETS: dict[str, dict[str, Any]] = {
    # seconds on a laptop CPU: a tiny UNet, a few steps; for tests and for trying the stack
    "smoke": {
        "shards": "shards/out/smoke",
        "batch_size": 4,
        "max_steps": 6,
        "val_every": 3,
        "val_batches": 1,
        "checkpoint_every": 3,
        "log_every": 1,
        "method_config": {
            "unet": {
                "model_channels": 32,
                "channel_mult": [1, 2],
                "num_res_blocks": 1,
                "num_head_channels": 16,
            },
            "encoder": {"depth": 18, "width": 8, "out_dim": 32},
        },
    },
    # a few CPU minutes on the demo shards: small enough for `make demo`
    "demo": {
        "shards": "shards/out/demo",
        "batch_size": 8,
        "max_steps": 200,
        "lr": 3e-4,
        "val_every": 100,
        "val_batches": 2,
        "checkpoint_every": 100,
        "log_every": 10,
        "min_brain_fraction": 0.05,
        "method_config": {
            "unet": {
                "model_channels": 32,
                "channel_mult": [1, 2, 2],
                "num_res_blocks": 1,
                "num_head_channels": 32,
            },
            "encoder": {"depth": 18, "width": 16, "out_dim": 128},
        },
    },
}
