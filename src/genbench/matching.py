"""The exact optimal one-to-one matching of two samples: a leaf module, since training (flow matching's
minibatch OT pairs) and evaluation (W2 between samples) both need it."""

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor


def optimal_matching(x: Tensor, y: Tensor) -> Tensor:
    """The one-to-one matching of equal-size samples with the least summed squared distance (exact, by the
    Hungarian algorithm; O(n^3), a few seconds at n = 2000): ``x[i]`` goes with ``y[order[i]]``."""
    if len(x) != len(y):
        raise ValueError(f"a one-to-one matching needs samples of equal size, got {len(x)} and {len(y)}")
    cost = torch.cdist(x.detach().double().flatten(1), y.detach().double().flatten(1)).pow(2)
    _, cols = linear_sum_assignment(cost.cpu().numpy())
    return torch.as_tensor(cols, device=x.device)
