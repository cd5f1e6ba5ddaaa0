"""Small textured brain phantoms shared by the ICDM task tests."""

from __future__ import annotations

import torch


def brains(n: int = 3, size: int = 64, dims: int = 2, seed: int = 0):
    """(images, masks) (n, 1, *(size,)*dims): an ellipsoidal brain with smooth stripes and
    noise in [0.2, 0.9], background 0; each item a little different."""
    g = torch.Generator().manual_seed(seed)
    axes = torch.meshgrid(*[torch.arange(size, dtype=torch.float32)] * dims, indexing="ij")
    radii = [0.42, 0.36, 0.4][:dims]
    r = sum(((a - size / 2) / (rad * size)) ** 2 for a, rad in zip(axes, radii, strict=True))
    mask = (r < 1).float().expand(n, 1, *(size,) * dims).clone()
    phase = torch.rand(n, 1, *(1,) * dims, generator=g) * 6
    texture = 0.55 + 0.2 * torch.sin(axes[0] / 2.5 + phase) * torch.cos(axes[1] / 4)
    noise = 0.05 * torch.randn(n, 1, *(size,) * dims, generator=g)
    images = torch.where(mask > 0, (texture + noise).clamp(0.2, 0.9), 0.0)
    return images, mask
