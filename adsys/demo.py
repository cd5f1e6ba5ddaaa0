"""An embedded demo cohort made from real anatomy: nilearn's MNI152 2009 template.

Each healthy "subject" is the skull-stripped MNI152 T1 template (2 mm) with its own random
affine jitter, smooth elastic deformation, bias field, gamma and noise (torchio), scaled to
scanner-like units. Test subjects also get 1–3 ellipsoidal hyper- or hypo-intense lesions with a
soft rim and a ground-truth mask. The lesion model here is deliberately simple and different
from the pseudo-pathology generators the models train on, so the demo's test is honest.

Everything is drawn from ``numpy.random.SeedSequence([seed, subject_index])``: the same seed
gives byte-identical files, another seed gives other subjects. Every third subject is stored
in LPS orientation to exercise canonicalisation and native-space output.
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torchio as tio
from scipy import ndimage
from tqdm.auto import tqdm

from adsys.io.manifest import SubjectEntry, write_manifest
from adsys.io.nifti import save_volume

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Lesion:
    """An ellipsoid: centre (voxels), radii (voxels), rotation (3×3), relative contrast."""

    centre: tuple[float, float, float]
    radii: tuple[float, float, float]
    rotation: tuple[tuple[float, ...], ...]
    contrast: float  # multiplicative change at the core: +0.5 = 50 % brighter


@functools.lru_cache(maxsize=1)
def mni152_2mm() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(T1, brain mask, WM probability, affine) of nilearn's packaged MNI152 2009 at 2 mm."""
    from nilearn import datasets

    t1 = datasets.load_mni152_template(resolution=2)
    mask = datasets.load_mni152_brain_mask(resolution=2).get_fdata() > 0.5
    wm = datasets.load_mni152_wm_template(resolution=2).get_fdata().clip(0, 1)
    return t1.get_fdata().astype(np.float32), mask, wm.astype(np.float32), t1.affine


def _healthy_transform() -> tio.Transform:
    """Random anatomy and scanner variation; intensity changes touch only the T1."""
    return tio.Compose(
        [
            tio.RandomAffine(scales=0.05, degrees=4, translation=3, image_interpolation="linear"),
            tio.RandomElasticDeformation(
                num_control_points=7, max_displacement=5, locked_borders=2
            ),
            tio.RandomBiasField(coefficients=0.3, include=["t1"]),
            tio.RandomGamma(log_gamma=(-0.25, 0.25), include=["t1"]),
            tio.RandomNoise(std=(0.005, 0.02), include=["t1"]),
        ]
    )


def draw_lesions(rng: np.random.Generator, wm: np.ndarray, brain: np.ndarray) -> list[Lesion]:
    """1–3 ellipsoids centred in white matter, radii 2.5–6 voxels, random orientation."""
    candidates = np.argwhere((wm > 0.6) & ndimage.binary_erosion(brain, iterations=4))
    lesions = []
    for _ in range(int(rng.integers(1, 4))):
        centre = candidates[rng.integers(len(candidates))] + rng.uniform(-0.5, 0.5, 3)
        q, r = np.linalg.qr(rng.normal(size=(3, 3)))
        rot = q * np.sign(np.diag(r))
        sign = 1.0 if rng.random() < 0.5 else -1.0
        lesions.append(
            Lesion(
                centre=tuple(float(c) for c in centre),
                radii=tuple(float(v) for v in rng.uniform(2.5, 6.0, 3)),
                rotation=tuple(tuple(float(v) for v in row) for row in rot),
                contrast=sign * float(rng.uniform(0.3, 0.6)),
            )
        )
    return lesions


def render_lesions(
    image: np.ndarray, brain: np.ndarray, lesions: list[Lesion]
) -> tuple[np.ndarray, np.ndarray]:
    """Apply ``lesions`` to ``image``; returns (lesioned image, uint8 ground-truth mask).

    With ρ the ellipsoidal radius (1 on the surface), the contrast is full for ρ ≤ 0.8 and
    falls to 0 at ρ = 1.25 (smoothstep rim); the ground truth is ρ ≤ 1 inside the brain.
    """
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in image.shape], indexing="ij"), -1)
    factor = np.ones(image.shape, np.float32)
    gt = np.zeros(image.shape, bool)
    for les in lesions:
        local = (grid - np.asarray(les.centre)) @ np.asarray(les.rotation)
        rho = np.sqrt(((local / np.asarray(les.radii)) ** 2).sum(-1))
        t = np.clip((1.25 - rho) / (1.25 - 0.8), 0.0, 1.0)
        factor += (les.contrast * t * t * (3 - 2 * t)).astype(np.float32)
        gt |= rho <= 1.0
    gt &= brain
    return (image * factor * brain).astype(np.float32), gt.astype(np.uint8)


