"""Explicit seeds for every random draw in :mod:`adsys.synth`.

Random numbers are always drawn on the CPU from a ``torch.Generator`` (then moved to the
target device), so a seed gives the same draws on every machine and device.
"""

from __future__ import annotations

import numpy as np
import torch

SeedLike = int | torch.Generator


def as_generator(seed: SeedLike) -> torch.Generator:
    """A CPU ``torch.Generator`` from an int seed, or ``seed`` itself if it is one."""
    if isinstance(seed, torch.Generator):
        if seed.device.type != "cpu":
            raise ValueError("pass a CPU torch.Generator; draws are made on the CPU")
        return seed
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise TypeError(f"seed must be an int or a torch.Generator, got {type(seed).__name__}")
    gen = torch.Generator(device="cpu")
    gen.manual_seed(int(seed) % 2**63)
    return gen


def child_seeds(seed: int, names: tuple[str, ...]) -> dict[str, int]:
    """Independent 63-bit seeds, one per name, derived from ``seed`` (stable across runs)."""
    ss = np.random.SeedSequence(int(seed))
    states = ss.spawn(len(names))
    return {
        name: int(st.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))
        for name, st in zip(names, states, strict=True)
    }


def derive_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed for ``(seed, *keys)`` (e.g. run seed, subject, variant), stable."""
    seq = np.random.SeedSequence([int(seed), *(int(k) for k in keys)])
    state = seq.generate_state(1, dtype=np.uint64)
    return int(np.uint64(state[0]) >> np.uint64(1))
