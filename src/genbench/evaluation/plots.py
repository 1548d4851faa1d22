"""``samples.png``: a scatter over held-out data for 2D sets, an image grid for image sets."""

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torchvision.utils import make_grid  # noqa: E402


def save_samples_png(samples: torch.Tensor, reference: torch.Tensor, path: Path, title: str,
                     nrow: int | None = None) -> None:
    """``nrow``: images per row of a grid (default: a square grid)."""
    samples, reference = samples.detach().cpu(), reference.detach().cpu()
    if samples.dim() == 4:
        nrow = nrow or int(math.ceil(math.sqrt(len(samples))))
        grid = make_grid(samples, nrow=nrow, padding=1, pad_value=128).permute(1, 2, 0)
        fig, ax = plt.subplots(figsize=(6, 6))
        ax.imshow(grid.squeeze(-1) if grid.shape[-1] == 1 else grid, cmap="gray", vmin=0, vmax=255)
        ax.axis("off")
    else:
        fig, ax = plt.subplots(figsize=(6, 6))
        ax.scatter(reference[:, 0], reference[:, 1], s=2, c="0.7", label="test data")
        ax.scatter(samples[:, 0], samples[:, 1], s=2, c="tab:red", label="samples")
        lo = torch.quantile(reference, 0.001, dim=0) - 0.5
        hi = torch.quantile(reference, 0.999, dim=0) + 0.5
        ax.set_xlim(lo[0].item(), hi[0].item())
        ax.set_ylim(lo[1].item(), hi[1].item())
        ax.set_aspect("equal")
        ax.legend(loc="upper right", markerscale=4)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
