"""What a process used: its peak memory, recorded with trained models and inferred subjects
(``adsys benchmark`` reports it per method)."""

from __future__ import annotations

import resource
import sys

import torch

__all__ = ["peak_memory_mb"]


def peak_memory_mb() -> dict[str, float]:
    """This process's peak resident memory (``peak_rss_mb``, MiB: ``ru_maxrss``, KiB on
    Linux, bytes on macOS) and, on a GPU, torch's peak allocated memory (``peak_gpu_mb``)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {"peak_rss_mb": round(rss / (2**20 if sys.platform == "darwin" else 2**10), 1)}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out
