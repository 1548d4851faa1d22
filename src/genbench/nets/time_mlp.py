"""A residual MLP conditioned on a diffusion timestep (and optionally a class label), for vector data.

The timestep enters through a sinusoidal embedding (Vaswani et al., 2017, as used by Ho et al., 2020),
turned by a small MLP into a vector that every residual block adds to its hidden state.
"""

import math

import torch
from torch import Tensor, nn


def sinusoidal_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """(B,) integer or real timesteps -> (B, dim) features of sines and cosines at geometric frequencies."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    return nn.functional.pad(emb, (0, dim % 2))


class TimeEmbedding(nn.Module):
    """Timestep (and label) -> conditioning vector; labels index a table of ``num_labels`` entries."""

    def __init__(self, dim: int, num_labels: int | None = None) -> None:
        super().__init__()
        self.dim = dim
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.labels = nn.Embedding(num_labels, dim) if num_labels else None

    def forward(self, t: Tensor, y: Tensor | None = None) -> Tensor:
        emb = self.mlp(sinusoidal_embedding(t, self.dim))
        if self.labels is not None:
            assert y is not None, "a label-conditioned net needs labels"
            emb = emb + self.labels(y)
        return emb


class _Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, width)
        self.emb = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        a = nn.functional.silu(self.fc1(self.norm(h)) + self.emb(emb))
        return h + self.fc2(a)


class TimeMLP(nn.Module):
    """(x (B, ...) of D values, t (B,), y (B,) or None) -> the shape of x, e.g. the noise predicted in x
    (an image is flattened and its output reshaped: the MLP backbone for images, ``backbone=mlp``)."""

    def __init__(self, dim: int, width: int = 128, depth: int = 3, num_labels: int | None = None) -> None:
        super().__init__()
        self.embed = TimeEmbedding(width, num_labels)
        self.inp = nn.Linear(dim, width)
        self.blocks = nn.ModuleList(_Block(width) for _ in range(depth))
        self.out = nn.Sequential(nn.LayerNorm(width), nn.SiLU(), nn.Linear(width, dim))

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        emb = nn.functional.silu(self.embed(t, y))
        h = self.inp(x.flatten(1))
        for block in self.blocks:
            h = block(h, emb)
        return self.out(h).view_as(x)
