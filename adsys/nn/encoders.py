"""ResNet image encoder: one input channel → a d-dimensional vector (global pool + linear).

Written here because torchvision/timm do not import beside the CPU torch build on our
machines. Depth 50 (bottleneck blocks, as cDDPM's timm ``resnet50``) by default; 18 and 34
(basic blocks) for smaller models. ``dims`` = 2 for slices, 3 for volumes.
"""

from __future__ import annotations

import torch
from pydantic import field_validator
from torch import nn

from adsys.config import StrictModel
from adsys.nn.layers import batch_norm_nd, conv_nd

_LAYOUT = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
}


class ResNetEncoderConfig(StrictModel):
    depth: int = 50
    in_channels: int = 1
    out_dim: int = 512
    width: int = 64
    dims: int = 2

    @field_validator("depth")
    @classmethod
    def _depth(cls, v: int) -> int:
        if v not in _LAYOUT:
            raise ValueError(f"depth must be one of {sorted(_LAYOUT)}, got {v}")
        return v


class _Block(nn.Module):
    def __init__(self, kind: str, c_in: int, width: int, stride: int, dims: int) -> None:
        super().__init__()
        expansion = 4 if kind == "bottleneck" else 1
        c_out = width * expansion
        if kind == "bottleneck":
            layers = [
                conv_nd(dims, c_in, width, 1, bias=False),
                batch_norm_nd(dims, width),
                nn.ReLU(True),
                conv_nd(dims, width, width, 3, stride, 1, bias=False),
                batch_norm_nd(dims, width),
                nn.ReLU(True),
                conv_nd(dims, width, c_out, 1, bias=False),
                batch_norm_nd(dims, c_out),
            ]
        else:
            layers = [
                conv_nd(dims, c_in, width, 3, stride, 1, bias=False),
                batch_norm_nd(dims, width),
                nn.ReLU(True),
                conv_nd(dims, width, c_out, 3, 1, 1, bias=False),
                batch_norm_nd(dims, c_out),
            ]
        nn.init.zeros_(layers[-1].weight)  # zero-init last BN: each block starts as identity
        self.body = nn.Sequential(*layers)
        self.skip = (
            nn.Identity()
            if stride == 1 and c_in == c_out
            else nn.Sequential(
                conv_nd(dims, c_in, c_out, 1, stride, bias=False), batch_norm_nd(dims, c_out)
            )
        )
        self.out_channels = c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.skip(x))


class ResNetEncoder(nn.Module):
    """(B, in_channels, *spatial) → (B, out_dim)."""

    def __init__(self, config: ResNetEncoderConfig) -> None:
        super().__init__()
        self.config = c = config
        kind, counts = _LAYOUT[c.depth]
        pool = nn.MaxPool2d if c.dims == 2 else nn.MaxPool3d
        self.stem = nn.Sequential(
            conv_nd(c.dims, c.in_channels, c.width, 7, 2, 3, bias=False),
            batch_norm_nd(c.dims, c.width),
            nn.ReLU(True),
            pool(3, 2, 1),
        )
        blocks: list[nn.Module] = []
        ch = c.width
        for stage, n in enumerate(counts):
            for i in range(n):
                block = _Block(kind, ch, c.width * 2**stage, 2 if (i == 0 and stage) else 1, c.dims)
                blocks.append(block)
                ch = block.out_channels
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(ch, c.out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.blocks(self.stem(x))
        return self.head(h.flatten(2).mean(-1))
