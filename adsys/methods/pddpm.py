"""``pddpm``: patched diffusion of Behrendt et al. (2023), ``ddpm`` noised one box at a time.

**Boxes.** A grid of P×P boxes (``patch.size``, voxels of the data grid) over each axial
slice: at stride P, the last box of an axis shifted back to end at the border when P does
not divide the slice (the public code lets it run past the image); ``patch.overlap``
re-spaces ``n = ⌈W/P⌉`` boxes evenly over ``[0, W − P]`` (the code's ``overlap=True``). The
paper uses P = W/2: 48 on its 96×96 slices at 2 mm. On another grid keep P at half the
slice's width (e.g. 80 on a 160-voxel slice at 1.2 mm) — the box should cover the same
anatomy, since that is what the model learns to fill from context. The grid is a sliding
window plan (:func:`adsys.scoring.window_plan`, constant blending), so training and
inference share one geometry.

**Training.** One box per slice, uniformly from the grid (``patch.sampling="random"``: a
uniform corner anywhere the box fits); the network input is x0 outside the box and x_t
inside (simplex noise, cosine schedule, T = 1000, x0 prediction, as ``ddpm``). ``loss="box"``
(the paper's L_p) is the mean L1 over the box's voxels; ``loss="image"`` is the public code's
full-image L1 with the prediction outside the box replaced by x0, i.e. the same error times
box area / image area (0.25 for 48 in 96) — the same gradient direction, a smaller scale.

**Inference.** For each box: noise only the box at t = 499 (the code's ``test_timesteps:
500``), one forward pass, keep the box's prediction; the boxes are stitched (no blending when
they tile, the average where they overlap). All boxes of all slices of a volume are one
batch through :func:`adsys.scoring.sliding_window_ensemble` with ``context=True`` (the
public code runs one box of one image at a time); ``inference.box_batch_size`` caps the
boxes per forward pass without changing the result. One simplex map per t is shared by
every box and slice, as in the code. Beyond the paper (its future-work paragraph):
``inference.t_values`` with several steps and ``inference.patch_sizes`` with several box
sizes ensemble the stitched reconstructions, mean over every (size, t).

The paper's text says a linear β schedule and lr 1e-5; its code, and the defaults here, use
the cosine schedule and lr 1e-4: ``--set method_config.schedule=linear lr=1e-5`` gives the
text's.
"""

from __future__ import annotations

import itertools
from typing import Any, Literal

import torch
from pydantic import field_validator

from adsys.config import StrictModel, deep_merge
from adsys.diffusion import q_sample, reconstruct_x0
from adsys.methods import register
from adsys.methods.base import InferenceRecipe
from adsys.methods.ddpm import DDPM, DDPMConfig, to_image_range, to_model_range
from adsys.scoring import WindowPlan, WindowSites, box_mask, sliding_window_ensemble, window_plan

__all__ = ["PDDPM", "PDDPMConfig", "PDDPMRecipe", "PatchConfig"]


class PatchConfig(StrictModel):
    """The box grid (module doc): ``size`` P in voxels, ``overlap`` (evenly re-spaced
    boxes), and how training picks a box (``grid`` or a ``random`` corner)."""

    size: int = 48
    overlap: bool = False
    sampling: Literal["grid", "random"] = "grid"

    @field_validator("size")
    @classmethod
    def _positive(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"patch.size must be at least 1 voxel, got {v}")
        return v

    def grid_args(self) -> dict[str, Any]:
        """Sliding-window geometry of a box grid: stride P, or evenly spread."""
        if self.overlap:
            return {"overlap": 1.0, "overlap_mode": "spread", "mode": "constant"}
        return {"overlap": 0.0, "overlap_mode": "monai", "mode": "constant"}

    def plan(self, spatial: tuple[int, ...], size: int | None = None) -> WindowPlan:
        """The box grid of a ``spatial`` slice with boxes of ``size`` (default P)."""
        return window_plan(spatial, size or self.size, **self.grid_args())


