"""Several folds of one method as one job: concurrent Ray Train runs sharing the cluster.

A method with folds (``Method.num_folds`` > 0, its config key ``fold``) trains one model per
fold; ``--folds all`` (or ``0,3,7``) runs them as one job. Each fold is a complete training
run of its own — ``storage_path/name/fold-K``, its own checkpoints, logs and export — started
from a Ray task, so the folds' ``TorchTrainer`` runs share the cluster's resources (as many
run at once as the cluster has room for; the rest wait for resources). A fold that fails does
not stop the others: the job reports it and exits non-zero; re-running the same command
resumes the unfinished folds from their checkpoints and leaves finished ones at their last
step. The job writes ``storage_path/name/ensemble.json`` with the exports of every finished
fold in that folder (earlier jobs' included), which inference takes as one ensemble
(``--model storage_path/name``).
"""

from __future__ import annotations

import logging
from typing import Any

from adsys.config import deep_merge
from adsys.errors import InputError
from adsys.methods import method_class
from adsys.train.config import TrainConfig

__all__ = ["fold_configs", "parse_folds", "run_folds", "train_in_task"]

log = logging.getLogger(__name__)


def parse_folds(text: str, method: str) -> list[int]:
    """``all`` or comma-separated fold indices (in the order given) → folds of ``method``;
    errors name a method without folds, or the bad entry and the valid range."""
    n = method_class(method).num_folds
    if n == 0:
        raise InputError(None, f"method {method!r} has no folds", "drop --folds")
    if text.strip().lower() == "all":
        return list(range(n))
    folds: list[int] = []
    for part in text.split(","):
        entry = part.strip()
        if not entry.isdigit() or int(entry) >= n:
            raise InputError(None, f"--folds {text!r}: {entry!r} is not a fold of {method}",
                             f"give 'all' or comma-separated integers in 0..{n - 1}, e.g. 0,3,7")
        if int(entry) in folds:
            raise InputError(None, f"--folds {text!r}: fold {entry} is listed twice",
                             "list each fold once")
        folds.append(int(entry))
    return folds


def fold_configs(cfg: TrainConfig, folds: list[int]) -> dict[int, TrainConfig]:
    """One run config per fold: ``method_config.fold`` set, run folder
    ``cfg.run_dir/fold-K``, and the fold in the seed (each fold draws its own data order,
    noise and corruptions)."""
    base = cfg.model_dump(mode="json")
    return {
        k: TrainConfig.model_validate(deep_merge(base, {
            "method_config": {"fold": k}, "storage_path": str(cfg.run_dir),
            "name": f"fold-{k}", "seed": cfg.seed + k}))  # fmt: skip
        for k in folds
    }


def train_in_task(cfg_json: dict[str, Any], fault_step: int | None = None) -> str | None:
    """One training run (a fold's, a benchmark's) in a Ray task: ``None`` when it finished,
    else why it failed (never raises, so one failed run leaves the others going)."""
    from adsys.train.job import run_training

    cfg = TrainConfig.model_validate(cfg_json)
    try:
        result = run_training(cfg, fault_step=fault_step)
    except Exception as exc:  # isolated: reported with the fold, the others go on
        return f"{type(exc).__name__}: {exc}"
    if result.error is not None:
        return f"{type(result.error).__name__}: {result.error}"
    return None


def run_folds(
    cfg: TrainConfig, folds: list[int], *, faults: dict[int, int] | None = None
) -> dict[int, str | None]:
    """Train ``folds`` concurrently (Ray must be initialised); returns fold → ``None``
    (finished) or the reason it failed, and writes ``cfg.run_dir/ensemble.json``.
    ``faults``: fold → step of a test-only injected crash (see the training loop)."""
    import ray

    from adsys.methods.export import write_ensemble
    from adsys.train.checkpoint import check_resume
    from adsys.train.job import torch_extensions_dir

    configs = fold_configs(cfg, folds)
    for c in configs.values():
        check_resume(c)  # every fold refused up front, before any starts
    env = {"TORCH_EXTENSIONS_DIR": torch_extensions_dir()}
    fit = ray.remote(num_cpus=0, max_retries=0)(train_in_task).options(
        runtime_env={"env_vars": env})  # fmt: skip
    refs = {k: fit.remote(c.model_dump(mode="json"), (faults or {}).get(k))
            for k, c in configs.items()}
    outcome: dict[int, str | None] = {}
    for k, ref in refs.items():
        try:
            outcome[k] = ray.get(ref)
        except Exception as exc:  # the task itself died
            outcome[k] = f"{type(exc).__name__}: {exc}"
        log.info("fold %d: %s", k, outcome[k] or "finished")
    failed = {configs[k].run_dir for k, why in outcome.items() if why is not None}
    finished = [p.parent for p in sorted(cfg.run_dir.glob("fold-*/export/config.json"))
                if p.parent.parent not in failed]  # earlier jobs' folds count too
    write_ensemble(cfg.run_dir, finished,
                   {f"fold-{k}": why for k, why in outcome.items() if why is not None})
    return outcome
