"""The exported model: ``model.safetensors`` (weights) + ``config.json``.

``config.json`` holds the method's name and its full config — data spec and inference recipe
included — plus the training run's record, so :func:`load_exported` rebuilds the method
exactly (diffusers-style) with no DeepSpeed and no pickle; safetensors holds the weights.
Inference may override the recipe (``inference``); the override is validated against the
method's config like any other key.

An **ensemble folder** holds ``ensemble.json`` — its member export folders, relative to it,
and the members that failed — as a multi-fold training job writes it
(:mod:`adsys.train.folds`); :func:`expand_models` turns it into its members wherever a model
folder is expected, so ``--model runs/NAME`` runs the whole ensemble.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from adsys import __version__
from adsys.config import deep_merge
from adsys.errors import InputError
from adsys.io.atomic import atomic_path, write_json_atomic
from adsys.methods import Method, MethodConfig, MethodConfigError, build_method, method_config

__all__ = ["CONFIG", "ENSEMBLE", "WEIGHTS", "expand_models", "export_model",
           "exported_config", "load_exported", "read_record", "write_ensemble"]

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
ENSEMBLE = "ensemble.json"


def export_model(
    out_dir: str | Path,
    method: str,
    config: MethodConfig | dict[str, Any],
    state: dict[str, torch.Tensor],
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write weights and config atomically (temp + rename) into ``out_dir``; returns it."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / WEIGHTS) as tmp:
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp))
    if isinstance(config, MethodConfig):
        config = config.model_dump(mode="json")
    record = {"method": method, "config": config, "adsys_version": __version__, **(extra or {})}
    write_json_atomic(out / CONFIG, record)
    return out


def write_ensemble(folder: str | Path, members: list[Path], failed: dict[str, str]) -> Path:
    """Write ``folder/ensemble.json``: ``members`` (export folders, stored relative to
    ``folder``) and ``failed`` (member name → reason); returns its path."""
    folder = Path(folder).resolve()
    record = {"members": sorted(str(Path(m).resolve().relative_to(folder)) for m in members),
              "failed": failed}
    write_json_atomic(folder / ENSEMBLE, record)
    return folder / ENSEMBLE


def expand_models(paths: list[Path]) -> list[Path]:
    """Model folders with every ensemble folder replaced by its members (in order); a folder
    that is neither an export nor an ensemble is kept (and refused when it is read)."""
    out: list[Path] = []
    for path in paths:
        file = Path(path) / ENSEMBLE
        if (Path(path) / CONFIG).is_file() or not file.is_file():
            out.append(Path(path))
            continue
        record = json.loads(file.read_text(encoding="utf-8"))
        if not record["members"]:
            raise InputError(path, f"the ensemble has no trained member ({ENSEMBLE}; failed: "
                             f"{record['failed']})", "re-run its training job to finish them")
        for member in record["members"]:
            if Path(member).is_absolute() or ".." in Path(member).parts:
                raise InputError(file, f"member {member!r} is not a folder inside the "
                                 "ensemble", "rewrite it with the training job")
            out.append(Path(path) / member)
    return out


def read_record(path: str | Path) -> dict[str, Any]:
    """An exported model folder's ``config.json``; a clear error when it is not one."""
    file = Path(path) / CONFIG
    if not file.is_file():
        raise InputError(path, f"not an exported model folder ({CONFIG} missing)",
                         "pass the export/ folder of a training run (--model)")
    return json.loads(file.read_text(encoding="utf-8"))


def exported_config(
    record: dict[str, Any], inference: dict[str, Any] | None = None, where: str | Path = ""
) -> MethodConfig:
    """The method config of an exported model's record, with ``inference`` overrides of its
    recipe merged in; errors name the model folder ``where`` and the key."""
    config = deep_merge(record["config"], {"inference": inference} if inference else None)
    try:
        return method_config(record["method"], config)
    except MethodConfigError as exc:
        raise InputError(where, exc.problem,
                         "correct the inference setting named above") from None


def load_exported(
    path: str | Path,
    device: str | torch.device = "cpu",
    inference: dict[str, Any] | None = None,
) -> tuple[Method, dict[str, Any]]:
    """(method in eval mode, its ``config.json`` record) from an exported model folder;
    ``inference`` overrides its recipe (see :func:`exported_config`)."""
    record = read_record(path)
    method = build_method(record["method"], exported_config(record, inference, path))
    method.load_state_dict(load_file(str(Path(path) / WEIGHTS), device=str(device)))
    return method.to(device).eval(), record