def _contrast(lesions: list[dict]) -> str:
    """The subject's lesion type: ``hyper``, ``hypo``, ``mixed`` or ``none`` (a metadata
    column to group results by, e.g. ``adsys benchmark``'s ``group_by``)."""
    signs = {les["contrast"] > 0 for les in lesions}
    return {frozenset(): "none", frozenset({True}): "hyper",
            frozenset({False}): "hypo"}.get(frozenset(signs), "mixed")


def make_subject(seed: int, index: int, with_lesions: bool) -> dict:
    """One demo subject: arrays on the 2 mm MNI grid plus the parameters that made it."""
    t1, mask, wm, affine = mni152_2mm()
    ss = np.random.SeedSequence([seed, index])
    torch_seed, np_seed = (int(v) for v in ss.generate_state(2))
    rng = np.random.default_rng(np_seed)
    subject = tio.Subject(
        t1=tio.ScalarImage(tensor=torch.from_numpy(t1[None].copy()), affine=affine),
        wm=tio.ScalarImage(tensor=torch.from_numpy(wm[None].copy()), affine=affine),
        brain=tio.LabelMap(tensor=torch.from_numpy(mask[None].astype(np.uint8)), affine=affine),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(torch_seed)
        out = _healthy_transform()(subject)
    brain = out["brain"].numpy()[0] > 0
    image = np.clip(out["t1"].numpy()[0], 0, None) * brain * float(rng.uniform(300, 1200))
    wm_map = np.clip(out["wm"].numpy()[0], 0, 1) * brain
    lesions: list[Lesion] = []
    seg = None
    if with_lesions:
        lesions = draw_lesions(rng, wm_map, brain)
        image, seg = render_lesions(image, brain, lesions)
    return {
        "image": image.astype(np.float32),
        "mask": brain.astype(np.uint8),
        "wm": wm_map.astype(np.float32),
        "seg": seg,
        "affine": affine,
        "params": {
            "seed": seed,
            "index": index,
            "torch_seed": torch_seed,
            "numpy_seed": np_seed,
            "lesions": [asdict(les) for les in lesions],
        },
    }


def _to_lps(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same volume stored with the x and y axes reversed (LPS voxel order)."""
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[0, 3] = data.shape[0] - 1
    flip[1, 3] = data.shape[1] - 1
    return np.ascontiguousarray(data[::-1, ::-1]), affine @ flip


def write_demo_cohort(
    out_dir: str | Path,
    *,
    n_train: int = 16,
    n_val: int = 4,
    n_test: int = 8,
    seed: int = 0,
    progress: bool = True,
) -> Path:
    """Write the demo cohort (NIfTI + ``manifest.csv``) into ``out_dir``; returns the manifest."""
    out = Path(out_dir)
    splits = ["train"] * n_train + ["val"] * n_val + ["test"] * n_test
    entries = []
    for i, split in enumerate(tqdm(splits, desc="demo-data", unit="subject", disable=not progress)):
        sid = f"sub-{i:04d}"
        s = make_subject(seed, i, with_lesions=split == "test")
        lps = i % 3 == 2
        arrays = {k: s[k] for k in ("image", "mask", "wm", "seg") if s[k] is not None}
        paths = {}
        for name, arr in arrays.items():
            affine = s["affine"]
            if lps:
                arr, affine = _to_lps(arr, affine)
            dtype = np.uint8 if name in ("mask", "seg") else np.float32
            paths[name] = save_volume(out / name / f"{sid}_{name}.nii.gz", arr, affine, dtype)
        (out / "params").mkdir(parents=True, exist_ok=True)
        (out / "params" / f"{sid}.json").write_text(json.dumps(s["params"], indent=2))
        entries.append(
            SubjectEntry(
                subject_id=sid,
                image=paths["image"],
                split=split,
                mask=paths["mask"],
                seg=paths.get("seg"),
                wm=paths["wm"],
                meta={
                    "orientation": "LPS" if lps else "RAS",
                    "n_lesions": str(len(s["params"]["lesions"])),
                    "contrast": _contrast(s["params"]["lesions"]),
                },
            )
        )
    return write_manifest(out / "manifest.csv", entries)
