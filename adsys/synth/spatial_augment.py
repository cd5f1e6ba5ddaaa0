"""DISYRE's training augmentation (implementations.md §4.2) as an online corruption.

Per item, in the public code's order (batchgenerators there, torchio's deterministic
transforms and torch here), each with its own probability:

1. elastic deformation (p 0.1): a 7-point-per-axis B-spline grid (4 along a 2D slice's
   singleton axis, which does not move), displacements uniform in ±a·(grid spacing),
   a ~ U(0, 0.25) (the code's deformation scale (0, 0.25));
2. rotation by U(±15°) in the axial plane (p 0.1) and scaling by U(0.75, 1.25) (p 0.1),
   one affine about the centre, cubic B-spline, zero padding;
3. mirroring of each axis with p 0.5;
4. multiplicative brightness U(0.9, 1.1) (p 0.15);
5. gamma x^γ, γ ~ U(0.5, 2) (p 0.15), then inverted gamma 1 − (1 − x)^γ (p 0.15);
6. Gaussian noise, variance U(0, 0.05) (p 0.15);
7. Gaussian blur σ ~ U(0.5, 1.5) px per in-plane axis (p 0.15);
8. clip to [0, 1].

Steps 1–3 move anatomy: the brain mask goes through them too (nearest neighbour) and is
returned, so a following anomaly stage (:class:`adsys.synth.corruption.Chain`) places its
anomalies in the moved brain. The output is still a healthy image (``healthy``): the anomaly
mask is empty. Each item's record holds its draws (``None`` where a step did not fire), and
:meth:`SpatialAugmentation.replay` applies them without drawing. 2D items (1, x, y) go to
torchio as (1, x, y, 1) volumes.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torchio as tio

from adsys.config import StrictModel
from adsys.seeding import as_generator
from adsys.synth.corruption import Corruption, CorruptionResult, register_corruption

__all__ = ["SpatialAugmentation", "SpatialAugmentationOptions"]

_CONTROL_POINTS = 7
_FLAT_CONTROL_POINTS = 4  # torchio's minimum, along a 2D item's singleton axis


class SpatialAugmentationOptions(StrictModel):
    """Probabilities of each step (module doc; the public code's by default)."""

    elastic: float = 0.1
    rotation: float = 0.1
    scaling: float = 0.1
    mirror: float = 0.5
    brightness: float = 0.15
    gamma: float = 0.15
    inverted_gamma: float = 0.15
    noise: float = 0.15
    blur: float = 0.15


def _control_points(shape: tuple[int, ...], magnitude: float, seed: int) -> np.ndarray:
    """The elastic grid's displacements (px) for a (x, y, z) volume, from its record."""
    flat = shape[2] == 1
    counts = (_CONTROL_POINTS, _CONTROL_POINTS, _FLAT_CONTROL_POINTS if flat else _CONTROL_POINTS)
    spacing = [n / (c - 3) for n, c in zip(shape, counts, strict=True)]  # cubic B-spline
    u = torch.rand((*counts, 3), generator=as_generator(seed), dtype=torch.float64) * 2 - 1
    points = u.numpy() * magnitude * np.array(spacing)
    if flat:
        points[..., 2] = 0.0
    return points


def _augment(
    image: torch.Tensor, mask: torch.Tensor, p: dict[str, Any]
) -> tuple[torch.Tensor, torch.Tensor]:
    """One item (1, *spatial) and its mask through the steps ``p`` records (module doc)."""
    flat = image.ndim == 3
    subject = tio.Subject(
        image=tio.ScalarImage(tensor=(image[..., None] if flat else image).float()),
        mask=tio.LabelMap(tensor=(mask[..., None] if flat else mask).to(torch.uint8)),
    )
    shape = tuple(subject["image"].data.shape[1:])
    steps: list[tio.Transform] = []
    if p["elastic"] is not None:
        points = _control_points(shape, p["elastic"]["magnitude"], p["elastic"]["seed"])
        steps.append(tio.ElasticDeformation(
            control_points=points, max_displacement=tuple(np.abs(points).max((0, 1, 2))),
            image_interpolation="bspline", copy=False))
    if p["rotation"] is not None or p["scale"] is not None:
        s, angle = p["scale"] or 1.0, p["rotation"] or 0.0
        steps.append(tio.Affine(scales=(s, s, 1.0 if flat else s), degrees=(0, 0, angle),
                                translation=(0, 0, 0), default_pad_value=0,
                                image_interpolation="bspline", copy=False))
    if p["flip"]:
        steps.append(tio.Flip(axes=tuple(p["flip"]), copy=False))
    if steps:
        subject = tio.Compose(steps, copy=False)(subject)
    x = subject["image"].data.clamp(0, 1)
    if p["brightness"] is not None:
        x = x * p["brightness"]
    if p["gamma"] is not None:
        x = x.clamp(0, 1) ** p["gamma"]
    if p["inverted_gamma"] is not None:
        x = 1 - (1 - x.clamp(0, 1)) ** p["inverted_gamma"]
    if p["noise"] is not None:
        x = tio.Noise(mean=0.0, std=math.sqrt(p["noise"]["variance"]), seed=p["noise"]["seed"],
                      copy=False)(tio.ScalarImage(tensor=x)).data
    if p["blur"] is not None:
        sigma = p["blur"]
        x = tio.Blur(std=(sigma, sigma, 0.0 if flat else sigma), copy=False)(
            tio.ScalarImage(tensor=x)).data
    m = subject["mask"].data
    if flat:
        x, m = x[..., 0], m[..., 0]
    return x.clamp(0, 1).to(image.dtype), m.to(mask.dtype)


@register_corruption("spatial_augmentation")
class SpatialAugmentation(Corruption):
    """See the module doc. Options: :class:`SpatialAugmentationOptions`."""

    Options = SpatialAugmentationOptions
    healthy = True

    def _draw(self, dims: int, g: torch.Generator) -> dict[str, Any]:
        """One item's draws (module doc): ``None`` for steps that do not fire."""
        o = self.options

        def fires(prob: float) -> bool:
            return torch.rand((), generator=g, dtype=torch.float64).item() < prob

        def uniform(lo: float, hi: float) -> float:
            return lo + (hi - lo) * torch.rand((), generator=g, dtype=torch.float64).item()

        def seed() -> int:
            return int(torch.randint(0, 2**62, (), generator=g))

        return {
            "elastic": {"magnitude": uniform(0, 0.25), "seed": seed()} if fires(o.elastic)
            else None,
            "rotation": uniform(-15, 15) if fires(o.rotation) else None,
            "scale": uniform(0.75, 1.25) if fires(o.scaling) else None,
            "flip": [a for a in range(dims) if fires(o.mirror)],
            "brightness": uniform(0.9, 1.1) if fires(o.brightness) else None,
            "gamma": uniform(0.5, 2.0) if fires(o.gamma) else None,
            "inverted_gamma": uniform(0.5, 2.0) if fires(o.inverted_gamma) else None,
            "noise": {"variance": uniform(0, 0.05), "seed": seed()} if fires(o.noise) else None,
            "blur": uniform(0.5, 1.5) if fires(o.blur) else None,
        }  # fmt: skip

    def __call__(
        self, images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator
    ) -> CorruptionResult:
        params = [self._draw(images.ndim - 2, generator) for _ in range(len(images))]
        return self.replay(images, masks, params)

    def replay(
        self, images: torch.Tensor, masks: torch.Tensor, params: list[dict[str, Any]]
    ) -> CorruptionResult:
        out, moved = torch.empty_like(images), torch.empty_like(masks)
        for i, p in enumerate(params):
            out[i], moved[i] = _augment(images[i], masks[i], p)
        return CorruptionResult(out, torch.zeros_like(images, dtype=torch.float32), params,
                                masks=moved)
