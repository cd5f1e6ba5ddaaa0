"""Driver side of a training run: a resolved config → Ray Train ``TorchTrainer`` → the
exported model (:func:`adsys.train.config.resolve_config` resolves and validates it first)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from adsys.config import wants_gpu
from adsys.train.config import TrainConfig

log = logging.getLogger(__name__)


def torch_extensions_dir() -> str:
    """Where DeepSpeed's JIT-built ops are cached: ``$TORCH_EXTENSIONS_DIR``, else
    ``./.torch_extensions`` of the driver (passed to workers, so they build once)."""
    return os.environ.get("TORCH_EXTENSIONS_DIR", str(Path.cwd() / ".torch_extensions"))


def run_training(cfg: TrainConfig, *, fault_step: int | None = None):
    """Fit with Ray Train (Ray must be initialised) and return the ``ray.train.Result``.

    The run lives in ``storage_path/name``: Ray's checkpoints, our ``logs/`` (metrics.jsonl,
    tensorboard) and ``export/`` (model.safetensors + config.json). When that folder already
    holds checkpoints (a killed or finished run), training resumes from the latest one;
    :func:`~adsys.train.checkpoint.check_resume` refuses another method or model config.
    The ranks form one placement group, placed by ``cfg.placement_strategy``.
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from adsys.train.checkpoint import check_resume
    from adsys.train.loop import train_loop_per_worker

    check_resume(cfg)
    run_dir = cfg.run_dir
    gpu = wants_gpu(cfg.use_gpu, cfg.num_workers)
    env = {
        "TORCH_EXTENSIONS_DIR": torch_extensions_dir(),
        "OMP_NUM_THREADS": os.environ.get(
            "OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // cfg.num_workers))
        ),
    }
    if not gpu:
        env["DS_ACCELERATOR"] = "cpu"
    loop_config = {**cfg.model_dump(mode="json"), "run_dir": str(run_dir)}
    loop_config["shards"] = str(Path(cfg.shards).resolve())
    # the method's validated config: the driver has resolved what it must (relative paths)
    loop_config["method_config"] = cfg.method_spec().model_dump(mode="json")
    if fault_step is not None:
        loop_config["fault_step"] = fault_step
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        torch_config=TorchConfig(backend="nccl" if gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=gpu,
                                     placement_strategy=cfg.placement_strategy),
        run_config=RunConfig(
            name=cfg.name,
            storage_path=str(Path(cfg.storage_path).resolve()),
            failure_config=FailureConfig(max_failures=cfg.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.num_to_keep),
            worker_runtime_env={"env_vars": env},
        ),
    )
    result = trainer.fit()
    log.info("training finished: %s", run_dir)
    return result
