"""The exported model: ``model.safetensors`` (EMA weights) + ``config.json``.

Inference loads it with :func:`load_exported` — no DeepSpeed, no pickle: the config rebuilds
the method exactly (diffusers-style) and safetensors holds the weights.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from adsys import __version__
from adsys.methods import build_method

WEIGHTS = "model.safetensors"
CONFIG = "config.json"


def export_model(
    out_dir: str | Path,
    method_name: str,
    method_config: dict[str, Any],
    state: dict[str, torch.Tensor],
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write weights and config atomically (temp + rename) into ``out_dir``; returns it."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".tmp-{WEIGHTS}"
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp))
    os.replace(tmp, out / WEIGHTS)
    cfg = {
        "method": method_name,
        "config": method_config,
        "adsys_version": __version__,
        **(extra or {}),
    }
    tmp = out / f".tmp-{CONFIG}"
    tmp.write_text(json.dumps(cfg, indent=2, sort_keys=True))
    os.replace(tmp, out / CONFIG)
    return out


def load_exported(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """(method in eval mode, its config.json) from an exported model folder."""
    path = Path(path)
    cfg = json.loads((path / CONFIG).read_text())
    method = build_method(cfg["method"], cfg["config"])
    method.load_state_dict(load_file(str(path / WEIGHTS), device=str(device)))
    return method.to(device).eval(), cfg
