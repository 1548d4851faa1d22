"""Sample-based distances between distributions in data space (used for 2D sets and as test oracles)."""

import torch
from torch import Tensor


def energy_distance(x: Tensor, y: Tensor) -> float:
    """Szekely's energy distance 2 E|X-Y| - E|X-X'| - E|Y-Y'| (V-statistic): 0 iff the laws are equal.

    Quadratic in the sample sizes; a few thousand points per side is plenty for 2D data.
    """
    x, y = x.double().flatten(1), y.double().flatten(1)
    return (2 * torch.cdist(x, y).mean() - torch.cdist(x, x).mean() - torch.cdist(y, y).mean()).item()
