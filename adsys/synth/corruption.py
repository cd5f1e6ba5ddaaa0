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
its ``Options`` model: unknown keys are errors). ``chain`` (:class:`Chain`) runs several in
turn, e.g. an augmentation then an anomaly generator.

**Cohort-bound options.** Some options are statistics of the training cohort (e.g. tissue
intensity centroids), computed when the shards are built and stored in their manifest's
``statistics``. A corruption names them in ``cohort_options`` (option → statistics key); an
option left ``None`` is filled from the statistics by whoever holds them
(:meth:`Corruption.with_statistics`; the shard stream does it once, so every loader worker
uses the same values).

**Targets.** An augmentation's output is still healthy (``healthy = True``: its anomaly mask
is empty). When healthy stages precede anomaly stages in a chain, the healthy image the
anomalies were added to is the restoration ``target`` (:attr:`Corruption.yields_target`),
which differs from both the input and the corrupted result.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from pydantic import ValidationError

from adsys.config import StrictModel, error_line
from adsys.registry import Registry

__all__ = [
    "CORRUPTIONS",
    "Chain",
    "Corruption",
    "CorruptionResult",
    "make_corruption",
    "register_corruption",
]


@dataclass
class CorruptionResult:
    """``corrupted`` (B, 1, *spatial) in the images' dtype; ``anomaly_mask`` (B, 1, *spatial)
    float32 in [0, 1]; ``params`` one JSON-ready replay record per item; ``masks`` the brain
    masks after a geometric change (``None``: unchanged); ``target`` the healthy image a
    restorer should return when it differs from input and result (``None`` otherwise)."""

    corrupted: torch.Tensor
    anomaly_mask: torch.Tensor
    params: list[dict[str, Any]]
    masks: torch.Tensor | None = None
    target: torch.Tensor | None = None


class Corruption:
    """Base of online corruptions; subclasses set ``Options`` and implement :meth:`__call__`
    and :meth:`replay`. Instances must pickle (loader workers may be spawned)."""

    Options: ClassVar[type[StrictModel]] = StrictModel
    healthy: ClassVar[bool] = False  # output still healthy (augmentation): empty anomaly mask
    cohort_options: ClassVar[dict[str, str]] = {}  # option -> key of the shards' statistics

    def __init__(self, options: StrictModel | dict[str, Any] | None = None) -> None:
        self.options = self.Options.model_validate(options or {})

    @property
    def yields_target(self) -> bool:
        """Whether results carry a ``target`` (module doc)."""
        return False

    def unset_cohort_options(self) -> dict[str, str]:
        """The cohort options (option → statistics key) left ``None``, which it needs."""
        return {opt: key for opt, key in self.cohort_options.items()
                if getattr(self.options, opt) is None}

    def cohort_keys(self) -> set[str]:
        """The statistics keys this corruption still needs (its unset cohort options)."""
        return set(self.unset_cohort_options().values())

    def with_statistics(self, statistics: Mapping[str, Any]) -> Corruption:
        """This corruption with its unset cohort options taken from ``statistics`` (the
        shards' manifest field); ``KeyError`` naming a missing key."""
        unset = self.unset_cohort_options()
        if not unset:
            return self
        filled = {opt: statistics[key] for opt, key in unset.items()}
        return type(self)({**self.options.model_dump(), **filled})

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


class StageSpec(StrictModel):
    """One stage of a :class:`Chain`: a registered corruption's name and options."""

    name: str
    options: dict[str, Any] = {}


class ChainOptions(StrictModel):
    """The stages of a :class:`Chain`, applied in order."""

    stages: list[StageSpec]


@register_corruption("chain")
class Chain(Corruption):
    """Corruptions applied in turn, each to the previous one's result and (geometrically
    changed) masks, drawing from one generator. Anomaly mask: the maximum of the stages';
    ``target``: the output of the last healthy stage before an anomaly stage (module doc).
    Each item's record is ``{"stages": [its record of every stage]}``."""

    Options = ChainOptions

    def __init__(self, options: ChainOptions | dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self.stages = [make_corruption(s.name, s.options) for s in self.options.stages]
        if not self.stages:
            raise ValueError("corruption 'chain': options.stages lists no corruption")

    @property
    def yields_target(self) -> bool:
        kinds = [s.healthy for s in self.stages]
        return any(kinds) and not all(kinds) and kinds.index(False) > 0

    def cohort_keys(self) -> set[str]:
        return set().union(*(s.cohort_keys() for s in self.stages))

    def with_statistics(self, statistics: Mapping[str, Any]) -> Chain:
        stages = [s.with_statistics(statistics) for s in self.stages]
        return Chain({"stages": [{"name": spec.name, "options": stage.options.model_dump()}
                                 for spec, stage in zip(self.options.stages, stages,
                                                        strict=True)]})

    def _run(
        self, images: torch.Tensor, masks: torch.Tensor,
        step: Callable[[int, Corruption, torch.Tensor, torch.Tensor], CorruptionResult],
    ) -> CorruptionResult:
        """The stages in turn; ``step(i, stage, images, masks)`` runs (or replays) stage i."""
        x, m, target = images, masks, images
        anomaly = torch.zeros_like(images, dtype=torch.float32)
        records: list[list[dict[str, Any]]] = [[] for _ in range(len(images))]
        for i, stage in enumerate(self.stages):
            res = step(i, stage, x, m)
            anomaly = torch.maximum(anomaly, res.anomaly_mask)
            x, m = res.corrupted, (m if res.masks is None else res.masks)
            if stage.healthy:
                target = x
            for rec, p in zip(records, res.params, strict=True):
                rec.append(p)
        return CorruptionResult(
            x, anomaly, [{"stages": r} for r in records],
            masks=None if m is masks else m,
            target=target if self.yields_target else None,
        )

    def __call__(
        self, images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator
    ) -> CorruptionResult:
        return self._run(images, masks, lambda i, stage, x, m: stage(x, m, generator))

    def replay(
        self, images: torch.Tensor, masks: torch.Tensor, params: list[dict[str, Any]]
    ) -> CorruptionResult:
        return self._run(images, masks, lambda i, stage, x, m: stage.replay(
            x, m, [p["stages"][i] for p in params]))
