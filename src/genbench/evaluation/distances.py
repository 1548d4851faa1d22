"""Sample-based distances between distributions in data space (used for 2D sets and as test oracles)."""

import torch
from torch import Tensor

from genbench.matching import optimal_matching


def energy_distance(x: Tensor, y: Tensor) -> float:
    """Szekely's energy distance 2 E|X-Y| - E|X-X'| - E|Y-Y'| (V-statistic): 0 iff the laws are equal.

    Quadratic in the sample sizes; a few thousand points per side is plenty for 2D data.
    """
    x, y = x.double().flatten(1), y.double().flatten(1)
    return (2 * torch.cdist(x, y).mean() - torch.cdist(x, x).mean() - torch.cdist(y, y).mean()).item()


def wasserstein2(x: Tensor, y: Tensor) -> float:
    """W2 between the empirical laws of two samples of equal size: the root mean squared distance of the
    optimal matching. Between two samples of one law it is not 0 but shrinks with n: compare at a stated n."""
    order = optimal_matching(x, y)
    return (x.double().flatten(1) - y[order].double().flatten(1)).pow(2).sum(1).mean().sqrt().item()
