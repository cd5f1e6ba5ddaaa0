"""Triton kernels and their torch twins, installed as ``adsys.kernels``."""
