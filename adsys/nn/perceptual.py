"""A 3D perceptual distance on MedicalNet's ResNet-10 features, with user-given weights.

CondDiff's autoencoder adds a perceptual term (weight 0.002) computed by MONAI's
``PerceptualLoss``, whose networks are downloaded (torch.hub / LPIPS). adsys downloads
nothing: the user passes the weights file of MedicalNet's ResNet-10 (Chen et al. 2019,
``resnet_10_23dataset.pth``, the network of MONAI's ``medicalnet_resnet10_23datasets``),
read with ``torch.load(weights_only=True)``. The distance is MONAI's
``MedicalNetPerceptualSimilarity``: each volume z-scored (MONAI z-scores the whole batch at
once: the same for a batch of one), layer-4 features unit-normalised over channels, squared
differences summed over channels and averaged over space.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from adsys.errors import InputError

__all__ = ["MedicalNetResNet10", "load_medicalnet", "perceptual_distance"]


def _conv3(c_in: int, c_out: int, stride: int = 1, dilation: int = 1) -> nn.Conv3d:
    return nn.Conv3d(c_in, c_out, 3, stride=stride, padding=dilation, dilation=dilation,
                     bias=False)


class _Block(nn.Module):
    """MedicalNet's BasicBlock (shortcut "B": a 1×1×1 conv + BN when the shape changes)."""

    def __init__(self, c_in: int, c_out: int, stride: int, dilation: int) -> None:
        super().__init__()
        self.conv1 = _conv3(c_in, c_out, stride, dilation)
        self.bn1 = nn.BatchNorm3d(c_out)
        self.conv2 = _conv3(c_out, c_out, dilation=dilation)
        self.bn2 = nn.BatchNorm3d(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv3d(c_in, c_out, 1, stride=stride, bias=False),
                                            nn.BatchNorm3d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        return torch.relu(h + (x if self.downsample is None else self.downsample(x)))


class MedicalNetResNet10(nn.Module):
    """(B, 1, D, H, W) → layer-4 features (B, 512, D/8, H/8, W/8): MedicalNet's ResNet-10
    (strides 2 in the stem, the pool and layer 2; layers 3 and 4 dilated by 2 and 4)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(1, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm3d(64)
        self.maxpool = nn.MaxPool3d(3, stride=2, padding=1)
        self.layer1 = nn.Sequential(_Block(64, 64, 1, 1))
        self.layer2 = nn.Sequential(_Block(64, 128, 2, 1))
        self.layer3 = nn.Sequential(_Block(128, 256, 1, 2))
        self.layer4 = nn.Sequential(_Block(256, 512, 1, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(h))))


def load_medicalnet(path: str | Path) -> MedicalNetResNet10:
    """The frozen network (eval mode) from MedicalNet's weights file: a state dict, or a
    checkpoint holding one under ``state_dict``; DataParallel's ``module.`` prefixes and the
    segmentation head (``conv_seg``) are dropped."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such perceptual-network weights file",
                         "download MedicalNet's resnet_10_23dataset.pth and pass its path")
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state)
    state = {k.removeprefix("module."): v for k, v in state.items()
             if not k.removeprefix("module.").startswith("conv_seg")}
    net = MedicalNetResNet10()
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise InputError(path, f"not MedicalNet ResNet-10 weights ({str(exc)[:200]})",
                         "pass resnet_10_23dataset.pth (or a state dict of that network)"
                         ) from None
    return net.eval().requires_grad_(False)


def perceptual_distance(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """MONAI's MedicalNet perceptual similarity of one-channel volumes ``x`` and ``y``
    (B, 1, D, H, W), averaged over the batch (a scalar)."""

    def features(v: torch.Tensor) -> torch.Tensor:
        flat = v.flatten(1)
        z = (v - flat.mean(1).view(-1, 1, 1, 1, 1)) / flat.std(1).view(-1, 1, 1, 1, 1)
        f = net(z)
        return f / (f.pow(2).sum(1, keepdim=True) + 1e-10).sqrt()

    return (features(x) - features(y)).pow(2).sum(1).mean()
