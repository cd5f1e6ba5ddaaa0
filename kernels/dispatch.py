"""Choose between a Triton kernel and its torch twin.

Rule: Triton for CUDA tensors, the torch twin otherwise. The environment variable
``ADSYS_KERNELS`` overrides it: ``torch`` always runs the twin; ``triton`` always runs the
Triton kernel, which on CPU tensors is only possible under the Triton interpreter
(``TRITON_INTERPRET=1``, as the tests set it). ``auto`` or unset applies the rule.

Usage::

    stage = KernelPair("advdiff_stage", triton_fn=_stage_triton, torch_fn=_stage_torch)
    stage(p, ...)  # the first tensor argument decides the device
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
from collections.abc import Callable
from typing import Any, Literal

import torch

logger = logging.getLogger(__name__)

Backend = Literal["torch", "triton"]
ENV_VAR = "ADSYS_KERNELS"


class KernelBackendError(RuntimeError):
    """The requested kernel backend cannot run on this machine / these tensors."""


@functools.cache
def triton_available() -> bool:
    """True when the ``triton`` package can be imported (it imports without a GPU)."""
    return importlib.util.find_spec("triton") is not None


def triton_interpreted() -> bool:
    """True when Triton kernels run in the CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def select_backend(device: torch.device | str) -> Backend:
    """Backend for tensors on ``device``, honouring ``ADSYS_KERNELS=torch|triton|auto``.

    Raises :class:`KernelBackendError` when Triton is forced but cannot run: Triton missing,
    or CPU tensors without ``TRITON_INTERPRET=1`` (compiled Triton has no CPU backend).
    """
    device = torch.device(device)
    forced = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if forced not in ("auto", "torch", "triton"):
        raise KernelBackendError(
            f"{ENV_VAR}={forced!r} is not a backend; use 'torch', 'triton' or 'auto' (or unset it)"
        )
    if forced == "torch":
        return "torch"
    if forced == "triton":
        if not triton_available():
            raise KernelBackendError(f"{ENV_VAR}=triton but the triton package is not installed")
        if device.type != "cuda" and not triton_interpreted():
            raise KernelBackendError(
                f"{ENV_VAR}=triton with tensors on {device}: compiled Triton needs a GPU; "
                "set TRITON_INTERPRET=1 to run the interpreter on CPU, or unset "
                f"{ENV_VAR} to use the torch twin"
            )
        return "triton"
    return "triton" if device.type == "cuda" and triton_available() else "torch"


class KernelPair:
    """A Triton kernel launcher and its torch twin, with one signature; calls dispatch.

    The device of the first tensor among the positional arguments picks the backend.
    """

    def __init__(
        self, name: str, *, triton_fn: Callable[..., Any], torch_fn: Callable[..., Any]
    ) -> None:
        self.name = name
        self.triton_fn = triton_fn
        self.torch_fn = torch_fn
        functools.update_wrapper(self, torch_fn)

    def backend_for(self, *args: Any) -> Backend:
        device = next((a.device for a in args if isinstance(a, torch.Tensor)), "cpu")
        return select_backend(device)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        impl = self.triton_fn if self.backend_for(*args) == "triton" else self.torch_fn
        return impl(*args, **kwargs)
