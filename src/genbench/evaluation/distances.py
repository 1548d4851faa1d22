"""Sample-based distances between distributions in data space (used for 2D sets and as test oracles)."""

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor


def energy_distance(x: Tensor, y: Tensor) -> float:
    """Szekely's energy distance 2 E|X-Y| - E|X-X'| - E|Y-Y'| (V-statistic): 0 iff the laws are equal.

    Quadratic in the sample sizes; a few thousand points per side is plenty for 2D data.
    """
    x, y = x.double().flatten(1), y.double().flatten(1)
    return (2 * torch.cdist(x, y).mean() - torch.cdist(x, x).mean() - torch.cdist(y, y).mean()).item()



def optimal_matching(x: Tensor, y: Tensor) -> Tensor:
    """The one-to-one matching of equal-size samples with the least summed squared distance (exact, by the
    Hungarian algorithm; O(n^3), a few seconds at n = 2000): ``x[i]`` goes with ``y[order[i]]``."""
    if len(x) != len(y):
        raise ValueError(f"a one-to-one matching needs samples of equal size, got {len(x)} and {len(y)}")
    cost = torch.cdist(x.detach().double().flatten(1), y.detach().double().flatten(1)).pow(2)
    _, cols = linear_sum_assignment(cost.cpu().numpy())
    return torch.as_tensor(cols, device=x.device)


def wasserstein2(x: Tensor, y: Tensor) -> float:
    """W2 between the empirical laws of two samples of equal size: the root mean squared distance of the
    optimal matching. Between two samples of one law it is not 0 but shrinks with n: compare at a stated n."""
    order = optimal_matching(x, y)
    return (x.double().flatten(1) - y[order].double().flatten(1)).pow(2).sum(1).mean().sqrt().item()
