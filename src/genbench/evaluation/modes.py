"""Mode coverage of samples from a Gaussian mixture, as in the Unrolled GAN / VEEGAN / PacGAN papers.

A sample is high quality when it lies within ``n_std`` standard deviations of its nearest mode's centre; a
mode is covered when at least ``min_count`` high-quality samples fall to it.
"""

import torch
from torch import Tensor


def mode_coverage(samples: Tensor, modes: Tensor, std: float, n_std: float = 3.0,
                  min_count: int = 1) -> dict[str, float]:
    dist, nearest = torch.cdist(samples.double(), modes.double()).min(dim=1)
    good = dist <= n_std * std
    counts = nearest[good].bincount(minlength=len(modes))
    covered = int((counts >= min_count).sum())
    return {"modes_covered": covered, "modes_total": len(modes), "mode_coverage": covered / len(modes),
            "high_quality_fraction": good.double().mean().item()}
