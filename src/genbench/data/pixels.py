"""The one place where 8-bit pixels are mapped to model space and likelihoods to reported units.

Datamodules hand out images as uint8 tensors; each family converts them here, so no family invents its
own scaling. The likelihood protocol every family follows:

- a likelihood of an image is a density of *uniformly dequantized* pixels ``x + u``, ``u ~ U[0, 1)^D``,
  on ``[0, 256)^D``; it lower-bounds the log-probability of the uint8 data, and families that model
  ``(x + u) / scale`` convert with :func:`log_density_rescale`;
- a discrete model's probability mass over the 256 levels of each pixel equals such a density (bins of
  width 1), so its log-pmf is reported as is;
- results are reported in nats per example and in bits per dimension (:func:`bits_per_dim`).
"""

import math

import torch
from torch import Tensor

LEVELS = 256  # values an 8-bit pixel can take


def to_unit(x: Tensor) -> Tensor:
    """uint8 pixels to floats in [0, 1] (x / 255)."""
    return x.float() / (LEVELS - 1)


def to_symmetric(x: Tensor) -> Tensor:
    """uint8 pixels to floats in [-1, 1] (the range tanh outputs and diffusion models use)."""
    return x.float() / ((LEVELS - 1) / 2) - 1.0


def from_unit(x: Tensor) -> Tensor:
    """Floats in [0, 1] back to uint8 pixels: out-of-range values are clamped, then rounded."""
    return (x.clamp(0.0, 1.0) * (LEVELS - 1)).round().to(torch.uint8)


def from_symmetric(x: Tensor) -> Tensor:
    """Floats in [-1, 1] back to uint8 pixels: out-of-range values are clamped, then rounded."""
    return from_unit((x + 1.0) / 2.0)


def dequantize(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """uint8 pixels plus uniform noise: floats in [x, x + 1), so in [0, 256)."""
    device = generator.device if generator is not None else x.device
    noise = torch.rand(x.shape, generator=generator, device=device).to(x.device)
    base = x.float()
    # In float32, 255 + (1 - 2^-24) rounds to 256.0; keep every value strictly below x + 1.
    return torch.minimum(base + noise, torch.nextafter(base + 1.0, base))


def bits_per_dim(nll_nats: Tensor | float, num_dims: int) -> Tensor | float:
    """A negative log-likelihood in nats per example as bits per dimension: nll / (D ln 2)."""
    return nll_nats / (num_dims * math.log(2.0))


def log_density_rescale(log_p: Tensor | float, num_dims: int, scale: float) -> Tensor | float:
    """The log-density of x on [0, 256)^D from the log-density of y = x / scale (minus D log scale).

    For example a flow on ``(x + u) / 256`` in [0, 1) passes ``scale=256``.
    """
    return log_p - num_dims * math.log(scale)