class PDDPMRecipe(InferenceRecipe):
    """:class:`InferenceRecipe` + ``patch_sizes`` (box sizes to ensemble; empty = the trained
    ``patch.size``) and ``box_batch_size`` (boxes per forward pass; ``None`` = all boxes of
    all slices of the call at once)."""

    patch_sizes: tuple[int, ...] = ()
    box_batch_size: int | None = None

    @field_validator("patch_sizes")
    @classmethod
    def _positive_sizes(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if any(s < 1 for s in v):
            raise ValueError(f"inference.patch_sizes must be positive voxel counts, got {v}")
        return v


class PDDPMConfig(DDPMConfig):
    """:class:`DDPMConfig` + ``patch`` (the box grid) and ``loss`` (``box`` or ``image``)."""

    method: str = "pddpm"
    patch: PatchConfig = PatchConfig()
    loss: Literal["box", "image"] = "box"
    inference: PDDPMRecipe = PDDPMRecipe(t_values=(499,))


@register("pddpm")
class PDDPM(DDPM):
    config_cls = PDDPMConfig
    presets = {
        # P ≈ W/2 as in the paper: 2×3 boxes on the smoke shards' 44×52 slices (4 mm)
        "smoke": deep_merge(DDPM.presets["smoke"], {"method_config": {"patch": {"size": 24}}}),
        # P = 48 on the demo's 96×112 slices at 2 mm (2×3 boxes); 192 boxes per pass keep a
        # a CPU worker near 4 GB peak (all 576 boxes of a volume at once: 7 GB)
        "demo": deep_merge(DDPM.presets["demo"], {
            "method_config": {"inference": {"box_batch_size": 192}},
        }),
        # the code's experiment MIDL23_DDPM/DDPM_patched (implementations.md §2.1): as ddpm's
        # but 1600 epochs of 12 steps; the paper's text says lr 1e-5 (see the module doc)
        "paper": deep_merge(DDPM.presets["paper"], {"max_steps": 19_200}),
    }  # fmt: skip

    config: PDDPMConfig

    def boxes(self, spatial: tuple[int, ...], n: int, generator: torch.Generator) -> torch.Tensor:
        """(n, d) int64 box origins for ``n`` training images of size ``spatial``."""
        patch = self.config.patch
        if any(patch.size > s for s in spatial):
            raise ValueError(
                f"patch.size {patch.size} does not fit the {'×'.join(map(str, spatial))} "
                "training slices; set method_config.patch.size to about half the slice width"
            )
        if patch.sampling == "random":
            return torch.stack([torch.randint(0, s - patch.size + 1, (n,), generator=generator)
                                for s in spatial], dim=1)
        starts = patch.plan(spatial).grid.starts
        grid = torch.tensor(list(itertools.product(*starts)), dtype=torch.int64)
        return grid[torch.randint(0, len(grid), (n,), generator=generator)]

    def training_loss(self, batch: dict[str, Any], generator: torch.Generator) -> torch.Tensor:
        """L1 of the prediction inside one noised box per image (``loss``: module doc)."""
        x0 = to_model_range(batch.get("corrupted", batch["image"]))
        n, spatial = x0.shape[0], tuple(x0.shape[2:])
        t = torch.randint(0, self.config.timesteps, (n,), generator=generator).to(x0.device)
        noise = self._noise(x0.shape, generator, x0)
        origins = self.boxes(spatial, n, generator).to(x0.device)
        inside = box_mask(origins, (self.config.patch.size,) * len(spatial), spatial)
        x_in = torch.where(inside, q_sample(self.schedule, x0, t, noise), x0)
        error = (self.unet(x_in, t, self.condition(x0)) - self._target(x0, noise)).abs()
        if self.config.loss == "box":
            return error.masked_select(inside.expand_as(error)).mean()
        return torch.where(inside, error, 0.0).mean()

    def _box_predictions(
        self, sites: WindowSites, t: int, noise: torch.Tensor
    ) -> torch.Tensor:
        """x0 predictions (n, C, *roi) of the boxes ``sites`` noised to ``t`` with ``noise``
        (n, C, *padded) inside their whole slices."""
        full, inside = sites.context(), sites.masks()
        cond = self.condition(full)

        def model(x_t: torch.Tensor, tt: torch.Tensor) -> torch.Tensor:
            return self.unet(torch.where(inside, x_t, full), tt, cond)

        return sites.crop(reconstruct_x0(model, self.schedule, full, t, noise,
                                         self.config.prediction))

    def _stitched(self, x0: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
        """The stitched reconstruction of ``x0`` ([−1, 1]) with boxes of ``size``, mean over
        ``t_values``; each t draws one noise for the whole batch, so the boxes per pass
        (``box_batch_size``) do not change the result."""
        recipe = self.config.inference
        noise: dict[int, torch.Tensor] = {}

        def predict(windows: torch.Tensor, t: int, sites: WindowSites) -> torch.Tensor:
            if t not in noise:
                noise[t] = self._noise(sites.images.shape, generator, windows)
            return self._box_predictions(sites, t, noise[t][sites.image_index])

        return sliding_window_ensemble(
            x0, predict, (size,) * (x0.ndim - 2), members=recipe.t_values, reduce="prediction",
            sw_batch_size=recipe.box_batch_size, context=True, cval=-1.0,
            **self.config.patch.grid_args(),
        ).map  # fmt: skip

    @torch.no_grad()
    def restore(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Stitched box reconstructions, mean over ``patch_sizes`` × ``t_values``."""
        x0 = to_model_range(images)
        sizes = self.config.inference.patch_sizes or (self.config.patch.size,)
        recs = [self._stitched(x0, size, generator) for size in sizes]
        return to_image_range(sum(recs) / len(recs)).clamp(0, 1)
