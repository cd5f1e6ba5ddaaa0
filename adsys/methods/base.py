"""The method contract: what a method declares, and what the jobs call.

A method is one module in ``adsys/methods/`` with a :class:`MethodConfig` subclass and a
:class:`Method` subclass registered by name (``@register("name")``, :mod:`adsys.methods`).
Training, inference and the shard stream read only these declarations; they never branch on
a method's name.

**Declarations** (the config, saved as the exported model's ``config.json``):

* ``config.data`` (:class:`DataSpec`) — what the training stream yields: spatial dims, the
  stream mode (axial ``slices``, ``patches`` of ``patch_size`` — 3D, or 2D crops of axial
  slices cropped to their brain's bounding box — whole ``volumes``), the shard
  fields the method trains on (``image``, ``mask``, ``variant``, ``lesion``), a brain-fraction
  filter for slices, and optional online corruptions (:mod:`adsys.synth.corruption`) for the
  training and validation batches, applied in the loader's worker processes. A corrupted
  batch also holds ``corrupted`` and ``anomaly_mask`` (B, 1, *spatial) and ``corruption`` (the
  keys that regenerate it and each item's replay record), and ``target`` when the
  corruption yields one (the augmented healthy image its anomalies were added to).
* ``config.inference`` (:class:`InferenceRecipe`) — the map kind, sliding windows, the t
  values of the restoration, and the default protocol. An inference run's settings override
  it; the run records the recipe it used.
* ``Method.num_folds`` — a method trained as several fold models (each its config's
  ``fold``) declares how many; ``--folds`` trains them as one job and inference runs the
  folds' ensemble.
* ``Method.presets`` — ``smoke`` (seconds, for tests), ``demo`` (CPU minutes, ``make demo``)
  and ``paper`` (the published configuration): overrides of the training config
  (``method_config`` for the method's own keys), merged preset < YAML < flags.

**Calls** — tensors (B, C, *spatial), intensities in [0, 1], on the model's device:

* training starts with :meth:`Method.load_pretrained` (a frozen stage trained before, e.g. a
  latent method's autoencoder; an exported model holds those weights, so loading one never
  calls it);
* training: ``forward(batch, generator)`` = :meth:`Method.training_loss` → a scalar loss (the
  DeepSpeed engine calls ``forward``); ``generator`` is the rank's CPU generator for t and
  noise draws;
  a method with nothing to optimise (``Method.trainable`` false: the classic baselines) is
  "trained" by :meth:`Method.fit` instead — one pass over the training split's volumes
  (:mod:`adsys.train.statistics`), then exported like any model;
* inference: the scorer calls :meth:`Method.restore` → a reconstruction in [0, 1] and forms
  the map the recipe names (``l1``, ``ssim``, ``shift``) — or, when the recipe's map kind is
  ``method``, calls :meth:`Method.anomaly_map` and uses its map as is. With the recipe's
  ``members: steps`` every (model, t) pair is one member of the sliding-window ensemble and
  the scorer calls :meth:`Method.restore_step` once per t: the map is the mean residual over
  t, not the residual of the mean reconstruction. All draw noise only from ``generator``,
  so a subject's map is reproducible.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from pydantic import field_validator, model_validator
from torch import nn

from adsys.config import StrictModel
from adsys.scoring.config import MapConfig, WindowConfig

if TYPE_CHECKING:
    from adsys.synth.corruption import Corruption

__all__ = [
    "CorruptionSpec",
    "DataSpec",
    "InferenceRecipe",
    "Method",
    "MethodConfig",
]

Field = Literal["image", "mask", "variant", "lesion"]


class CorruptionSpec(StrictModel):
    """An online corruption by registered name (:mod:`adsys.synth.corruption`) + options."""

    name: str
    options: dict[str, Any] = {}

    @model_validator(mode="after")
    def _buildable(self) -> CorruptionSpec:
        self.build()  # unknown names and options fail here, on the driver
        return self

    def build(self) -> Corruption:
        from adsys.synth.corruption import make_corruption

        return make_corruption(self.name, self.options)


class DataSpec(StrictModel):
    """What a method trains on (module doc). ``patches``: ``patch_size`` of ``dims`` ints —
    3D patches, or 2D crops of axial slices (each slice cropped to its brain's bounding box,
    zero-padded when the box is smaller than the patch).

    ``corruption`` applies to training batches; ``val_corruption`` to the fixed validation
    batches (``None``: clean validation, e.g. for augmentations).
    """

    dims: Literal[2, 3] = 2
    mode: Literal["slices", "patches", "volumes"] = "slices"
    patch_size: tuple[int, ...] | None = None
    fields: tuple[Field, ...] = ("image",)
    min_brain_fraction: float = 0.0
    corruption: CorruptionSpec | None = None
    val_corruption: CorruptionSpec | None = None

    @model_validator(mode="after")
    def _consistent(self) -> DataSpec:
        want = {"slices": 2, "patches": self.dims, "volumes": 3}[self.mode]
        if self.dims != want:
            raise ValueError(f"data.mode {self.mode!r} gives {want}D items, not dims {self.dims}")
        if (self.mode == "patches") != (self.patch_size is not None):
            raise ValueError("data.patch_size is required with mode 'patches' and only there")
        if self.patch_size is not None and (
            len(self.patch_size) != self.dims or min(self.patch_size) < 1
        ):
            raise ValueError(f"data.patch_size {self.patch_size} must be {self.dims} positive "
                             f"sizes (data.dims)")
        if len(set(self.fields)) != len(self.fields) or "image" not in self.fields:
            raise ValueError(f"data.fields must name 'image' and no field twice: {self.fields}")
        if (self.corruption or self.val_corruption) and "mask" not in self.fields:
            raise ValueError("a data corruption reads the brain mask: add 'mask' to data.fields")
        return self


class InferenceRecipe(StrictModel):
    """How a trained method turns a volume into an anomaly map (module doc).

    ``t_values``: the diffusion steps (0-based indices) the restoration uses, e.g. one-step
    x0 at each, averaged; ``protocol``: the default evaluation protocol
    (:mod:`adsys.metrics.protocols`); ``members``: what the sliding-window ensemble averages
    over — ``models`` (each model's ``restore``, which averages its own t values) or
    ``steps`` (every (model, t) pair through ``restore_step``: the mean residual over t).
    """

    map: MapConfig = MapConfig()
    window: WindowConfig = WindowConfig()
    t_values: tuple[int, ...] = ()
    protocol: str = "behrendt"
    members: Literal["models", "steps"] = "models"

    @field_validator("protocol")
    @classmethod
    def _known_protocol(cls, v: str) -> str:
        from adsys.errors import InputError
        from adsys.metrics.protocols import get_protocol

        try:
            get_protocol(v)
        except InputError as exc:  # one line: the name and the known ones
            raise ValueError(f"{exc.problem}; {exc.fix}") from None
        return v

    @model_validator(mode="after")
    def _foreground_weight_needs_l1(self) -> InferenceRecipe:
        if self.window.foreground_weight and self.map.kind != "l1":
            raise ValueError(
                "window.foreground_weight weights each window's residual and needs map.kind "
                f"'l1', not {self.map.kind!r}"
            )
        return self

    @model_validator(mode="after")
    def _steps_need_t_values(self) -> InferenceRecipe:
        if self.members == "steps" and (not self.t_values or self.map.kind == "method"):
            raise ValueError("members 'steps' ensembles one-step restorations: it needs "
                             "t_values and a residual map kind (not 'method')")
        return self


class MethodConfig(StrictModel):
    """Base of every method's config: ``method`` (its registered name), ``data``,
    ``inference``; subclasses add the method's own keys."""

    method: str
    data: DataSpec = DataSpec()
    inference: InferenceRecipe = InferenceRecipe()


class Method(nn.Module):
    """Base of every method (module doc). Subclasses set ``config_cls`` and ``presets`` and
    implement :meth:`training_loss` and :meth:`restore` (or :meth:`anomaly_map`)."""

    config_cls: ClassVar[type[MethodConfig]] = MethodConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    # > 0: the config key ``fold`` picks one of this many models, trained together by
    # ``--folds`` (:mod:`adsys.train.folds`) and run as one ensemble
    num_folds: ClassVar[int] = 0
    # False: nothing to optimise; training is one pass of :meth:`fit` over the training split
    trainable: ClassVar[bool] = True

    def __init__(self, config: MethodConfig) -> None:
        super().__init__()
        if config.inference.map.kind == "method" and (
            type(self).anomaly_map is Method.anomaly_map
        ):
            raise ValueError(f"{type(self).__name__} has no anomaly_map: map.kind 'method' "
                             "needs one; use l1, ssim or shift")
        if config.inference.members == "steps" and (
            type(self).restore_step is Method.restore_step
        ):
            raise ValueError(f"{type(self).__name__} has no restore_step: inference.members "
                             "'steps' needs one; use members 'models'")
        self.config = config

    def load_pretrained(self) -> None:
        """Load the pretrained parts the config names (none by default); training calls it
        once on the freshly built model, before the optimizer and the EMA see the weights."""

    def training_loss(self, batch: dict[str, Any], generator: torch.Generator) -> torch.Tensor:
        """The scalar loss of one batch (the fields of ``config.data``)."""
        raise NotImplementedError

    def fit(self, batches: Iterable[dict[str, Any]]) -> int:
        """For a method that is not ``trainable``: compute its statistics from ``batches``
        (one pass over the training split, batches of ``config.data``'s fields; a method may
        read none of them) and return how many items it read. Nothing to fit by default."""
        return 0

    def forward(self, batch: dict[str, Any], generator: torch.Generator) -> torch.Tensor:
        """The training loss (so DeepSpeed's engine, which calls ``forward``, can wrap us)."""
        return self.training_loss(batch, generator)

    def restore(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The healthy-looking reconstruction of ``images`` (B, 1, *spatial), in [0, 1]."""
        raise NotImplementedError

    def restore_step(
        self, images: torch.Tensor, t: int, generator: torch.Generator
    ) -> torch.Tensor:
        """The one-step restoration of ``images`` (B, 1, *spatial) at step ``t``, in [0, 1],
        for ``inference.members: steps``."""
        raise NotImplementedError

    def anomaly_map(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The method's own raw map of ``images`` (B, 1, *spatial), for map kind ``method``."""
        raise NotImplementedError
