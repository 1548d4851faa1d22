"""Shared backbones, picked from the data's shape so every family uses the same building blocks."""

from genbench.nets.conv import ConvDecoder, ConvEncoder
from genbench.nets.mlp import MLP

__all__ = ["MLP", "ConvDecoder", "ConvEncoder", "is_image_shape"]


def is_image_shape(data_shape: tuple[int, ...]) -> bool:
    """Images are (C, H, W); anything else is treated as a flat vector."""
    return len(data_shape) == 3
