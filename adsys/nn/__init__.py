"""Networks: the ADM-style UNet (2D/3D, FiLM conditioning) and image encoders."""

from adsys.nn.encoders import ResNetEncoder, ResNetEncoderConfig
from adsys.nn.unet import UNet, UNetConfig

__all__ = ["ResNetEncoder", "ResNetEncoderConfig", "UNet", "UNetConfig"]
