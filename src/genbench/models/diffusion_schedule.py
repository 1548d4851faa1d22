"""Noise schedules of denoising diffusion, apart from any network (as in diffusers; the samplers that step
through them are in :mod:`genbench.models.samplers`).

:class:`NoiseSchedule`: the forward process q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I) for
t = 0..T-1 (t = 0 is the paper's t = 1), with the linear betas of Ho et al. (2020) or the cosine abar of
Nichol & Dhariwal (2021), the posterior q(x_{t-1} | x_t, x_0) and the reverse-process variances; and the
same process respaced to a sub-sequence of its timesteps (Nichol & Dhariwal's fewer-step sampling).
"""

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn


def linear_betas(timesteps: int, max_beta: float = 0.999) -> Tensor:
    """Ho et al.'s 1e-4..0.02 for T = 1000, rescaled by 1000 / T so that other T keep about the same abar
    curve (Nichol & Dhariwal); clipped at ``max_beta`` for very small T."""
    scale = 1000.0 / timesteps
    return torch.linspace(scale * 1e-4, scale * 0.02, timesteps, dtype=torch.float64).clamp(max=max_beta)


def cosine_betas(timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """abar(t) = cos^2(((t/T + s) / (1 + s)) pi/2) / abar(0); betas clipped at ``max_beta`` near t = T."""
    steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    abar = f / f[0]
    return (1 - abar[1:] / abar[:-1]).clamp(max=max_beta)


class NoiseSchedule(nn.Module):
    """The per-timestep constants of a diffusion, as (non-persistent) buffers that follow the module's device.

    ``variance``: the reverse-process variance sigma_t^2, ``"small"`` = the posterior variance beta~_t (its
    t = 0 value, which is 0, replaced by beta~_1 as in Nichol & Dhariwal's code) or ``"large"`` = beta_t.
    ``keep``: respace the T-step process to these increasing timesteps (its betas become
    1 - abar_k / abar_{previous kept}); index k of the result is timestep ``keep[k]`` of the full one.
    """

    def __init__(self, timesteps: int = 1000, kind: str = "linear", variance: str = "small",
                 keep: Sequence[int] | None = None) -> None:
        super().__init__()
        betas = {"linear": linear_betas, "cosine": cosine_betas}[kind](timesteps)
        self.kind, self.variance, self.full_timesteps = kind, variance, timesteps
        if keep is not None:
            kept = torch.cumprod(1 - betas, 0)[list(keep)]
            betas = 1 - kept / torch.cat([torch.ones(1, dtype=torch.float64), kept[:-1]])
            timesteps = len(kept)
        alphas = 1 - betas
        abar = torch.cumprod(alphas, 0)
        abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
        post_var = betas * (1 - abar_prev) / (1 - abar)
        sigma2 = {"small": torch.cat([post_var[1:2], post_var[1:]]), "large": betas}[variance]
        self.timesteps = timesteps
        for name, value in {
            "betas": betas,
            "alphas_cumprod": abar,
            "alphas_cumprod_prev": abar_prev,
            "posterior_variance": post_var,
            "posterior_coef_x0": betas * abar_prev.sqrt() / (1 - abar),
            "posterior_coef_xt": alphas.sqrt() * (1 - abar_prev) / (1 - abar),
            "reverse_variance": sigma2,
        }.items():
            self.register_buffer(name, value.float(), persistent=False)

    @staticmethod
    def at(values: Tensor, t: Tensor, like: Tensor) -> Tensor:
        """values[t] shaped to broadcast against ``like`` (B, ...)."""
        return values[t].view(-1, *([1] * (like.dim() - 1)))

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """A draw from q(x_t | x_0) with the given standard-normal ``noise``."""
        abar = self.at(self.alphas_cumprod, t, x0)
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise

    def predict_x0(self, xt: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        abar = self.at(self.alphas_cumprod, t, xt)
        return (xt - (1 - abar).sqrt() * eps) / abar.sqrt()

    def posterior_mean(self, x0: Tensor, xt: Tensor, t: Tensor) -> Tensor:
        """Mean of q(x_{t-1} | x_t, x_0)."""
        return self.at(self.posterior_coef_x0, t, xt) * x0 + self.at(self.posterior_coef_xt, t, xt) * xt

    def reverse_mean(self, xt: Tensor, t: Tensor, eps: Tensor, clip: float | None = None) -> Tensor:
        """Mean of p(x_{t-1} | x_t): the posterior mean at the predicted x_0, which, unclipped, equals
        Ho et al.'s (x_t - beta_t / sqrt(1 - abar_t) eps) / sqrt(alpha_t)."""
        x0 = self.predict_x0(xt, t, eps)
        if clip is not None:
            x0 = x0.clamp(-clip, clip)
        return self.posterior_mean(x0, xt, t)

    def respaced(self, keep: Sequence[int]) -> "NoiseSchedule":
        """The process on the increasing timesteps ``keep`` only (itself when it keeps all of them)."""
        if list(keep) == list(range(self.timesteps)):
            return self
        return NoiseSchedule(self.full_timesteps, self.kind, self.variance, keep).to(self.betas.device)
