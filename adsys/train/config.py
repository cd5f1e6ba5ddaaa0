"""The training configuration: which method, which shards, how to scale, when to check.

:func:`resolve_config` merges, key by key: the run preset (:data:`RUN_PRESETS`: shards and
schedule) < the method's own preset (``Method.presets``: its model size, and for ``paper`` the
published settings) < a YAML file < flags. The method's config is validated with the rest, so
a wrong key fails on the driver, in one line naming the key and the method.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from adsys.config import GpuSetting, StrictModel, deep_merge, error_line
from adsys.errors import InputError
from adsys.methods import (
    DEFAULT_METHOD,
    PRESET_NAMES,
    MethodConfig,
    MethodConfigError,
    method_class,
    method_config,
)
from adsys.registry import UnknownNameError

__all__ = ["RUN_PRESETS", "TrainConfig", "resolve_config"]

Precision = Literal["auto", "fp32", "bf16", "fp16"]
Placement = Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"]
ZeroStage = Literal[0, 1, 2]


class TrainConfig(StrictModel):
    """Everything a training run needs; saved with its checkpoints and exported model.

    Steps count optimizer steps of the whole job (each rank takes one micro-batch per step).
    ``method`` defaults to :data:`adsys.methods.DEFAULT_METHOD`; ``method_config`` holds keys
    of the method's config (the method's defaults for the rest).
    ``precision``: ``auto`` = bf16 on GPU; every setting is fp32 on CPU. ``data_workers``:
    loader processes per rank; ``auto`` = the node's CPUs per rank minus one (at least 1 on a
    multi-core node), so a GPU rank is not fed by its own thread. ``export``: the exported
    weights are the EMA at the last step, or at the validation with the lowest loss
    (``best_val``: checkpoint selection on validation loss, as some papers' code does).
    ``val_smoothing`` α: best checkpoint and early stopping (``patience`` validations without
    improvement) follow the moving average m ← α·m + (1 − α)·loss of the validation loss
    (0: the loss itself; one paper's code uses 0.9).
    Optimisation: ``optimizer`` ``adam`` | ``adamw`` (decoupled ``weight_decay``) with
    ``betas``; ``lr_schedule`` ``constant`` or ``cosine`` (linear warm-up over
    ``warmup_steps``, then cosine decay to 0 at ``max_steps``); defaults: Adam, constant.
    ``placement_strategy``: how Ray places the ranks' placement group on the cluster's nodes
    (Ray's strategies: ``PACK`` fills few nodes, ``SPREAD`` spreads them where it can,
    ``STRICT_SPREAD`` puts every rank on its own node, ``STRICT_PACK`` all on one).
    ``run_dir`` (``storage_path/name``) holds the run; re-running with the same one resumes it.
    ``zero_stage``: DeepSpeed's ZeRO stage; ``auto`` resolves when the config is validated
    (the resolved stage is what the run records) to what is fastest for the world size: 0 on
    one worker — ZeRO partitions nothing over one rank, its flat fp32 copies only cost time
    and memory, and stage 0 on one rank also skips the gradient all-reduce
    (:func:`adsys.train.engine.make_engine`) — and 1 on several (optimizer states partitioned
    across ranks; ``bench/bench_train.py`` measures each stage against plain PyTorch / DDP).
    """

    method: str = DEFAULT_METHOD
    method_config: dict[str, Any] = Field(default_factory=dict)
    shards: Path = Path("shards/out/demo")
    batch_size: int = 32
    max_steps: int = 20_000
    lr: float = 1e-4
    optimizer: Literal["adam", "adamw"] = "adam"
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    lr_schedule: Literal["constant", "cosine"] = "constant"
    warmup_steps: int = 0
    zero_stage: ZeroStage | Literal["auto"] = "auto"
    precision: Precision = "auto"
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    export: Literal["last", "best_val"] = "last"
    val_every: int = 500
    val_batches: int = 4
    patience: int | None = None
    val_smoothing: float = 0.0
    checkpoint_every: int = 1000
    log_every: int = 10
    seed: int = 3141
    data_workers: int | Literal["auto"] = "auto"
    num_workers: int = 1
    use_gpu: GpuSetting = "auto"
    placement_strategy: Placement = "PACK"
    storage_path: Path = Path("runs")
    name: str = "adsys"
    max_failures: int = 0
    num_to_keep: int = 2

    @field_validator(
        "batch_size", "max_steps", "val_every", "checkpoint_every", "log_every", "num_workers",
        "val_batches",
    )  # fmt: skip
    @classmethod
    def _positive(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"must be >= 1, got {v}")
        return v

    @field_validator("ema_decay", "val_smoothing")
    @classmethod
    def _decay(cls, v: float) -> float:
        if not 0 <= v < 1:
            raise ValueError(f"must be in [0, 1) (0: none), got {v}")
        return v

    @field_validator("betas")
    @classmethod
    def _betas(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(0 <= b < 1 for b in v):
            raise ValueError(f"must be two numbers in [0, 1), got {v}")
        return v

    @field_validator("weight_decay", "warmup_steps")
    @classmethod
    def _non_negative(cls, v: float) -> float:
        if v < 0:
            raise ValueError(f"must be >= 0, got {v}")
        return v

    @field_validator("data_workers")
    @classmethod
    def _workers(cls, v: int | str) -> int | str:
        if v != "auto" and v < 0:
            raise ValueError(f"must be >= 0 or 'auto', got {v}")
        return v

    @model_validator(mode="after")
    def _schedule(self) -> TrainConfig:
        if self.warmup_steps and self.lr_schedule == "constant":
            raise ValueError("warmup_steps needs lr_schedule 'cosine'")
        if self.warmup_steps >= self.max_steps and self.lr_schedule == "cosine":
            raise ValueError(f"warmup_steps ({self.warmup_steps}) must be below max_steps "
                             f"({self.max_steps})")
        return self

    @model_validator(mode="after")
    def _zero_stage(self) -> TrainConfig:
        if self.zero_stage == "auto":  # resolved here, so the run's config records the stage
            self.zero_stage = 0 if self.num_workers == 1 else 1
        return self

    @model_validator(mode="after")
    def _method(self) -> TrainConfig:
        try:
            self.method_spec()  # unknown methods and keys fail here, naming them
        except MethodConfigError as exc:
            raise ValueError(exc.problem) from None
        return self

    @property
    def run_dir(self) -> Path:
        """The run's folder, ``storage_path/name`` (absolute)."""
        return Path(self.storage_path).resolve() / self.name

    def method_spec(self) -> MethodConfig:
        """The method's full, validated config."""
        return method_config(self.method, self.method_config, prefix="method_config.")


# Run settings per preset; each method adds its own (``Method.presets``) on top.
RUN_PRESETS: dict[str, dict[str, Any]] = {
    # seconds on a laptop CPU: a tiny model, a few steps; for tests and for trying the stack
    "smoke": {"shards": "shards/out/smoke", "batch_size": 4, "max_steps": 6, "val_every": 3,
              "val_batches": 1, "checkpoint_every": 3, "log_every": 1},
    # a few CPU minutes on the demo shards: small enough for `make demo`
    "demo": {"shards": "shards/out/demo", "batch_size": 8, "max_steps": 200, "lr": 3e-4,
             "val_every": 100, "val_batches": 2, "checkpoint_every": 100, "log_every": 10},
    # the published configuration, for a GPU cluster; the method's preset sets the rest
    "paper": {"checkpoint_every": 1000, "log_every": 50},
}


def resolve_config(
    preset: str | None = None,
    file_config: dict[str, Any] | None = None,
    overrides: dict[str, Any] | None = None,
    *,
    source: str | Path | None = None,
) -> TrainConfig:
    """Preset (run's, then the method's) < ``file_config`` < ``overrides``, merged key by
    key; raises :class:`~adsys.errors.InputError` in one line (naming ``source``, the file)
    when a key or value is wrong."""
    if preset is not None and preset not in PRESET_NAMES:
        raise InputError(None, f"unknown preset {preset!r}", f"use one of {PRESET_NAMES}")
    name = (overrides or {}).get("method") or (file_config or {}).get("method") or DEFAULT_METHOD
    try:
        presets = method_class(name).presets
    except UnknownNameError as exc:
        raise InputError(source, str(exc), "pick a registered method (--method)") from None
    layers = [RUN_PRESETS[preset], presets.get(preset, {})] if preset else []
    try:
        return TrainConfig.model_validate(deep_merge(*layers, file_config, overrides))
    except ValidationError as exc:
        raise InputError(source, error_line(exc), "correct the setting named above") from None
