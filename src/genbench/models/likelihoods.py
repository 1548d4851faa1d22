"""Per-example observation likelihoods shared by the families that decode to data space.

Both return log-probabilities summed over the dimensions of one example, in nats:
- :func:`gaussian_log_prob`, a diagonal Gaussian density, for real-valued vectors;
- :func:`discretized_logistic_log_prob`, the PixelCNN++ discretized logistic for 8-bit pixels. Its
  probability mass of a pixel value equals the density of a dequantized pixel on [0, 256) (bins of width
  1), so its nats are comparable with the continuous families' dequantized densities.
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from genbench.randomness import uniform_like

_HALF_BIN = 1.0 / 255.0  # pixels mapped to [-1, 1]: bins of width 2/255 around each of 256 centres


def gaussian_log_prob(x: Tensor, mean: Tensor, log_std: Tensor) -> Tensor:
    z = (x - mean) * torch.exp(-log_std)
    per_dim = -0.5 * z.pow(2) - log_std - 0.5 * math.log(2 * math.pi)
    return per_dim.flatten(1).sum(1)


def standard_normal_log_prob(z: Tensor) -> Tensor:
    return (-0.5 * z.pow(2) - 0.5 * math.log(2 * math.pi)).flatten(1).sum(1)


def discretized_logistic_log_prob(x: Tensor, mean: Tensor, log_scale: Tensor) -> Tensor:
    """log P(x) for x in [-1, 1] at the 256 pixel centres; the edge bins reach to -inf and +inf."""
    return discretized_logistic_log_mass(x, mean, log_scale).flatten(1).sum(1)


def discretized_logistic_log_mass(x: Tensor, mean: Tensor, log_scale: Tensor) -> Tensor:
    """:func:`discretized_logistic_log_prob` of each element (broadcast), not summed."""
    centred = x - mean
    inv_scale = torch.exp(-log_scale)
    plus = inv_scale * (centred + _HALF_BIN)
    minus = inv_scale * (centred - _HALF_BIN)
    log_cdf_plus = plus - F.softplus(plus)  # log sigmoid(plus), for the lowest bin
    log_survival_minus = -F.softplus(minus)  # log (1 - sigmoid(minus)), for the highest bin
    cdf_delta = torch.sigmoid(plus) - torch.sigmoid(minus)
    mid = inv_scale * centred
    # When the bin mass underflows, use density x bin width at the centre instead.
    log_mass_mid = mid - log_scale - 2.0 * F.softplus(mid) + math.log(2 * _HALF_BIN)
    inner = torch.where(cdf_delta > 1e-5, torch.log(cdf_delta.clamp_min(1e-12)), log_mass_mid)
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_survival_minus, inner))


def discretized_logistic_mean(mean: Tensor, log_scale: Tensor) -> Tensor:
    """E[clamp(X, -1, 1)] for X ~ Logistic(mean, scale): the mean image, not the location (its mode).

    From E[clamp(X, a, b)] = a + integral_a^b P(X > x) dx = a + s (softplus((m - a)/s) - softplus((m - b)/s)).
    Where the decoder is unsure of a stroke, the location falls to the background and the mean does not.
    """
    scale = torch.exp(log_scale)
    return -1.0 + scale * (F.softplus((mean + 1.0) / scale) - F.softplus((mean - 1.0) / scale))


def sample_discretized_logistic(mean: Tensor, log_scale: Tensor) -> Tensor:
    """A draw in [-1, 1] (continuous; quantize with :func:`genbench.data.pixels.from_symmetric`)."""
    u = uniform_like(mean).clamp(1e-5, 1 - 1e-5)
    return (mean + torch.exp(log_scale) * (torch.log(u) - torch.log1p(-u))).clamp(-1, 1)
