"""The inference configuration: which models, which cohort, where to write, and what to
change in the models' own inference recipes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError, field_validator, model_validator

from adsys.config import GpuSetting, StrictModel, deep_merge, error_line
from adsys.errors import InputError
from adsys.methods.base import InferenceRecipe
from adsys.methods.export import expand_models

__all__ = ["InferConfig"]


class InferConfig(StrictModel):
    """Everything a batch-inference run needs; recorded in ``OUT/run.json``.

    ``models``: exported model folders (several = an ensemble; an ensemble folder, such as
    a multi-fold training run's, stands for its members); ``cohort``: a Zarr cohort
    store (a shard build's output folder or its ``cohort.zarr``) or a manifest CSV of NIfTI
    volumes, preprocessed on the fly with the models' recorded preprocessing; ``splits``: the
    manifest splits to run; ``inference``: overrides of each model's inference recipe
    (:class:`~adsys.methods.base.InferenceRecipe` keys: ``map``, ``window``, ``t_values``,
    ``protocol``, and a method's own recipe keys), merged key by key — the run records the
    recipe it used; ``threshold``: see
    :func:`adsys.metrics.cohort.choose_cohort_threshold` (``val``, ``val-fpr=0.05``, a
    number or ``none``); ``num_workers``: actors, ``auto`` = one per GPU on a GPU cluster,
    else one per ``cpus_per_worker`` CPUs of the cluster.

    ``inputs: variants`` evaluates on the cohort store's synthetic pairs instead of its
    images: every variant of every subject of ``splits`` is an input (id
    ``SUBJECT_fluid-K``), its lesion (≥ 0.5) the ground truth; ``mask`` is the brain mask
    of post-processing — ``brain``, the store's (preprocessing's) mask, or ``healthy``, the
    clean image > 0.01 (the fluid paper's healthy-reference mask, which only synthetic pairs
    have).
    """

    models: list[Path]
    cohort: Path
    out: Path = Path("runs/infer")
    splits: tuple[str, ...] = ("val", "test")
    threshold: str = "val"
    inference: dict[str, Any] = {}
    seed: int = 0
    num_workers: int | Literal["auto"] = "auto"
    cpus_per_worker: int = 1
    use_gpu: GpuSetting = "auto"
    batch_size: int = 1
    native: bool = True
    zarr: bool = False
    overlays: bool = True
    inputs: Literal["images", "variants"] = "images"
    mask: Literal["brain", "healthy"] = "brain"

    @model_validator(mode="after")
    def _healthy_mask_needs_variants(self) -> InferConfig:
        if self.mask == "healthy" and self.inputs != "variants":
            raise ValueError("mask 'healthy' (the clean image > 0.01) exists only for synthetic "
                             "pairs: use it with inputs 'variants'")
        return self

    @field_validator("models")
    @classmethod
    def _some_model(cls, v: list[Path]) -> list[Path]:
        if not v:
            raise ValueError("give at least one exported model folder")
        try:
            return expand_models(v)  # an ensemble folder (e.g. a multi-fold run) → members
        except InputError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("inference")
    @classmethod
    def _recipe_keys(cls, v: dict[str, Any]) -> dict[str, Any]:
        """The keys every recipe has are checked now (a method's own keys when its model
        is loaded): an unknown protocol or map kind fails before any work starts."""
        shared = {k: x for k, x in v.items() if k in InferenceRecipe.model_fields}
        try:
            InferenceRecipe.model_validate(deep_merge(InferenceRecipe().model_dump(), shared))
        except ValidationError as exc:
            raise ValueError(error_line(exc, "inference.")) from None
        return v

    @field_validator("num_workers", "cpus_per_worker", "batch_size")
    @classmethod
    def _positive(cls, v: int | str) -> int | str:
        if v != "auto" and v < 1:
            raise ValueError(f"must be >= 1, got {v}")
        return v

    def scoring_digest(self, model_records: list[dict[str, Any]]) -> str:
        """Identity of a subject's outputs: the models (their config as used — recipe
        overrides included — and weights' sha256), seed, output options. A subject written
        under another digest is recomputed."""
        blob = json.dumps(
            {
                "models": model_records,
                "seed": self.seed,
                "native": self.native,
                "zarr": self.zarr,
                "overlays": self.overlays,
                # only when it is not the default, so earlier runs' outputs stay valid
                **({"mask": self.mask} if self.mask != "brain" else {}),
            },
            sort_keys=True,
        ).encode()
        return hashlib.sha256(blob).hexdigest()
