"""Exponential moving average of a model's weights (the weights we export)."""

from __future__ import annotations

import torch
from torch import nn


class EMA:
    """θ_ema ← d·θ_ema + (1 − d)·θ for parameters after each step; buffers are copied.

    The shadow is kept in float32 on the model's device; ``state_dict`` returns it in the
    model's own dtypes, ready for ``load_state_dict`` on a fresh model. :meth:`keep_best`
    keeps a (CPU) copy of the current EMA weights as ``best``.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        self.decay = decay
        self._params = {name for name, _ in model.named_parameters()}
        self._dtypes = {k: v.dtype for k, v in model.state_dict().items()}
        self.shadow = {k: v.detach().clone().float() for k, v in model.state_dict().items()}
        self.best: dict[str, torch.Tensor] | None = None

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for k, v in model.state_dict().items():
            if k in self._params:
                self.shadow[k].lerp_(v.detach().float(), 1.0 - self.decay)
            else:
                self.shadow[k].copy_(v.detach())

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.to(self._dtypes[k]).contiguous().cpu() for k, v in self.shadow.items()}

    def keep_best(self) -> None:
        """Remember the current EMA weights as the best so far (e.g. lowest validation loss)."""
        self.best = self.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for k, v in state.items():
            self.shadow[k].copy_(v.float())
