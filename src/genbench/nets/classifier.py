"""A small CNN classifier whose penultimate layer serves as the feature space of image sample metrics.

Inception weights cannot be downloaded offline, so the benchmark trains this net per dataset instead. Each
stage is two conv-BN-ReLU layers; a 2x max-pool sits between stages, one fewer than the halvings that keep
the side at least 4 pixels (8x8 digits: 2 stages, 28x28 MNIST: 3, 32x32 CIFAR-10: 4).
"""

from torch import Tensor, nn


def _conv_bn_relu(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


class SmallCNN(nn.Module):
    """Images (N, C, H, W) in [0, 1] -> features (N, feature_dim) -> logits (N, num_classes)."""

    def __init__(
        self, in_channels: int, image_size: int, num_classes: int, width: int = 32, feature_dim: int = 128
    ) -> None:
        super().__init__()
        if image_size < 4:
            raise ValueError(f"SmallCNN needs images of at least 4x4 pixels, got {image_size}")
        self.arch = dict(in_channels=in_channels, image_size=image_size, num_classes=num_classes,
                         width=width, feature_dim=feature_dim)  # fmt: skip
        layers: list[nn.Module] = []
        c = in_channels
        for stage in range((image_size // 4).bit_length()):
            if stage:
                layers.append(nn.MaxPool2d(2))
            c_out = width * 2**stage
            layers += _conv_bn_relu(c, c_out) + _conv_bn_relu(c_out, c_out)
            c = c_out
        self.trunk = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.embed = nn.Sequential(nn.Linear(c, feature_dim), nn.ReLU())
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(feature_dim, num_classes))

    def features(self, x: Tensor) -> Tensor:
        """The penultimate activations, the space Fréchet distances are computed in."""
        return self.embed(self.trunk(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))
