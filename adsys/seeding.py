"""Seeds: every random draw in adsys takes a seed derived here from named keys.

:func:`derive_seed` hashes ``"adsys-<domain>:<key>:<key>:…"`` with SHA-256 and keeps 63 bits
of it: stable across runs, machines and Python versions, and independent of the order in
which work is scheduled, so any sample, lesion, batch or map can be reproduced from its keys
alone. The domains in use and their keys:

=============  =========================================================  ==========================
domain         keys                                                       draws
=============  =========================================================  ==========================
``variant``    spec seed, subject id, variant index, attempt              an offline shard variant
``train``      run seed, rank                                             a rank's t / noise draws
``val``        run seed, rank                                             the fixed validation draws
``corruption`` run seed, rank, loader worker, epoch, batch index          an online corruption
``member``     run seed, subject id, ensemble member                      a model's inference noise
``synth``      CLI seed, attempt                                          ``adsys synth fluid``
=============  =========================================================  ==========================

Random numbers are drawn on the CPU from a ``torch.Generator`` (then moved to the device), so
a seed gives the same draws on every machine and device.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

SeedLike = int | torch.Generator

__all__ = ["SeedLike", "as_generator", "child_seeds", "derive_seed", "generator"]


def derive_seed(domain: str, *keys: int | str) -> int:
    """A 63-bit seed for ``keys`` in ``domain`` (module doc); keys are ints or strings
    without ``:``."""
    parts = [str(int(k)) if not isinstance(k, str) else k for k in keys]
    if any(":" in p for p in parts):
        raise ValueError(f"seed keys may not contain ':', got {keys}")
    blob = ":".join([f"adsys-{domain}", *parts]).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "little") >> 1


def generator(domain: str, *keys: int | str) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with :func:`derive_seed` ``(domain, *keys)``."""
    return torch.Generator().manual_seed(derive_seed(domain, *keys))


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
    """Independent 63-bit seeds, one per name, spawned from ``seed`` (``numpy``'s
    ``SeedSequence``; the fluid generator's streams, so its recorded seeds replay)."""
    ss = np.random.SeedSequence(int(seed))
    states = ss.spawn(len(names))
    return {
        name: int(st.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))
        for name, st in zip(names, states, strict=True)
    }
