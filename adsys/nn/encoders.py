"""Image encoders: a ResNet (one input channel → a d-dimensional vector, global pool + linear)
and CondDiff's semantic encoder of a latent volume.

Written here because torchvision/timm do not import beside the CPU torch build on our
machines. Depth 50 (bottleneck blocks, as cDDPM's timm ``resnet50``) by default; 18 and 34
(basic blocks) for smaller models. ``dims`` = 2 for slices, 3 for volumes.
"""

from __future__ import annotations

import torch
from pydantic import field_validator
from torch import nn

from adsys.config import StrictModel
from adsys.nn.layers import batch_norm_nd, conv_nd, normalization

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


class SemanticEncoderConfig(StrictModel):
    """CondDiff's semantic encoder (a DiffAE-style half UNet) on a latent volume.

    Defaults are the code's: 3 input channels (the latent), 32 base channels, mults
    (1, 2, 2, 2), downsampling only in the last two axes, an output map of ``out_channels``
    × ``pool_depth`` × 1 × 1 flattened to ``out_dim`` = 64 · 20 = 1280 (at 160³ the latent's
    first axis is 20, so the first axis is not pooled at all).
    """

    in_channels: int = 3
    model_channels: int = 32
    channel_mult: tuple[int, ...] = (1, 2, 2, 2)
    num_res_blocks: int = 2
    out_channels: int = 64
    pool_depth: int = 20

    @property
    def out_dim(self) -> int:
        return self.out_channels * self.pool_depth


class _PlainResBlock(nn.Module):
    """GroupNorm–SiLU–conv twice with a skip (a UNet ResBlock without an embedding)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            normalization(c_in), nn.SiLU(), nn.Conv3d(c_in, c_out, 3, padding=1),
            normalization(c_out), nn.SiLU(), nn.Conv3d(c_out, c_out, 3, padding=1),
        )  # fmt: skip
        self.skip = nn.Identity() if c_in == c_out else nn.Conv3d(c_in, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.body(x)


class SemanticEncoder(nn.Module):
    """(B, in_channels, D, H, W) → (B, out_dim): residual levels, each but the last halving
    H and W (average pooling (1, 2, 2)), then GroupNorm, SiLU, adaptive average pooling to
    (``pool_depth``, 1, 1) and a 1×1 conv to ``out_channels``."""

    def __init__(self, config: SemanticEncoderConfig) -> None:
        super().__init__()
        self.config = c = config
        layers: list[nn.Module] = [nn.Conv3d(c.in_channels, c.model_channels, 3, padding=1)]
        ch = c.model_channels
        for level, mult in enumerate(c.channel_mult):
            for _ in range(c.num_res_blocks):
                layers.append(_PlainResBlock(ch, mult * c.model_channels))
                ch = mult * c.model_channels
            if level != len(c.channel_mult) - 1:
                layers.append(nn.AvgPool3d((1, 2, 2), ceil_mode=True))
        layers += [normalization(ch), nn.SiLU(), nn.AdaptiveAvgPool3d((c.pool_depth, 1, 1)),
                   nn.Conv3d(ch, c.out_channels, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten(1)
