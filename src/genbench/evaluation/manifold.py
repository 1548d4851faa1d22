"""k-nearest-neighbour manifold metrics between real and generated features.

- Precision and recall (Kynkäänniemi et al., 2019): each set's manifold is the union of balls around its
  points with radius the distance to the k-th nearest neighbour in the same set; precision is the share of
  generated points inside the real manifold, recall the share of real points inside the generated one.
- Density and coverage (Naeem et al., 2020), on the real balls only: density counts how many real balls
  hold each generated point (divided by k; about 1 when the two sets match), coverage is the share of real
  balls that hold at least one generated point. Both resist the outliers that inflate precision/recall.
"""

import torch
from torch import Tensor


def _knn_radii(x: Tensor, k: int) -> Tensor:
    """Distance from each point to its k-th nearest neighbour in the same set (itself excluded)."""
    return torch.cdist(x, x).kthvalue(k + 1, dim=1).values


def manifold_metrics(real: Tensor, fake: Tensor, k: int = 3) -> dict[str, float]:
    real, fake = real.double().flatten(1), fake.double().flatten(1)
    real_radii, fake_radii = _knn_radii(real, k), _knn_radii(fake, k)
    fake_to_real = torch.cdist(fake, real)  # (M, N)
    inside_real = fake_to_real <= real_radii[None, :]  # fake j inside real ball i
    real_to_fake = fake_to_real.T  # (N, M)
    inside_fake = real_to_fake <= fake_radii[None, :]  # real i inside fake ball j
    return {
        "precision": inside_real.any(1).double().mean().item(),
        "recall": inside_fake.any(1).double().mean().item(),
        "density": (inside_real.double().sum(1).mean() / k).item(),
        "coverage": inside_real.any(0).double().mean().item(),
    }
