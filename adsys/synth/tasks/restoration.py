"""ICDM's restoration task as an online corruption (Baugh et al. 2024, §2; the code's
``RestorationTask``, implementations.md §3.3): the model learns to restore the clean image
from a copy corrupted by one of the five self-supervised tasks.

Per item: with probability ``identity_p`` (0.2) the clean pair (nothing changes, empty anomaly
mask); otherwise a task drawn uniformly from ``tasks`` (a fold's training tasks,
:mod:`adsys.synth.tasks.folds`) is applied to 1–4 anomalies (one, then another with
probability ½ each time, at most 4), each with its own shape and placement
(:mod:`~adsys.synth.tasks.shapes`):

=====  =============================================================================
task   what it does to an anomaly
=====  =============================================================================
0      Poisson blend (:mod:`~adsys.synth.tasks.blend`) of a patch of another item of
       the batch (uniform; a batch of one blends the item itself flipped on every
       spatial axis, recorded as ``flipped``)
1      the same with a foreign source (:mod:`~adsys.synth.tasks.sources`: a folder,
       ``foreign_source``, or scikit-image's packaged images), uniform by file name
2, 3   sink / source radial deformation (:mod:`~adsys.synth.tasks.deform`)
4      smooth intensity change (:mod:`~adsys.synth.tasks.intensity`), ``intensity``
       ``perlin`` (ICDM, scale 0.1) or ``uniform`` (MTML, scale 0.2)
=====  =============================================================================

An anomaly that finds no place (a slice with only a few brain voxels) ends the item's list:
the record keeps the placement error as ``unplaced`` and the anomalies placed before it (none:
a clean pair), so training goes on and the record says what happened.

After each anomaly the image is clipped to the clean item's [min, max]. The anomaly mask is the
union of the anomalies' shapes; for the blends also every voxel whose value then differs from
the clean image by more than 0.001 (the solver changes a little around the shape; the code
compares with the image before that anomaly, here with the clean one, so the mask covers every
voxel the whole task changed by more than 0.001). Deformations and intensity changes touch
only voxels of their shapes, so everything off the mask keeps its value bit for bit.

The restoration target is the clean input itself, so results carry no ``target``.

**Draws.** The generator gives one 63-bit seed per item (``torch.randint``); all of item i's
draws come from ``numpy.random.default_rng(seed_i)``, in a fixed order: identity, task, the
number of anomalies, then per anomaly its shape, placement and the task's own draws. A blend
that finds no source position (module :mod:`~adsys.synth.tasks.blend`) draws another source,
up to 100 times (:class:`SourceError`). Draws never depend on earlier anomalies' results, so
:meth:`ICDMTasks.__call__` draws every record first and then applies them exactly as
:meth:`ICDMTasks.replay` does (one code path), hence bit-for-bit replay.

**Records** (one JSON dict per item): ``seed``, ``task`` (0–4, ``None`` for a clean pair) and
``anomalies``, each with ``shape`` (:meth:`~adsys.synth.tasks.shapes.Shape.record`),
``corner`` (grid corner in the image), ``required_overlap`` and ``placement_failures``, plus
the task's parameters: blends ``source`` (batch index or file name), ``flipped``, ``angles``,
``scale``, ``source_corner``; deformations ``centre``, ``push``, ``edge_mean``, ``factor``;
intensity ``magnitude``, ``ramp``, ``noise``. Replaying a blend of task 0 needs the same
batch (the loader regenerates it from its keys), task 1 the same source folder.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, field_validator

from adsys.config import StrictModel
from adsys.errors import AdsysError
from adsys.synth.corruption import Corruption, CorruptionResult, register_corruption
from adsys.synth.tasks.blend import (
    MASK_THRESHOLD,
    blend_patch,
    draw_source_corner,
    draw_transform,
)
from adsys.synth.tasks.deform import deform_patch, draw_deformation
from adsys.synth.tasks.folds import NUM_TASKS
from adsys.synth.tasks.intensity import draw_intensity, intensity_patch
from adsys.synth.tasks.shapes import (
    PlacementError,
    Shape,
    foreground,
    place,
    regions,
    sample_shape,
    side_bounds,
)
from adsys.synth.tasks.sources import ForeignSources

__all__ = ["ICDMTasks", "ICDMTasksOptions", "SourceError", "TASK_NAMES"]

TASK_NAMES = ("intra_dataset_blend", "foreign_blend", "sink", "source", "intensity")
MAX_ANOMALIES = 4
SOURCE_TRIES = 100
DEFAULT_SCALE = {"perlin": 0.1, "uniform": 0.2}


class SourceError(AdsysError, ValueError):
    """No blending source offers a patch centred on its foreground."""


class ICDMTasksOptions(StrictModel):
    """Settings of :class:`ICDMTasks` (module doc); defaults: the ICDM paper's."""

    tasks: list[int] = Field(
        default_factory=lambda: list(range(NUM_TASKS)),
        description="the tasks to draw from (a fold's training tasks): 0 intra-dataset blend, "
        "1 foreign blend, 2 sink, 3 source, 4 intensity",
    )
    identity_p: float = Field(0.2, ge=0, le=1, description="probability of a clean pair")
    intensity: Literal["perlin", "uniform"] = "perlin"
    intensity_scale: float | None = Field(
        None, gt=0, description="task 4's scale s; unset: 0.1 (perlin) or 0.2 (uniform)"
    )
    foreign_source: str | None = Field(
        None,
        description="task 1's folder of images / NIfTI volumes; unset: scikit-image's "
        "packaged images",
    )

    @field_validator("tasks")
    @classmethod
    def _tasks(cls, tasks: list[int]) -> list[int]:
        if not tasks or len(set(tasks)) != len(tasks) or not set(tasks) <= set(range(NUM_TASKS)):
            raise ValueError(
                f"tasks must be distinct task numbers in 0..{NUM_TASKS - 1}, got {tasks}"
            )
        return tasks


