"""Denoising diffusion probabilistic models (Ho et al., 2020) with classifier-free guidance.

A network predicts the noise eps in x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps and is trained with
Ho et al.'s simple loss (mean squared error on eps, t uniform); linear (Ho et al.) or cosine (Nichol &
Dhariwal, 2021) schedules live in :mod:`genbench.models.diffusion_schedule`. An exponential moving average
of the weights is kept and used for sampling and likelihoods. Backbones: a residual MLP with a sinusoidal
time embedding for vectors, a small UNet for images.

Sampling (``sampler``, ``sampling_steps``; :mod:`genbench.models.samplers`): ancestral DDPM (all T steps
when ``sampling_steps = T``, else on the respaced process), DDIM (Song et al., 2021) with noise level
``eta``, DPM-Solver++(2M) (Lu et al., 2022) or EDM's Heun (Karras et al., 2022). NFE = what the sampler
counts (its steps; 2 steps - 1 for Heun), doubled when classifier-free guidance (Ho & Salimans, 2022) with
``guidance_scale != 1`` evaluates the conditional and the unconditional prediction at each step.

Likelihood (kind "bound"): the negative ELBO L_T + sum_{t>1} L_{t-1} + L_0 of Ho et al. with Gaussian KLs
and a Gaussian decoder p(x_0 | x_1) on continuous data. Images are uniformly dequantized, mapped affinely to
[-1, 1] (the model's space, where training happens too), and the density converted back to [0, 256)^D with
the Jacobian of that map. The T-term sum costs T network calls per example, so it is estimated without bias:
the decoder term L_0 (on low-noise data far the largest term: about -6.5 nats on gaussians8, where the
other terms sum to about +5) and L_T are computed for every example, and the other T - 1 terms by a
stratified Monte Carlo draw of ``bound_timesteps`` timesteps per example (one uniform draw in each of that
many log-spaced strata of t = 1..T-1, weighted by the stratum size: the terms fall roughly like 1/t),
``bound_timesteps + 1`` network calls in all; ``bound_timesteps >= T - 1`` gives the exact sum. On
gaussians8 after 2,000 steps, each example's estimate has a Monte Carlo std of about 5 nats; drawing L_0
like the other terms over equal strata of all T, as before, gave about 110.

Labels: with ``conditional=true`` on labelled data, the network also takes a label embedding with one
extra "null" label, used for a fraction ``p_uncond`` of training examples. ``sample(n)`` without labels and
``log_likelihood`` use the null label, i.e. the unconditional model, so the samples come from the same
model whose likelihood is reported; ``sample(n, labels)`` samples the classes asked for, with guidance.
"""

import math
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from genbench.data.pixels import dequantize, from_symmetric, log_density_rescale, to_symmetric
from genbench.errors import ConfigError
from genbench.models.base import GenerativeModel
from genbench.models.diffusion_schedule import NoiseSchedule
from genbench.models.ema import ema_copy
from genbench.models.optim import OptimizationConfig
from genbench.models.samplers import DIFFUSION_SAMPLERS, DiffusionSampler, Predict, diffusion_sampler
from genbench.models.time_backbone import TimeBackboneConfig, time_backbone
from genbench.randomness import normal_like
from genbench.schema import param


