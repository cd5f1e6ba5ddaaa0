"""Shared by tests: small synthetic volumes with known geometry; jobs run as subprocesses."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np

LPS_FLIP = np.diag([-1.0, -1.0, 1.0, 1.0])


def ellipsoid_brain(shape: tuple[int, int, int], fill: float = 0.7) -> np.ndarray:
    """A boolean ellipsoid filling ``fill`` of each half-axis, centred in ``shape``."""
    grid = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    return sum((g / fill) ** 2 for g in grid) <= 1.0


def brain_volume(shape=(20, 24, 18), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(image, mask): positive random intensities inside an ellipsoid, 0 outside."""
    rng = np.random.default_rng(seed)
    mask = ellipsoid_brain(shape)
    image = (rng.uniform(50, 150, shape) * mask).astype(np.float32)
    return image, mask


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray, dtype=np.float32) -> Path:
    """Write with nibabel directly (so tests can write what adsys itself refuses to)."""
    nib.save(nib.Nifti1Image(np.asarray(data, dtype=dtype), affine), str(path))
    return path


def lps_affine(shape, spacing=(1.0, 1.0, 1.0), origin=(10.0, 20.0, -30.0)) -> np.ndarray:
    """An LPS-stored affine: voxel axes 0 and 1 run towards -x and -y in RAS world."""
    a = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    a[:3, 3] = origin
    return a


def job_env(**extra: str) -> dict[str, str]:
    """This process's environment for a Ray job subprocess: no usage stats, Ray on loopback,
    no inherited ``RAY_ADDRESS`` (a job starts its own local Ray unless ``extra`` names one)."""
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    env.pop("RAY_ADDRESS", None)
    return {**env, **extra}


def _session_pids(sid: int) -> list[int]:
    """The live (not zombie) processes of session ``sid``, from /proc."""
    pids = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:  # exited meanwhile
            continue
        state, _ppid, _pgrp, session = stat.rsplit(")", 1)[1].split()[:4]
        if int(session) == sid and state != "Z":
            pids.append(int(entry))
    return pids


def kill_session(leader: subprocess.Popen, timeout: float = 60) -> None:
    """SIGKILL every process of the session ``leader`` started (``start_new_session=True``)
    and wait until none is left: killing its process group is not enough, as Ray's worker
    processes run in process groups of their own (same session) and would otherwise live on
    for a moment, still writing the job's outputs."""
    deadline = time.monotonic() + timeout
    while pids := _session_pids(leader.pid):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert time.monotonic() < deadline, f"processes {pids} survived SIGKILL"
        time.sleep(0.05)
    leader.wait()


def sigkill_when(cmd: list[str], env: dict[str, str], ready: Callable[[], bool], what: str,
                 timeout: float = 300) -> None:
    """Run ``cmd`` in its own session and SIGKILL all of it (the job, the local Ray it started
    and Ray's workers) as soon as ``ready()`` holds: a job killed mid-run. Fails when the job
    exits first or ``what`` (the awaited state) does not happen within ``timeout`` s."""
    job = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            assert job.poll() is None, f"the job exited before {what}"
            assert time.monotonic() < deadline, f"waited {timeout} s for {what}"
            time.sleep(0.05)
    finally:
        kill_session(job)


def overfit_losses(method, batch: dict, steps: int, lr: float = 3e-3, draws: int | None = 4
                   ) -> tuple[float, float]:
    """(mean of the first 4 losses, mean of the last 4) of ``steps`` Adam steps of
    ``method.training_loss`` on one fixed ``batch``; ``draws``: cycle through that many
    seeded generators (a fixed set of t / noise draws), ``None``: a fresh generator each
    step."""
    import torch

    opt = torch.optim.Adam(method.parameters(), lr=lr)
    losses = []
    for step in range(steps):
        g = torch.Generator() if draws is None else torch.Generator().manual_seed(step % draws)
        loss = method.training_loss(batch, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return sum(losses[:4]) / 4, sum(losses[-4:]) / 4
