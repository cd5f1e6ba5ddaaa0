"""Training checkpoints: DeepSpeed engine state + EMA (+ its best copy) + step + RNG, one
folder per save.

Every rank writes into its own local folder and hands it to ``ray.train.report``; Ray merges
the ranks' files into one checkpoint. Nothing here is pickled by adsys: our own state goes to
safetensors (tensors) and JSON; DeepSpeed's files are its own format. A run re-started in the
same ``storage_path/name`` resumes from its latest checkpoint (Ray Train finds it);
:func:`check_resume` first refuses one whose method, model config or ZeRO stage has changed.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from adsys.errors import InputError
from adsys.methods import method_config
from adsys.train.config import TrainConfig
from adsys.train.ema import EMA

TAG = "engine"
CONFIG_FILE = "train_config.json"


@dataclass
class TrainerState:
    """Loop counters that must survive a restart."""

    step: int = 0
    best_val: float = float("inf")
    best_step: int | None = None
    evals_without_improvement: int = 0
    val_smoothed: float | None = None  # moving average of the validation loss (val_smoothing)


def save_checkpoint(
    folder: Path,
    engine: Any,
    ema: EMA,
    generator: torch.Generator,
    state: TrainerState,
    rank: int,
    config: dict[str, Any],
) -> None:
    """Write this rank's share of a checkpoint into ``folder``."""
    engine.save_checkpoint(str(folder), tag=TAG)
    save_file({"rng": generator.get_state()}, str(folder / f"rng_rank{rank}.safetensors"))
    if rank == 0:
        save_file(ema.state_dict(), str(folder / "ema.safetensors"))
        if ema.best is not None:
            save_file(ema.best, str(folder / "best_ema.safetensors"))
        (folder / "trainer_state.json").write_text(json.dumps(asdict(state)))
        (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2))


def load_checkpoint(
    folder: Path, engine: Any, ema: EMA, generator: torch.Generator, rank: int
) -> TrainerState:
    """Restore engine (weights + optimizer), EMA (and its best copy, when kept), this rank's
    RNG and the loop counters."""
    engine.load_checkpoint(str(folder), tag=TAG)
    ema.load_state_dict(load_file(str(folder / "ema.safetensors")))
    if (folder / "best_ema.safetensors").is_file():
        ema.best = load_file(str(folder / "best_ema.safetensors"))
    generator.set_state(load_file(str(folder / f"rng_rank{rank}.safetensors"))["rng"])
    return TrainerState(**json.loads((folder / "trainer_state.json").read_text()))


def _differences(old: Any, new: Any, where: str) -> list[str]:
    """``where: old -> new`` for every leaf that differs between two JSON-like values."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [
            d
            for k in sorted(old.keys() | new.keys())
            for d in _differences(old.get(k), new.get(k), f"{where}.{k}")
        ]
    return [] if old == new else [f"{where}: {old!r} -> {new!r}"]


def check_resume(cfg: TrainConfig) -> None:
    """Refuse to resume ``cfg.run_dir`` when its checkpoints hold another method or method
    (model) config — their weights would not fit the model, or would silently train another
    one under the same name — or another ZeRO stage (DeepSpeed's optimizer-state files differ
    per stage; ``zero_stage: auto`` resolves per world size, so name the stage to resume).
    Schedule keys (``max_steps``, ``val_every``, ...) may change, e.g. to extend a finished
    run. A folder without checkpoints starts a new run."""
    saved = sorted(cfg.run_dir.glob(f"checkpoint_*/{CONFIG_FILE}"))
    if not saved:
        return
    old = json.loads(saved[-1].read_text())
    if old["method"] != cfg.method:
        problems = [f"method: {old['method']!r} -> {cfg.method!r}"]
    else:  # both in full: a key left at its default equals the same value given explicitly
        problems = _differences(
            method_config(cfg.method, old["method_config"]).model_dump(mode="json"),
            cfg.method_spec().model_dump(mode="json"),
            "method_config",
        )
    if old.get("zero_stage") != cfg.zero_stage:  # DeepSpeed lays out optimizer states per stage
        problems.append(f"zero_stage: {old.get('zero_stage')!r} -> {cfg.zero_stage!r}")
    if problems:
        raise InputError(
            cfg.run_dir,
            "this run's checkpoints were trained with another method, model config or ZeRO "
            f"stage, so it cannot resume with this one ({'; '.join(problems)})",
            f"train under a new --name (or --storage-path), or restore the run's settings "
            f"(recorded in {saved[-1]}); max_steps and other schedule keys may change",
        )
