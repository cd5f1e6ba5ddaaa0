"""Online corruptions: seeded, batched changes of training batches, made in loader workers.

Offline pseudo-pathology (:mod:`adsys.synth.variants`) is written into the shards once;
online corruptions change each training batch as it is made (augmentation, synthetic
anomalies), in the shard loader's worker processes (:class:`adsys.shards.ShardStream`'s
``corruption``). Both return what they changed and the parameters that replay it.

A corruption is called on CPU tensors ``images`` and ``masks`` (B, 1, *spatial), images in
[0, 1], with a ``torch.Generator``, and returns a :class:`CorruptionResult`: the corrupted
images, an anomaly mask in [0, 1] (where, and how strongly, the result departs from a
healthy image: empty for augmentations, which change appearance, not anatomy) and one JSON
record per item that :meth:`Corruption.replay` turns back into the same result. The loader
seeds each batch's generator from (run seed, rank, loader worker, epoch, batch index) —
:func:`adsys.seeding.derive_seed` domain ``corruption`` — so a batch can also be regenerated
from its keys.

Corruptions register by name (``@register_corruption("name")``) in any module of
:mod:`adsys.synth`; :func:`make_corruption` builds one from its name and options (validated by
its ``Options`` model: unknown keys are errors).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from pydantic import ValidationError

from adsys.config import StrictModel, error_line
from adsys.registry import Registry

__all__ = [
    "CORRUPTIONS",
    "Corruption",
    "CorruptionResult",
    "make_corruption",
    "register_corruption",
]


@dataclass
class CorruptionResult:
    """``corrupted`` (B, 1, *spatial) in the images' dtype; ``anomaly_mask`` (B, 1, *spatial)
    float32 in [0, 1]; ``params`` one JSON-ready replay record per item."""

    corrupted: torch.Tensor
    anomaly_mask: torch.Tensor
    params: list[dict[str, Any]]


class Corruption:
    """Base of online corruptions; subclasses set ``Options`` and implement :meth:`__call__`
    and :meth:`replay`. Instances must pickle (loader workers may be spawned)."""

    Options: ClassVar[type[StrictModel]] = StrictModel

    def __init__(self, options: StrictModel | dict[str, Any] | None = None) -> None:
        self.options = self.Options.model_validate(options or {})

    def __call__(
        self, images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator
    ) -> CorruptionResult:
        """Corrupt a batch with draws from ``generator``."""
        raise NotImplementedError

    def replay(
        self, images: torch.Tensor, masks: torch.Tensor, params: list[dict[str, Any]]
    ) -> CorruptionResult:
        """The result recorded in ``params`` (one record per item), without drawing."""
        raise NotImplementedError


CORRUPTIONS: Registry[type[Corruption]] = Registry(
    "corruption", "adsys.synth", "register_corruption"
)
register_corruption = CORRUPTIONS.register


def make_corruption(name: str, options: dict[str, Any] | None = None) -> Corruption:
    """The corruption registered as ``name`` with ``options`` (``ValueError`` naming a bad
    option in one line; unknown names list the known ones)."""
    cls = CORRUPTIONS.get(name)
    try:
        return cls(options)
    except ValidationError as exc:
        raise ValueError(f"corruption {name!r}: {error_line(exc, 'options.')}") from None
