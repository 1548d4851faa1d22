"""k-nearest-neighbour manifold metrics between real and generated features.

- Precision and recall (Kynkäänniemi et al., 2019): each set's manifold is the union of balls around its
  points with radius the distance to the k-th nearest neighbour in the same set; precision is the share of
  generated points inside the real manifold, recall the share of real points inside the generated one.
- Density and coverage (Naeem et al., 2020), on the real balls only: density counts how many real balls
  hold each generated point (divided by k; about 1 when the two sets match), coverage is the share of real
  balls that hold at least one generated point. Both resist the outliers that inflate precision/recall.

The papers pick different k: Kynkäänniemi et al. use k = 3 for precision/recall (torch-fidelity's default),
Naeem et al. recommend k = 5 for density/coverage (with 10,000 samples per set). One ``k`` serves all four
here, so that they describe the same balls; the default follows precision/recall, and a run comparing with
published density/coverage numbers should pass k=5.

A point on a ball's boundary is inside it for precision and recall (``<=``, as torch-fidelity computes
them) and outside it for density and coverage (``<``, as Naeem et al.'s code does). It matters only for
duplicated points, the memorization case: a copy of a real point lies exactly on the ball of every real
point whose k-th neighbour it is, so ``<=`` would count a set against its own copy at density (k + 1) / k
instead of 1. Distances within ``BOUNDARY_RTOL`` of a radius count as on the boundary.

Distances are float64 and go through ``torch.cdist`` in blocks of ``block_size`` rows, so no (M, N)
matrix is ever held whole: 10,000 x 10,000 sets need a few 1024 x 10,000 blocks (80 MB each) at a time.
"""

import torch
from torch import Tensor

# torch.cdist's distances carry rounding errors (of order 1e-15 relative) that depend on the shapes of the
# blocks, so a copy's distance to a real ball's centre can come out a hair below the radius it equals;
# for density and coverage a point this close to the boundary counts as on it, hence outside.
BOUNDARY_RTOL = 1e-9


def _knn_radii(x: Tensor, k: int, block_size: int) -> Tensor:
    """Distance from each point to its k-th nearest neighbour in the same set (itself excluded)."""
    return torch.cat([torch.cdist(rows, x).kthvalue(k + 1, dim=1).values for rows in x.split(block_size)])


def manifold_metrics(real: Tensor, fake: Tensor, k: int = 3, *, block_size: int = 1024) -> dict[str, float]:
    if min(len(real), len(fake)) <= k:
        raise ValueError(f"k-NN metrics with k={k} need more than {k} points in each set, got {len(real)} "
                         f"real and {len(fake)} generated")
    real, fake = real.double().flatten(1), fake.double().flatten(1)
    real_radii, fake_radii = _knn_radii(real, k, block_size), _knn_radii(fake, k, block_size)
    fakes_in_real_manifold = 0  # precision numerator
    fakes_in_real_balls = 0  # density numerator: (generated point, real ball) pairs
    real_ball_hit = torch.zeros(len(real), dtype=torch.bool)  # coverage
    real_in_fake_manifold = torch.zeros(len(real), dtype=torch.bool)  # recall
    for fake_cols, radii in zip(fake.split(block_size), fake_radii.split(block_size), strict=True):
        real_to_fake = torch.cdist(real, fake_cols)  # (N, block), real points in rows as in torch-fidelity
        inside_real = real_to_fake <= real_radii[:, None]  # fake j inside (or on) real ball i
        strictly_inside_real = real_to_fake < real_radii[:, None] * (1 - BOUNDARY_RTOL)
        fakes_in_real_manifold += inside_real.any(0).sum().item()
        fakes_in_real_balls += strictly_inside_real.sum().item()
        real_ball_hit |= strictly_inside_real.any(1)
        real_in_fake_manifold |= (real_to_fake <= radii[None, :]).any(1)  # real i inside fake ball j
    return {
        "precision": fakes_in_real_manifold / len(fake),
        "recall": real_in_fake_manifold.double().mean().item(),
        "density": fakes_in_real_balls / len(fake) / k,
        "coverage": real_ball_hit.double().mean().item(),
    }