class _Batch:
    """One call's clean items as float64 arrays (B, *spatial), with their foregrounds."""

    def __init__(self, images: torch.Tensor, masks: torch.Tensor) -> None:
        if images.ndim not in (4, 5) or images.shape[1] != 1 or masks.shape != images.shape:
            raise ValueError(
                "icdm_tasks takes images and masks (B, 1, x, y[, z]) of one shape, got "
                f"{tuple(images.shape)} and {tuple(masks.shape)}"
            )
        self.images = images[:, 0].double().numpy()
        self.masks = masks[:, 0].numpy()
        self._foregrounds: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.images)

    def foreground(self, i: int) -> np.ndarray:
        """Item ``i``'s foreground (:func:`~adsys.synth.tasks.shapes.foreground`), cached."""
        if i not in self._foregrounds:
            self._foregrounds[i] = foreground(self.images[i], self.masks[i])
        return self._foregrounds[i]


@register_corruption("icdm_tasks")
class ICDMTasks(Corruption):
    """See the module doc. Options: :class:`ICDMTasksOptions`."""

    Options = ICDMTasksOptions

    def __init__(self, options: ICDMTasksOptions | dict[str, Any] | None = None) -> None:
        super().__init__(options)
        o = self.options
        self.scale = o.intensity_scale or DEFAULT_SCALE[o.intensity]
        self.sources = ForeignSources(o.foreign_source)
        if 1 in o.tasks:
            _ = self.sources.names  # a missing or empty folder fails here, not in a worker

    def __call__(
        self, images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator
    ) -> CorruptionResult:
        batch = _Batch(images, masks)
        seeds = torch.randint(0, 2**63 - 1, (len(batch),), generator=generator).tolist()
        params = [self._draw(i, seed, batch) for i, seed in enumerate(seeds)]
        return self._apply(images, batch, params)

    def replay(
        self, images: torch.Tensor, masks: torch.Tensor, params: list[dict[str, Any]]
    ) -> CorruptionResult:
        if len(params) != len(images):
            raise ValueError(f"icdm_tasks: {len(params)} records for {len(images)} items")
        return self._apply(images, _Batch(images, masks), params)

    def _draw(self, i: int, seed: int, batch: _Batch) -> dict[str, Any]:
        """Item ``i``'s record (module doc), drawn from ``default_rng(seed)``."""
        rng = np.random.default_rng(seed)
        rec: dict[str, Any] = {"seed": seed, "task": None, "anomalies": []}
        if rng.random() < self.options.identity_p:
            return rec
        task = self.options.tasks[int(rng.integers(len(self.options.tasks)))]
        count = 1
        while count < MAX_ANOMALIES and rng.random() < 0.5:
            count += 1
        image, fg = batch.images[i], batch.foreground(i)
        boxes = regions(fg)
        lb, ub = side_bounds(boxes, image.shape)
        rec["task"] = task
        for _ in range(count):
            shape = sample_shape(rng, lb, ub, image.shape)
            raster = shape.raster()
            try:
                spot = place(rng, raster, fg, boxes)
            except PlacementError as exc:  # e.g. a slice with a few brain voxels: keep the
                rec["unplaced"] = str(exc)  # anomalies placed so far (none: a clean pair)
                rec["task"] = task if rec["anomalies"] else None
                break
            rec["anomalies"].append({
                "shape": shape.record(), "corner": list(spot.corner),
                "required_overlap": spot.required, "placement_failures": spot.failures,
                **self._draw_task(task, rng, i, batch, raster),
            })  # fmt: skip
        return rec

    def _draw_task(
        self, task: int, rng: np.random.Generator, i: int, batch: _Batch, raster: np.ndarray
    ) -> dict[str, Any]:
        """Task ``task``'s own draws for an anomaly of shape ``raster`` on item ``i``."""
        if task in (2, 3):
            return draw_deformation(rng, raster, TASK_NAMES[task])
        if task == 4:
            return draw_intensity(rng, raster.shape, self.scale, self.options.intensity)
        for _ in range(SOURCE_TRIES):
            if task == 0:
                others = len(batch) - 1
                ref = (i + 1 + int(rng.integers(others))) % len(batch) if others else i
                rec: dict[str, Any] = {"source": ref, "flipped": not others}
            else:
                names = self.sources.names
                rec = {"source": names[int(rng.integers(len(names)))], "flipped": False}
            source, source_fg = self._source(rec, i, batch)
            rec |= draw_transform(rng, raster.shape, source.shape)
            corner = draw_source_corner(rng, rec, raster.shape, source_fg)
            if corner is not None:
                return rec | {"source_corner": corner}
        raise SourceError(
            f"icdm_tasks task {task} ({TASK_NAMES[task]}): no source offered a patch of "
            f"{raster.shape} voxels centred on its foreground in {SOURCE_TRIES} tries; the "
            "sources' foregrounds are too small or too close to their borders: check the brain "
            "masks, or use larger images"
        )

    def _source(self, rec: dict[str, Any], i: int, batch: _Batch) -> tuple[np.ndarray, np.ndarray]:
        """A blend's source image and foreground (float64, bool), as ``rec`` names them."""
        if isinstance(rec["source"], str):
            image = self.sources.load(rec["source"], batch.images.shape[1:])
            return image, foreground(image, np.zeros(image.shape, dtype=bool))
        j = rec["source"]
        image, fg = batch.images[j], batch.foreground(j)
        return (np.flip(image), np.flip(fg)) if rec["flipped"] else (image, fg)

    def _apply(
        self, images: torch.Tensor, batch: _Batch, params: list[dict[str, Any]]
    ) -> CorruptionResult:
        """The corruptions ``params`` record, applied to the clean batch."""
        out = batch.images.copy()
        anomaly = np.zeros(out.shape, dtype=bool)
        for i, rec in enumerate(params):
            x, clean, mask = out[i], batch.images[i], anomaly[i]
            for a in rec["anomalies"]:
                shape = Shape.from_record(a["shape"])
                raster = shape.raster()
                box = tuple(slice(c, c + n) for c, n in zip(a["corner"], raster.shape, strict=True))
                self._apply_task(rec["task"], x, box, shape, raster, a, i, batch)
                np.clip(x, clean.min(), clean.max(), out=x)
                mask[box] |= raster
                if rec["task"] in (0, 1):
                    mask |= np.abs(x - clean) > MASK_THRESHOLD
        corrupted = torch.from_numpy(out).unsqueeze(1).to(images.dtype)
        return CorruptionResult(
            corrupted, torch.from_numpy(anomaly).unsqueeze(1).float(), list(params)
        )

    def _apply_task(
        self,
        task: int,
        x: np.ndarray,
        box: tuple[slice, ...],
        shape: Shape,
        raster: np.ndarray,
        a: dict[str, Any],
        i: int,
        batch: _Batch,
    ) -> None:
        """Anomaly ``a`` of ``task`` applied to item ``i``'s working image ``x`` (in place)."""
        if task in (0, 1):
            source, _ = self._source(a, i, batch)
            blend_patch(x, raster, tuple(s.start for s in box), source, a)
        elif task in (2, 3):
            x[box] = deform_patch(x[box], shape, raster, a["centre"], a["factor"], TASK_NAMES[task])
        else:
            x[box] = intensity_patch(x[box], raster, a, min(x.shape))
