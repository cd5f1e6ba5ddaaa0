"""Intensity augmentation as an online corruption (cDDPM's training augmentation).

torchio's ``RandomGamma`` (p 0.5), ``RandomBiasField`` (p 0.25), ``RandomBlur`` (p 0.25) and
``RandomGhosting`` (p 0.5) with torchio's default ranges, applied to each item in turn and
clamped to [0, 1]. It changes appearance, not anatomy: the anomaly mask is empty. Each item
records the deterministic transforms torchio applied (name and arguments), which replay it
exactly. 2D items are (1, x, y) slices, given to torchio as (1, x, y, 1) volumes; their
ghosting picks an in-plane axis (cDDPM augments whole volumes, where every axis is in plane).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torchio as tio

from adsys.config import StrictModel
from adsys.synth.corruption import Corruption, CorruptionResult, register_corruption

__all__ = ["IntensityAugmentation"]

_DROPPED_ARGS = {"include", "exclude", "copy"}


class IntensityOptions(StrictModel):
    """Probabilities of each transform (cDDPM's values by default)."""

    gamma: float = 0.5
    bias_field: float = 0.25
    blur: float = 0.25
    ghosting: float = 0.5


def _json(value: Any) -> Any:
    """torchio's recorded arguments as JSON values (numpy scalars, tuples → lists)."""
    if isinstance(value, dict):
        return {k: _json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _augment(item: torch.Tensor, transform: tio.Transform) -> tuple[torch.Tensor, tio.Subject]:
    """One item (1, *spatial) through ``transform``: (result clamped to [0, 1], torchio's
    subject with its history)."""
    volume = (item if item.ndim == 4 else item[..., None]).float()  # torchio's (1, x, y, z)
    res = transform(tio.Subject(image=tio.ScalarImage(tensor=volume)))
    data = res["image"].data
    return (data if item.ndim == 4 else data[..., 0]).clamp_(0, 1).to(item.dtype), res


def _record(seed: int, subject: tio.Subject) -> dict[str, Any]:
    """An item's replay record: its seed and the deterministic transforms applied."""
    return {"seed": seed, "transforms": [
        {"name": type(t).__name__,
         "args": _json({k: v for k, v in t._get_reproducing_arguments().items()
                        if k not in _DROPPED_ARGS})}
        for t in subject.history
    ]}  # fmt: skip


@register_corruption("intensity_augmentation")
class IntensityAugmentation(Corruption):
    """See the module doc. Options: :class:`IntensityOptions`."""

    Options = IntensityOptions
    healthy = True

    def _transform(self, dims: int) -> tio.Transform:
        o = self.options
        axes = (0, 1) if dims == 2 else (0, 1, 2)
        return tio.Compose([  # copy=False: each item is a fresh subject
            tio.RandomGamma(p=o.gamma, copy=False),
            tio.RandomBiasField(p=o.bias_field, copy=False),
            tio.RandomBlur(p=o.blur, copy=False),
            tio.RandomGhosting(p=o.ghosting, axes=axes, copy=False),
        ], copy=False)  # fmt: skip

    def __call__(
        self, images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator
    ) -> CorruptionResult:
        transform = self._transform(images.ndim - 2)
        seeds = torch.randint(0, 2**62, (len(images),), generator=generator).tolist()
        out, params = torch.empty_like(images), []
        with torch.random.fork_rng(devices=[]):  # torchio draws from torch's global RNG
            for i, (item, seed) in enumerate(zip(images, seeds, strict=True)):
                torch.default_generator.manual_seed(seed)
                out[i], subject = _augment(item, transform)
                params.append(_record(seed, subject))
        return CorruptionResult(out, torch.zeros_like(images, dtype=torch.float32), params)

    def replay(
        self, images: torch.Tensor, masks: torch.Tensor, params: list[dict[str, Any]]
    ) -> CorruptionResult:
        out = torch.empty_like(images)
        for i, (item, p) in enumerate(zip(images, params, strict=True)):
            transform = tio.Compose(
                [getattr(tio, t["name"])(**t["args"], copy=False) for t in p["transforms"]],
                copy=False,
            )
            out[i] = _augment(item, transform)[0]
        return CorruptionResult(out, torch.zeros_like(images, dtype=torch.float32), params)
