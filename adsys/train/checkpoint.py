"""Training checkpoints: DeepSpeed engine state + EMA (+ its best copy) + step + RNG, one
folder per save.

Every rank writes into its own local folder and hands it to ``ray.train.report``; Ray merges
the ranks' files into one checkpoint. Nothing here is pickled by adsys: our own state goes to
safetensors (tensors) and JSON; DeepSpeed's files are its own format.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from adsys.train.ema import EMA

TAG = "engine"


@dataclass
class TrainerState:
    """Loop counters that must survive a restart."""

    step: int = 0
    best_val: float = float("inf")
    best_step: int | None = None
    evals_without_improvement: int = 0


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
        (folder / "train_config.json").write_text(json.dumps(config, indent=2))


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
