"""Conditional flow matching on the straight-line path (Lipman et al., 2023; Liu et al., 2023; Tong et al.,
2024), optionally with minibatch optimal-transport pairs (OT-CFM).

The path x_t = (1 - t) x_0 + t x_1 joins noise x_0 ~ N(0, I) at t = 0 to data x_1 at t = 1; a network
v(x_t, t) regresses the path's velocity x_1 - x_0 (mean squared error, t uniform). With ``minibatch_ot``
the noise of a batch is first matched to its data by an exact assignment minimizing the summed squared
distances (Tong et al.'s OT-CFM with sigma = 0), which straightens the learned flow. Backbones are the
diffusion ones (a residual MLP for vectors, the UNet for images), given t scaled to [0, 1000] so their
sinusoidal time embedding sees the range a diffusion's integer timesteps span. An exponential moving
average of the weights samples and scores.

Sampling (``sampler``, ``sampling_steps``; :mod:`genbench.models.samplers`): Euler, midpoint or Heun
steps of dx/dt = v(x, t) from t = 0 to 1; NFE = steps x stages.

Likelihood, by the instantaneous change of variables (Chen et al., 2018): log p_1(x) = log N(x_0; 0, I)
- int_0^1 div v(x_t, t) dt along the ODE path from x back to the noise, solved with ``likelihood_steps``
fixed RK4 steps that end at t = 1 - (i / steps) ** ``likelihood_step_power``: short near the data, long
near the noise. Why: a density as concentrated as 8-bit pixels (a bin is 0.0078 wide in [-1, 1]) makes
div v change within about that much time of t = 1, which evenly spaced steps skip; on MNIST 32 even steps
put the NLL 0.2 bits/dim too low, 32 cubic ones within 1e-3 (BENCHMARKS.md).

Vectors: the divergence exactly (one input-gradient pass per dimension), kind "exact" (up to the ODE
solver's error). Images: Hutchinson's estimate eps^T (dv/dx) eps with one Rademacher eps per
example held along the path (FFJORD), an unbiased estimate of the same log-density, kind "estimate" (its
noise is in ``nll_*_se``). Images are uniformly dequantized and mapped to [-1, 1] as the diffusion does,
and the density is converted back to [0, 256)^D with that map's Jacobian.
"""

import math
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from genbench.data.pixels import dequantize, from_symmetric, log_density_rescale, to_symmetric
from genbench.matching import optimal_matching
from genbench.models.base import GenerativeModel
from genbench.models.ema import ema_copy
from genbench.models.optim import OptimizationConfig
from genbench.models.samplers import FLOW_SAMPLERS, FlowSampler, integrate
from genbench.models.time_backbone import TimeBackboneConfig, time_backbone
from genbench.randomness import normal_like
from genbench.schema import param

TIME_SCALE = 1000.0  # t in [0, 1] enters the backbones' time embedding as t * 1000, like diffusion timesteps


@dataclass
class FlowMatchingConfig(TimeBackboneConfig, OptimizationConfig):  # fields: optimizer, backbone, family
    ema_decay: float = param(0.999, ge=0, lt=1)  # 0: no averaging
    minibatch_ot: bool = False  # pair each batch's noise and data by exact optimal transport (OT-CFM)
    sampler: str = param("midpoint", choices=list(FLOW_SAMPLERS), evaluation=True)  # genbench.models.samplers
    # ODE steps of sample(); NFE = steps x stages of the sampler
    sampling_steps: int = param(50, ge=1, evaluation=True)
    # RK4 steps of the likelihood ODE (4 network calls each)
    likelihood_steps: int = param(32, ge=1, evaluation=True)
    # steps end at t = 1 - (i / steps) ** power; 1: even
    likelihood_step_power: float = param(3.0, ge=1, evaluation=True)


def likelihood_times(steps: int, power: float) -> list[float]:
    """The likelihood ODE's grid from the data (t = 1) to the noise (t = 0): 1 - (i / steps) ** power."""
    return [1 - (i / steps) ** power for i in range(steps + 1)]


