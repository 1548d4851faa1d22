"""Mode coverage of samples from an isotropic Gaussian mixture, as PacGAN (Lin et al., 2018) defines it.

PacGAN's rule (its paper and code, the setting of its Table 1, taken from VEEGAN, Srivastava et al. 2017):
each sample goes to its nearest mode; it is *high quality* when it lies strictly within ``n_std`` (3) standard
deviations of that mode's centre; a mode is *captured* when it is the nearest mode of at least one
high-quality sample. PacGAN counts over 2,500 samples (``eval.mode_samples``), and its numbers depend on
that count, so compare only at the same count.

``modes_covered_thresholded`` is a stricter, non-standard variant kept under its own name: a mode counts
only when at least ``min_count`` high-quality samples fall to it (``eval.mode_min_count``), so that a few
stray samples do not mark a mode as captured.
"""

import torch
from torch import Tensor


def mode_coverage(samples: Tensor, modes: Tensor, std: float, n_std: float = 3.0,
                  min_count: int = 20) -> dict[str, float]:
    """``modes_covered`` / ``mode_coverage`` / ``high_quality_fraction`` by PacGAN's rule, plus
    ``modes_covered_thresholded`` (modes with at least ``min_count`` high-quality samples)."""
    dist, nearest = torch.cdist(samples.double(), modes.double()).min(dim=1)
    high_quality = dist < n_std * std
    counts = nearest[high_quality].bincount(minlength=len(modes))
    covered = int((counts >= 1).sum())
    return {"modes_covered": covered, "modes_total": len(modes), "mode_coverage": covered / len(modes),
            "high_quality_fraction": high_quality.double().mean().item(),
            "modes_covered_thresholded": int((counts >= min_count).sum())}
