"""The time-conditioned network that diffusion and flow matching both learn (a noise or a velocity
prediction): a residual MLP for vectors, a U-Net for images. One set of options, one builder."""

import math
from dataclasses import dataclass

from torch import nn

from genbench.errors import ConfigError
from genbench.nets.time_mlp import TimeMLP
from genbench.nets.unet import UNet
from genbench.schema import Schema, param


@dataclass
class TimeBackboneConfig(Schema):
    backbone: str = param("auto", choices=["auto", "unet", "mlp"])  # auto: U-Net for images, MLP for vectors
    hidden_dim: int = param(128, ge=1)  # TimeMLP width (vectors, or flattened images with backbone=mlp)
    depth: int = param(3, ge=1)  # TimeMLP residual blocks
    unet_channels: int = param(16, ge=1)  # UNet base width (image data)
    channel_mults: list[int] = param([1, 2], ge=1)  # UNet width per level; levels after the 1st halve H, W
    num_res_blocks: int = param(1, ge=1)  # UNet residual blocks per level
    attention: bool = False  # UNet self-attention at the lowest resolution
    dropout: float = param(0.0, ge=0, lt=1)


def time_backbone(data_shape: tuple[int, ...], hp: TimeBackboneConfig,
                  num_labels: int | None = None) -> nn.Module:
    """``hp.backbone``: the U-Net (images only) or the TimeMLP (any data, images flattened); ``auto`` takes
    the U-Net for images (C, H, W) and the TimeMLP for vectors. ``num_labels`` adds a label embedding."""
    is_image = len(data_shape) == 3
    if hp.backbone == "unet" and not is_image:
        raise ConfigError(f"model.backbone=unet needs image data, not shape {tuple(data_shape)}: "
                          "use backbone=auto or mlp")
    if hp.backbone == "unet" or (hp.backbone == "auto" and is_image):
        return UNet(data_shape, hp.unet_channels, hp.channel_mults, hp.num_res_blocks, hp.attention,
                    hp.dropout, num_labels)
    return TimeMLP(math.prod(data_shape), hp.hidden_dim, hp.depth, num_labels)