@dataclass
class DiffusionConfig(TimeBackboneConfig, OptimizationConfig):  # fields: optimizer, backbone, family
    timesteps: int = param(1000, ge=2)  # T, the number of diffusion steps
    schedule: str = param("linear", choices=["linear", "cosine"])
    variance: str = param("small", choices=["small", "large"])  # reverse variance: beta~_t or beta_t
    ema_decay: float = param(0.999, ge=0, lt=1)  # 0: no averaging
    # genbench.models.samplers
    sampler: str = param("ddim", choices=list(DIFFUSION_SAMPLERS), evaluation=True)
    # sampler steps (<= T); ddpm with T steps is Ho et al.'s
    sampling_steps: int = param(100, ge=1, evaluation=True)
    eta: float = param(0.0, ge=0, evaluation=True)  # DDIM noise: 0 deterministic, 1 ancestral-like
    # images: clamp the predicted x_0 to [-1, 1] while sampling
    clip_denoised: bool = param(True, evaluation=True)
    # MC timesteps per example for the t >= 1 terms; >= T - 1: exact
    bound_timesteps: int = param(4, ge=1, evaluation=True)
    conditional: bool = False  # labelled data: a label embedding with a null label (classifier-free guidance)
    p_uncond: float = param(0.1, ge=0, le=1)  # label dropout for classifier-free guidance
    # 1: plain conditional, 0: unconditional, >1: guided
    guidance_scale: float = param(1.0, ge=0, evaluation=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("sampling_steps", "bound_timesteps"):
            if getattr(self, key) > self.timesteps:
                raise ConfigError(f"{key}={getattr(self, key)} must be <= timesteps={self.timesteps}")


def log_spaced_strata(timesteps: int, strata: int) -> list[int]:
    """Edges 1 = e_0 < ... < e_K = T of ``strata`` = K strata of t = 1..T-1, as near T^(k/K) as integers
    allow: the bound's terms fall roughly like 1/t, so equal strata in log t hold comparable shares of the
    sum (equal strata put most of it, and its variance, in the first). K = T - 1 gives one t per stratum."""
    edges = [1]
    for k in range(1, strata + 1):
        edges.append(max(edges[-1] + 1, round(timesteps ** (k / strata))))
    return edges


class Diffusion(GenerativeModel):
    family = "diffusion"
    config_schema = DiffusionConfig
    likelihood_kind = "bound"
    latent_space = "implicit: the noise x_T of the deterministic DDIM sampler"
    latent = "implicit"
    conditioning = "classifier-free guidance (conditional=true)"
    supports_labels = True
    samplers = DIFFUSION_SAMPLERS

    def __init__(self, data_shape: tuple[int, ...], num_classes: int | None = None, **hparams: Any) -> None:
        super().__init__(data_shape, num_classes, **hparams)
        hp = self.hp
        num_labels = num_classes + 1 if self.is_conditional else None  # the last one is "no label"
        self.net = time_backbone(self.data_shape, hp, num_labels)
        self.ema = ema_copy(self.net)
        self.schedule = NoiseSchedule(hp.timesteps, hp.schedule, hp.variance)

    def _labels(self, y: Tensor | None, n: int) -> Tensor | None:
        """Labels for the network: ``y``, or the null label where ``y`` is None; None if unconditional."""
        if not self.is_conditional:
            return None
        if y is None:
            y = torch.full((n,), self.num_classes, dtype=torch.long, device=self.device)
        return y

    def _model_space(self, x: Tensor) -> Tensor:
        """Data to the space the diffusion runs in: images dequantized, then (x + u - 1/2) / 127.5 - 1."""
        return to_symmetric(dequantize(x) - 0.5) if self.is_image else x.float()

    def denoiser(self, labels: Tensor | None = None, guidance_scale: float | None = None) -> Predict:
        """The EMA network as eps_fn(x_t, t): unconditional (null label) when ``labels`` is None, else
        eps_u + s (eps_c - eps_u), which costs a second call unless s = 1 (plain conditional)."""
        scale = self.hp.guidance_scale if guidance_scale is None else guidance_scale
        if labels is None or scale == 1.0:
            return lambda x, t: self.ema(x, t, self._labels(labels, len(x)))

        def guided(x: Tensor, t: Tensor) -> Tensor:
            eps_c = self.ema(x, t, labels)
            eps_u = self.ema(x, t, self._labels(None, len(x)))
            return eps_u + scale * (eps_c - eps_u)

        return guided

    # ---- training -----------------------------------------------------------------------------------
    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        x0 = self._model_space(x)
        t = torch.randint(0, self.hp.timesteps, (len(x),), device=x.device)
        noise = normal_like(x0)
        labels = None
        if self.is_conditional:
            drop = torch.rand(len(x), device=x.device) < self.hp.p_uncond
            labels = torch.where(drop, self.num_classes, y.long())
        loss = (self.net(self.schedule.q_sample(x0, t, noise), t, labels) - noise).pow(2).mean()
        self.log_training({"train/loss": loss}, batch_size=len(x))
        return loss

    def optimized_parameters(self) -> Any:
        return self.net.parameters()  # not the EMA copy

    def averaged_weights(self) -> list[tuple[torch.nn.Module, torch.nn.Module]]:
        return [(self.ema, self.net)]

    # ---- likelihood bound ---------------------------------------------------------------------------
    def _bound_term(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """Per-example term (nats) of the negative ELBO at 0-based timesteps ``t`` (B,), i.e. the paper's
        s = t + 1, with x_s drawn using ``noise``: the decoder NLL L_0 = -log p(x_0 | x_1) where s = 1, else
        L_{s-1} = KL(q(x_{s-1} | x_s, x_0) || p(x_{s-1} | x_s))."""
        s = self.schedule
        xt = s.q_sample(x0, t, noise)
        mean = s.reverse_mean(xt, t, self.denoiser()(xt, t))
        var = s.at(s.reverse_variance, t, x0)
        decoder_nll = 0.5 * ((x0 - mean).pow(2) / var + torch.log(2 * math.pi * var))
        post_var = s.at(s.posterior_variance, t, x0).clamp_min(1e-20)  # 0 only at t = 0, unused there
        gap = s.posterior_mean(x0, xt, t) - mean
        kl = 0.5 * (torch.log(var / post_var) + (post_var + gap.pow(2)) / var - 1)
        per_dim = torch.where((t == 0).view(-1, *[1] * (x0.dim() - 1)), decoder_nll, kl)
        return per_dim.flatten(1).sum(1)

    def _prior_term(self, x0: Tensor) -> Tensor:
        """L_T = KL(q(x_T | x_0) || N(0, I)) per example."""
        abar = self.schedule.alphas_cumprod[-1]
        return (0.5 * (abar * x0.pow(2) - abar - torch.log1p(-abar))).flatten(1).sum(1)

    @torch.no_grad()
    def negative_elbo(self, x0: Tensor, bound_timesteps: int | None = None,
                      noise: Tensor | None = None) -> Tensor:
        """Unbiased estimate of the negative ELBO (nats) of model-space ``x0`` (B, ...). The prior term L_T
        and the decoder term L_0 (0-based t = 0, by far the largest on low-noise data) are computed for
        every example; the T - 1 KL terms t = 1..T-1 are estimated by stratified Monte Carlo: K =
        min(``bound_timesteps``, T - 1) log-spaced strata of [1, T) (:func:`log_spaced_strata`), one
        uniform t in each, weighted by its stratum's size (K = T - 1 is the exact sum). ``noise``
        (K + 1, B, ...) fixes the draws of x_t: ``noise[0]`` for t = 0, ``noise[k + 1]`` for stratum k."""
        T = self.hp.timesteps
        K = min(bound_timesteps or self.hp.bound_timesteps, T - 1)
        edges = torch.tensor(log_spaced_strata(T, K), device=x0.device)
        sizes = edges[1:] - edges[:-1]
        t = edges[:-1] + (torch.rand(len(x0), K, device=x0.device) * sizes).long()
        noise = torch.randn(K + 1, *x0.shape, device=x0.device) if noise is None else noise
        decoder = self._bound_term(x0, torch.zeros(len(x0), dtype=torch.long, device=x0.device), noise[0])
        total = self._prior_term(x0) + decoder
        for k in range(K):
            total = total + sizes[k] * self._bound_term(x0, t[:, k], noise[k + 1])
        return total

    @torch.no_grad()
    def exact_negative_elbo(self, x0: Tensor, noise: Tensor) -> Tensor:
        """The full sum over all T timesteps (T network calls per example), x_t drawn with ``noise[t]``."""
        total = self._prior_term(x0)
        for i in range(self.hp.timesteps):
            total = total + self._bound_term(x0, torch.full((len(x0),), i, device=x0.device), noise[i])
        return total

    def log_likelihood(self, x: Tensor) -> Tensor:
        log_p = -self.negative_elbo(self._model_space(x))
        return log_density_rescale(log_p, self.data_dim, 127.5) if self.is_image else log_p

    # ---- sampling -----------------------------------------------------------------------------------
    def sampler(self) -> DiffusionSampler:
        """The configured sampler; on images it clamps the predicted x_0 to [-1, 1] (``clip_denoised``)."""
        clip = 1.0 if self.is_image and self.hp.clip_denoised else None
        return diffusion_sampler(self.hp.sampler, self.schedule, self.hp.sampling_steps, clip, self.hp.eta)

    def use_sampler(self, name: str, steps: int) -> None:
        self.hp = replace(self.hp, sampler=name, sampling_steps=steps)

    @torch.no_grad()
    def sample(self, n: int, labels: Tensor | None = None, noise: Tensor | None = None) -> Tensor:
        """``n`` draws in data space from the unconditional model, or of the given ``labels`` (n,) with
        classifier-free guidance; ``noise`` fixes x_T (n, *data_shape)."""
        labels = self.sampling_labels(n, labels, draw=False)
        x = torch.randn(n, *self.data_shape, device=self.device) if noise is None else noise.to(self.device)
        eps_fn = self.denoiser(labels)
        x = self.sampler().sample(eps_fn, x)
        return from_symmetric(x) if self.is_image else x

    def nfe(self, guided: bool = False) -> int:
        """Network calls per sample: the sampler's; ``guided``: of ``sample(n, labels)``, twice as many when
        ``guidance_scale != 1``."""
        calls = self.sampler().nfe()
        return 2 * calls if guided and self.is_conditional and self.hp.guidance_scale != 1.0 else calls
