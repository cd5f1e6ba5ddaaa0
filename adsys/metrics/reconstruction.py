"""How well a model reconstructs its input: SSIM, PSNR, L1 (healthy / unhealthy), histogram KLD.

Inputs are (x, y, z) volumes in [0, 1] (``data_range`` 1) with a brain mask; every number is
computed over brain voxels only:

* ``l1`` — mean ``|x − x̂|``; ``l1_healthy`` / ``l1_unhealthy`` — the same over brain voxels
  outside / inside the ground-truth lesions, and ``l1_ratio = l1_unhealthy / l1_healthy``
  (cDDPM logs the split; a good detector reconstructs lesions badly: ratio ≫ 1);
* ``psnr`` — ``10 · log10(data_range² / MSE)`` in dB;
* ``ssim`` — the mean of the SSIM map (:func:`adsys.scoring.maps.ssim_map`, Gaussian 11 /
  σ 1.5, computed per axial slice) over brain voxels;
* ``kld`` — cDDPM's "KLD" between intensity histograms of input and reconstruction over
  *healthy* brain voxels (:func:`histogram_kld`).
"""

from __future__ import annotations

import numpy as np
import torch

from adsys.scoring.maps import ssim_map

__all__ = ["histogram_kld", "reconstruction_metrics"]


def histogram_kld(
    x: np.ndarray, rec: np.ndarray, bins: int = 500, value_range: tuple[float, float] = (0, 1)
) -> float:
    """cDDPM's histogram "KLD" of input vs reconstruction intensities (1-D voxel samples).

    As the paper defines it (eq. in §4.1): with 500 bins and densities ``p = count / (total ·
    bin width)``, ``KLD = [−Σ p_in log p_in] − [−Σ p_rec log p_rec]`` (terms with ``p = 0``
    count 0). Despite the name this is a difference of (discrete) entropies, not a
    Kullback–Leibler divergence; it is signed. Reported as defined so it can be compared.
    """
    def neg_entropy_term(values: np.ndarray) -> float:
        p, _ = np.histogram(values, bins=bins, range=value_range, density=True)
        p = p[p > 0]
        return float(-(p * np.log(p)).sum())

    return neg_entropy_term(np.ravel(x)) - neg_entropy_term(np.ravel(rec))


def reconstruction_metrics(
    x: np.ndarray,
    rec: np.ndarray,
    mask: np.ndarray,
    gt: np.ndarray | None = None,
    data_range: float = 1.0,
) -> dict[str, float]:
    """The metrics of the module doc for one volume; lesion-split entries need ``gt``."""
    x = np.asarray(x, dtype=np.float64)
    rec = np.asarray(rec, dtype=np.float64)
    brain = np.asarray(mask) > 0
    if x.shape != rec.shape or x.shape != brain.shape:
        raise ValueError(f"input {x.shape}, reconstruction {rec.shape}, mask {brain.shape} differ")
    nan = float("nan")
    if not brain.any():
        raise ValueError("the brain mask is empty")
    err = np.abs(x - rec)
    mse = float(np.mean((x - rec)[brain] ** 2))
    xt = torch.from_numpy(x).permute(2, 0, 1).unsqueeze(1)  # axial slices (z, 1, x, y)
    rt = torch.from_numpy(rec).permute(2, 0, 1).unsqueeze(1)
    ssim = ssim_map(xt, rt, spatial_dims=2, data_range=data_range)[:, 0].permute(1, 2, 0).numpy()
    out = {
        "l1": float(err[brain].mean()),
        "psnr": float(10 * np.log10(data_range**2 / mse)) if mse > 0 else float("inf"),
        "ssim": float(ssim[brain].mean()),
    }
    healthy = brain if gt is None else brain & ~(np.asarray(gt) > 0)
    out["kld"] = histogram_kld(x[healthy], rec[healthy]) if healthy.any() else nan
    if gt is not None:
        lesion = brain & (np.asarray(gt) > 0)
        l1_h = float(err[healthy].mean()) if healthy.any() else nan
        l1_u = float(err[lesion].mean()) if lesion.any() else nan
        out.update(l1_healthy=l1_h, l1_unhealthy=l1_u,
                   l1_ratio=l1_u / l1_h if l1_h and np.isfinite(l1_u) else nan)
    return out
