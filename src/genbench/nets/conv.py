"""A small convolutional encoder/decoder pair for images whose sides are divisible by 4.

Two stride-2 stages take 8x8 digits to 2x2, 28x28 MNIST to 7x7 and 32x32 CIFAR to 8x8; the decoder
mirrors the encoder, so one pair serves every image dataset in the benchmark.
"""

from collections.abc import Sequence

from torch import Tensor, nn

from genbench.errors import ConfigError


def _check_shape(data_shape: tuple[int, ...]) -> tuple[int, int, int]:
    c, h, w = data_shape
    if h % 4 or w % 4:
        raise ConfigError(f"conv backbones need image sides divisible by 4, got {h}x{w}")
    return c, h, w


class ConvEncoder(nn.Module):
    """Image (B, C, H, W) -> vector (B, out_dim)."""

    def __init__(self, data_shape: tuple[int, ...], out_dim: int, channels: Sequence[int] = (32, 64)) -> None:
        super().__init__()
        c, h, w = _check_shape(data_shape)
        c1, c2 = channels
        self.features = nn.Sequential(
            nn.Conv2d(c, c1, 3, padding=1), nn.SiLU(),
            nn.Conv2d(c1, c1, 4, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(c1, c2, 4, stride=2, padding=1), nn.SiLU(),
            nn.Flatten(),
        )  # fmt: skip
        self.head = nn.Linear(c2 * (h // 4) * (w // 4), out_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


class ConvDecoder(nn.Module):
    """Vector (B, in_dim) -> image-shaped map (B, out_channels, H, W)."""

    def __init__(
        self,
        in_dim: int,
        data_shape: tuple[int, ...],
        out_channels: int,
        channels: Sequence[int] = (32, 64),
    ) -> None:
        super().__init__()
        _, h, w = _check_shape(data_shape)
        c1, c2 = channels
        self.start = (c2, h // 4, w // 4)
        self.head = nn.Linear(in_dim, c2 * (h // 4) * (w // 4))
        self.body = nn.Sequential(
            nn.SiLU(),
            nn.ConvTranspose2d(c2, c1, 4, stride=2, padding=1), nn.SiLU(),
            nn.ConvTranspose2d(c1, c1, 4, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(c1, out_channels, 3, padding=1),
        )  # fmt: skip

    def forward(self, z: Tensor) -> Tensor:
        return self.body(self.head(z).view(-1, *self.start))
