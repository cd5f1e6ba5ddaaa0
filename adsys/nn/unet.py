"""ADM-style UNet for 2D and 3D (one implementation, ``dims`` a parameter).

Follows guided-diffusion's ``UNetModel`` as cDDPM's code runs it: ResBlocks with GroupNorm(32)
and SiLU, ResBlock up/down sampling (avg-pool / nearest ×2), attention at the chosen
downsample rates plus the middle block, a zero-initialised output conv, and scale-shift
(FiLM) conditioning in every ResBlock: ``h = GN(h)·(1 + s) + b`` with ``(s, b)`` a linear map of
the embedding. A conditioning vector (``cond_dim``) enters in one of two ways (``cond_mode``):

* ``concat`` — embedded by an MLP and concatenated with the time embedding, so one FiLM sees
  both (cDDPM concatenates its encoder vector);
* ``film`` — a second FiLM in every ResBlock after the time one, ``h·(1 + s_c) + b_c`` with
  ``(s_c, b_c) = Linear(SiLU(cond))`` (CondDiff's semantic-encoder conditioning, DiffAE-style).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import field_validator
from torch import nn
from torch.utils.checkpoint import checkpoint

from adsys.config import StrictModel
from adsys.nn.layers import avg_pool_nd, conv_nd, normalization, timestep_embedding, zero_module


class UNetConfig(StrictModel):
    """Constructor arguments of :class:`UNet`; saved as ``config.json`` with a trained model.

    Defaults are cDDPM's: 128 channels, mult (1, 2, 2), 3 res blocks, attention only in the
    middle block (cDDPM's attention resolutions never match its downsample rates).
    """

    dims: int = 2
    in_channels: int = 1
    out_channels: int = 1
    model_channels: int = 128
    channel_mult: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 3
    attention_resolutions: tuple[int, ...] = ()
    num_head_channels: int = 64
    dropout: float = 0.0
    cond_dim: int | None = None
    cond_mode: Literal["concat", "film"] = "concat"
    gradient_checkpointing: bool = False

    @field_validator("dims")
    @classmethod
    def _dims(cls, v: int) -> int:
        if v not in (2, 3):
            raise ValueError(f"dims must be 2 or 3, got {v}")
        return v


class ResBlock(nn.Module):
    """Residual block with FiLM from the embedding (and a second FiLM from the conditioning
    vector when ``cond_dim``); optional down/up sampling inside."""

    def __init__(
        self,
        channels: int,
        emb_dim: int,
        out_channels: int,
        dims: int,
        dropout: float = 0.0,
        up: bool = False,
        down: bool = False,
        cond_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.in_norm = normalization(channels)
        self.in_conv = conv_nd(dims, channels, out_channels, 3, padding=1)
        self.up, self.down, self.dims = up, down, dims
        self.emb = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, 2 * out_channels))
        self.cond = (
            nn.Sequential(nn.SiLU(), nn.Linear(cond_dim, 2 * out_channels)) if cond_dim else None
        )
        self.out_norm = normalization(out_channels)
        self.out = nn.Sequential(
            nn.SiLU(),
            nn.Dropout(dropout),
            zero_module(conv_nd(dims, out_channels, out_channels, 3, padding=1)),
        )
        self.skip = (
            nn.Identity() if out_channels == channels else conv_nd(dims, channels, out_channels, 1)
        )

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        if self.up:
            return F.interpolate(x, scale_factor=2, mode="nearest")
        if self.down:
            return avg_pool_nd(self.dims, kernel_size=2, stride=2)(x)
        return x

    def forward(
        self, x: torch.Tensor, emb: torch.Tensor, cond: torch.Tensor | None = None
    ) -> torch.Tensor:
        h = F.silu(self.in_norm(x))
        h = self.in_conv(self._resize(h))
        x = self._resize(x)
        view = (slice(None), slice(None)) + (None,) * self.dims
        h = self.out_norm(h)
        for film, vector in ((self.emb, emb), (self.cond, cond)):
            if film is not None:
                scale, shift = film(vector).type(h.dtype).chunk(2, dim=1)
                h = h * (1 + scale[view]) + shift[view]
        return self.skip(x) + self.out(h)


class AttentionBlock(nn.Module):
    """Multi-head self-attention over all positions (scaled_dot_product_attention)."""

    def __init__(self, channels: int, num_head_channels: int) -> None:
        super().__init__()
        self.heads = max(1, channels // num_head_channels)
        self.norm = normalization(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj = zero_module(nn.Conv1d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *spatial = x.shape
        qkv = self.qkv(self.norm(x).reshape(b, c, -1))  # (B, 3C, N)
        q, k, v = qkv.reshape(b, 3, self.heads, c // self.heads, -1).transpose(-1, -2).unbind(1)
        h = F.scaled_dot_product_attention(q, k, v)  # (B, heads, N, C/heads)
        h = h.transpose(-1, -2).reshape(b, c, -1)
        return x + self.proj(h).reshape(b, c, *spatial)


class _Stage(nn.ModuleList):
    """A sequence of layers where ResBlocks receive the embedding (and FiLM conditioning)."""

    def forward(
        self, x: torch.Tensor, emb: torch.Tensor, cond: torch.Tensor | None = None
    ) -> torch.Tensor:
        for layer in self:
            x = layer(x, emb, cond) if isinstance(layer, ResBlock) else layer(x)
        return x


class UNet(nn.Module):
    """``forward(x, t, cond=None)``: x (B, C_in, *spatial), t (B,) → (B, C_out, *spatial).

    Spatial sizes must be divisible by ``2 ** (len(channel_mult) - 1)``. ``cond`` (B, cond_dim)
    is required when the config has ``cond_dim``.
    """

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = c = config
        mc, dims = c.model_channels, c.dims
        temb = 4 * mc
        self.time_embed = nn.Sequential(nn.Linear(mc, temb), nn.SiLU(), nn.Linear(temb, temb))
        self.cond_embed = None
        emb_dim = temb
        if c.cond_dim and c.cond_mode == "concat":
            self.cond_embed = nn.Sequential(
                nn.Linear(c.cond_dim, temb), nn.SiLU(), nn.Linear(temb, temb)
            )
            emb_dim = 2 * temb
        film_dim = c.cond_dim if c.cond_mode == "film" else None

        def res(ch_in: int, ch_out: int, **kw) -> ResBlock:
            return ResBlock(ch_in, emb_dim, ch_out, dims, c.dropout, cond_dim=film_dim, **kw)

        self.input_blocks = nn.ModuleList(
            [_Stage([conv_nd(dims, c.in_channels, mc, 3, padding=1)])]
        )
        skip_channels = [mc]
        ch, ds = mc, 1
        for level, mult in enumerate(c.channel_mult):
            for _ in range(c.num_res_blocks):
                layers: list[nn.Module] = [res(ch, mult * mc)]
                ch = mult * mc
                if ds in c.attention_resolutions:
                    layers.append(AttentionBlock(ch, c.num_head_channels))
                self.input_blocks.append(_Stage(layers))
                skip_channels.append(ch)
            if level != len(c.channel_mult) - 1:
                self.input_blocks.append(_Stage([res(ch, ch, down=True)]))
                skip_channels.append(ch)
                ds *= 2
        self.middle_block = _Stage(
            [res(ch, ch), AttentionBlock(ch, c.num_head_channels), res(ch, ch)]
        )
        self.output_blocks = nn.ModuleList()
        for level, mult in list(enumerate(c.channel_mult))[::-1]:
            for i in range(c.num_res_blocks + 1):
                layers = [res(ch + skip_channels.pop(), mult * mc)]
                ch = mult * mc
                if ds in c.attention_resolutions:
                    layers.append(AttentionBlock(ch, c.num_head_channels))
                if level and i == c.num_res_blocks:
                    layers.append(res(ch, ch, up=True))
                    ds //= 2
                self.output_blocks.append(_Stage(layers))
        self.out = nn.Sequential(
            normalization(ch),
            nn.SiLU(),
            zero_module(conv_nd(dims, ch, c.out_channels, 3, padding=1)),
        )

    def _run(
        self, stage: _Stage, h: torch.Tensor, emb: torch.Tensor, film: torch.Tensor | None
    ) -> torch.Tensor:
        if self.config.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(stage, h, emb, film, use_reentrant=False)
        return stage(h, emb, film)

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None
    ) -> torch.Tensor:
        emb = self.time_embed(timestep_embedding(t, self.config.model_channels))
        if (cond is None) != (self.config.cond_dim is None):
            raise ValueError("this UNet was built with cond_dim; pass a conditioning vector"
                             if cond is None else
                             "this UNet has no cond_dim; it cannot take a conditioning vector")
        film = cond if self.config.cond_mode == "film" else None
        if self.cond_embed is not None:
            emb = torch.cat([emb, self.cond_embed(cond)], dim=1)
        skips = []
        h = x
        for stage in self.input_blocks:
            h = self._run(stage, h, emb, film)
            skips.append(h)
        h = self._run(self.middle_block, h, emb, film)
        for stage in self.output_blocks:
            h = self._run(stage, torch.cat([h, skips.pop()], dim=1), emb, film)
        return self.out(h)
