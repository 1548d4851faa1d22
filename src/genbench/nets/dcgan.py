"""DCGAN-style generator and discriminator (Radford et al., 2016) for small images.

Each entry of ``channels`` is one stride-2 stage, so the image sides must be divisible by 2^stages: two
stages serve 8x8 digits (2x2 at the bottom), 28x28 MNIST (7x7) and 32x32 CIFAR (8x8); three stages give
the classic 4x4 start for CIFAR. The generator uses batch norm and ReLU and ends in tanh, so it outputs
[-1, 1] (see :func:`genbench.data.pixels.to_symmetric`). The discriminator uses LeakyReLU(0.2) and no batch
norm: the WGAN-GP penalty is defined per example, which batch statistics would break. It returns a feature
vector; the scalar head lives in the model, which can add a class-projection term to it.
"""

from collections.abc import Sequence

from torch import Tensor, nn

from genbench.errors import ConfigError


def _bottom(data_shape: tuple[int, ...], stages: int) -> tuple[int, int, int]:
    """Channels of the data and the (H, W) of the lowest-resolution feature map."""
    c, h, w = data_shape
    if h % 2**stages or w % 2**stages:
        raise ConfigError(f"{stages} DCGAN stages need image sides divisible by {2**stages}, got {h}x{w}; "
                          f"use fewer model.conv_channels")
    return c, h // 2**stages, w // 2**stages


class DCGANGenerator(nn.Module):
    """Vector (B, in_dim) -> image (B, C, H, W) in [-1, 1]; ``channels`` from high to low resolution."""

    def __init__(self, in_dim: int, data_shape: tuple[int, ...], channels: Sequence[int] = (32, 64)) -> None:
        super().__init__()
        c, h, w = _bottom(data_shape, len(channels))
        widths = list(reversed(channels))  # low resolution first
        self.start = (widths[0], h, w)
        self.head = nn.Linear(in_dim, widths[0] * h * w)
        layers: list[nn.Module] = [nn.BatchNorm2d(widths[0]), nn.ReLU()]
        for a, b in zip(widths, widths[1:] + widths[-1:], strict=True):
            up = nn.ConvTranspose2d(a, b, 4, stride=2, padding=1, bias=False)  # bias: the batch norm's
            layers += [up, nn.BatchNorm2d(b), nn.ReLU()]
        layers += [nn.Conv2d(widths[-1], c, 3, padding=1), nn.Tanh()]
        self.body = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.body(self.head(z).view(-1, *self.start))


class DCGANDiscriminator(nn.Module):
    """Image (B, C, H, W) -> features (B, out_dim); ``channels`` from high to low resolution."""

    def __init__(self, data_shape: tuple[int, ...], channels: Sequence[int] = (32, 64)) -> None:
        super().__init__()
        c, h, w = _bottom(data_shape, len(channels))
        widths = list(channels)
        layers: list[nn.Module] = [nn.Conv2d(c, widths[0], 3, padding=1), nn.LeakyReLU(0.2)]
        for a, b in zip(widths[:1] + widths[:-1], widths, strict=True):
            layers += [nn.Conv2d(a, b, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        self.body = nn.Sequential(*layers, nn.Flatten())
        self.out_dim = widths[-1] * h * w

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)