class FlowMatching(GenerativeModel):
    family = "flow_matching"
    config_schema = FlowMatchingConfig
    latent_space = "implicit: the noise x_0 the deterministic ODE maps one-to-one to a sample"
    latent = "implicit"
    samplers = FLOW_SAMPLERS

    def __init__(self, data_shape: tuple[int, ...], num_classes: int | None = None, **hparams: Any) -> None:
        super().__init__(data_shape, num_classes, **hparams)
        hp = self.hp
        self.net = time_backbone(self.data_shape, hp)
        self.ema = ema_copy(self.net)
        self.likelihood_kind = "estimate" if self.is_image else "exact"

    def _model_space(self, x: Tensor) -> Tensor:
        """Data to the space the flow runs in: images dequantized, then (x + u - 1/2) / 127.5 - 1."""
        return to_symmetric(dequantize(x) - 0.5) if self.is_image else x.float()

    def velocity(self, x: Tensor, t: Tensor) -> Tensor:
        """The EMA network's velocity at ``x`` and times ``t`` (B,) in [0, 1]."""
        return self.ema(x, t * TIME_SCALE)

    # ---- training -----------------------------------------------------------------------------------
    def _loss(self, x: Tensor) -> Tensor:
        x1 = self._model_space(x)
        x0 = normal_like(x1)
        if self.hp.minibatch_ot:
            x0 = x0[optimal_matching(x1, x0)]
        t = torch.rand(len(x1), device=x1.device)
        t_ = t.view(-1, *[1] * (x1.dim() - 1))
        xt = (1 - t_) * x0 + t_ * x1
        return (self.net(xt, t * TIME_SCALE) - (x1 - x0)).pow(2).mean()

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        loss = self._loss(batch[0])
        self.log_training({"train/loss": loss}, batch_size=len(batch[0]))
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        """The training loss on held-out data: the likelihood ODE costs 4 x ``likelihood_steps`` network
        calls with input gradients per example, too many to pay at every validation."""
        self.log("val/loss", self._loss(batch[0]), prog_bar=True, batch_size=len(batch[0]))

    def optimized_parameters(self) -> Any:
        return self.net.parameters()  # not the EMA copy

    def averaged_weights(self) -> list[tuple[torch.nn.Module, torch.nn.Module]]:
        return [(self.ema, self.net)]

    # ---- sampling -----------------------------------------------------------------------------------
    def sampler(self) -> FlowSampler:
        return FlowSampler(self.hp.sampler, self.hp.sampling_steps)

    def use_sampler(self, name: str, steps: int) -> None:
        self.hp = replace(self.hp, sampler=name, sampling_steps=steps)

    @torch.no_grad()
    def sample(self, n: int, labels: Tensor | None = None, noise: Tensor | None = None) -> Tensor:
        """``n`` draws in data space; ``noise`` fixes x_0 (n, *data_shape)."""
        self.sampling_labels(n, labels)  # unconditional: refuses labels
        x = torch.randn(n, *self.data_shape, device=self.device) if noise is None else noise.to(self.device)
        x = self.sampler().sample(self.velocity, x)
        return from_symmetric(x) if self.is_image else x

    def nfe(self) -> int:
        return self.sampler().nfe()

    # ---- likelihood ---------------------------------------------------------------------------------
    def divergence(self, x: Tensor, t: Tensor, probe: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """v(x, t) and its divergence per example: exact (one gradient per dimension) without ``probe``,
        else Hutchinson's probe^T (dv/dx) probe."""
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            v = self.velocity(x, t)
            if probe is not None:
                vjp = torch.autograd.grad((v * probe).sum(), x)[0]
                return v.detach(), (vjp * probe).flatten(1).sum(1)
            flat = v.flatten(1)
            div = torch.zeros(len(x), device=x.device)
            for i in range(flat.shape[1]):
                grad = torch.autograd.grad(flat[:, i].sum(), x, retain_graph=i + 1 < flat.shape[1])[0]
                div = div + grad.flatten(1)[:, i]
        return v.detach(), div

    def log_density(self, y: Tensor, exact: bool) -> Tensor:
        """log p_1 of model-space ``y`` (B, ...): the ODE from t = 1 back to 0 carries y and the integral
        of div v in one state (B, D + 1); the divergence exact or by Hutchinson's estimator."""
        d = self.data_dim
        probe = None if exact else torch.randint(0, 2, y.shape, device=y.device).float() * 2 - 1

        def dynamics(state: Tensor, t: float) -> Tensor:
            x = state[:, :d].view_as(y)
            v, div = self.divergence(x, torch.full((len(y),), t, device=y.device), probe)
            return torch.cat([v.flatten(1), div[:, None]], dim=1)

        start = torch.cat([y.flatten(1), torch.zeros(len(y), 1, device=y.device)], dim=1)
        times = likelihood_times(self.hp.likelihood_steps, self.hp.likelihood_step_power)
        end = integrate(dynamics, start, times, "rk4")
        x0, minus_integral = end[:, :d], end[:, d]
        log_normal = -0.5 * (x0.pow(2).sum(1) + d * math.log(2 * math.pi))
        return log_normal + minus_integral

    def log_likelihood(self, x: Tensor) -> Tensor:
        log_p = self.log_density(self._model_space(x), exact=not self.is_image)
        return log_density_rescale(log_p, self.data_dim, 127.5) if self.is_image else log_p
