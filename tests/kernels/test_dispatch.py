"""Backend selection: Triton for CUDA tensors, the twin elsewhere, ADSYS_KERNELS forces."""

from __future__ import annotations

import pytest
import torch

from adsys.kernels.dispatch import KernelBackendError, KernelPair, select_backend


def test_auto_picks_twin_on_cpu_and_triton_on_cuda(monkeypatch):
    monkeypatch.delenv("ADSYS_KERNELS", raising=False)
    assert select_backend("cpu") == "torch"
    assert select_backend(torch.device("cuda", 0)) == "triton"
    monkeypatch.setenv("ADSYS_KERNELS", "auto")
    assert select_backend("cpu") == "torch"


def test_env_forces_a_backend(monkeypatch):
    monkeypatch.setenv("ADSYS_KERNELS", "torch")
    assert select_backend("cuda") == "torch"
    monkeypatch.setenv("ADSYS_KERNELS", "triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert select_backend("cpu") == "triton"


def test_forced_triton_on_cpu_without_interpreter_raises(monkeypatch):
    monkeypatch.setenv("ADSYS_KERNELS", "triton")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(KernelBackendError, match="TRITON_INTERPRET=1"):
        select_backend("cpu")


def test_unknown_backend_name_raises(monkeypatch):
    monkeypatch.setenv("ADSYS_KERNELS", "cuda")
    with pytest.raises(KernelBackendError, match="not a backend"):
        select_backend("cpu")


def test_kernel_pair_routes_by_first_tensor(monkeypatch):
    pair = KernelPair("probe", triton_fn=lambda x: ("triton", x), torch_fn=lambda x: ("torch", x))
    x = torch.zeros(2)
    monkeypatch.delenv("ADSYS_KERNELS", raising=False)
    assert pair(x)[0] == "torch"
    monkeypatch.setenv("ADSYS_KERNELS", "triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert pair(x)[0] == "triton"
