"""Per-dimension standardization of vector data, fitted once on the training split: a family that starts
its parameters at unit scale (a mixture's component means spread over [-2, 2], say) then sees every
dataset at that scale. Its density in the standardized ``z`` is one in ``x`` after the Jacobian,
``log p(x) = log p(z) - sum(log std)``."""

import torch
from torch import Tensor, nn


class Standardizer(nn.Module):
    """Mean and std per dimension as buffers (they travel with the checkpoint), fitted at the first
    training start and kept on resume."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        self.register_buffer("fitted", torch.tensor(False))

    @torch.no_grad()
    def fit(self, x: Tensor) -> None:
        x = x.float().flatten(1).to(self.mean.device)
        self.mean.copy_(x.mean(0))
        self.std.copy_(x.std(0).clamp_min(1e-6))
        self.fitted.fill_(True)

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std

    def inverse(self, z: Tensor) -> Tensor:
        return z * self.std + self.mean

    def log_det(self) -> Tensor:
        """log |dz/dx| = -sum(log std): add it to log p(z) for log p(x)."""
        return -self.std.log().sum()


def training_tensor(trainer) -> Tensor:
    """The training split as one tensor (or the first training batch, for a datamodule without one)."""
    dm = trainer.datamodule
    if hasattr(dm, "split_tensor"):
        return dm.split_tensor("train")
    return next(iter(trainer.train_dataloader))[0]
