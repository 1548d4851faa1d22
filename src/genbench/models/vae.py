"""Variational autoencoder (Kingma & Welling, 2014) with an importance-weighted bound (Burda et al., 2016).

Encoder q(z|x) = N(mu(x), diag sigma(x)^2), prior p(z) = N(0, I). The decoder likelihood fits the data:
a diagonal Gaussian with learned per-dimension scale for real vectors, and a discretized logistic per
sub-pixel for 8-bit images (a proper distribution over the 256 levels, so the bound is in the same
bits/dim as every other family's). Backbones: MLPs for vectors, the shared conv pair for images.
"""

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from genbench.config import Schema, param
from genbench.data.pixels import from_symmetric, to_symmetric
from genbench.models.base import GenerativeModel
from genbench.models.likelihoods import (
    discretized_logistic_log_prob,
    discretized_logistic_mean,
    gaussian_log_prob,
    sample_discretized_logistic,
    standard_normal_log_prob,
)
from genbench.nets import MLP, ConvDecoder, ConvEncoder


@dataclass
class VAEConfig(Schema):
    latent_dim: int = param(8, ge=1)
    hidden_dims: list[int] = param([256, 256], ge=1)  # MLP widths (vector data)
    conv_channels: list[int] = param([32, 64], ge=1)  # conv widths (image data), two stages
    lr: float = param(1e-3, gt=0)
    weight_decay: float = param(0.0, ge=0)
    beta: float = param(1.0, gt=0)  # KL weight during training only; evaluation always uses the true ELBO
    iwae_k: int = param(64, ge=1)  # importance samples of the IWAE bound at evaluation
    min_log_scale: float = -7.0  # floor of the decoder's log std / log scale, keeps the density finite
    # Samples: a draw from p(x|z) ("random"), or its mean ("mean", the usual way VAE images are shown).
    # "auto": draws for vectors (the model's own distribution), means for images.
    sample_mode: str = param("auto", choices=["auto", "mean", "random"])


class VAE(GenerativeModel):
    family = "vae"
    config_schema = VAEConfig
    likelihood_kind = "bound"
    has_latent = True

    def __init__(self, data_shape: tuple[int, ...], num_classes: int | None = None, **hparams) -> None:
        super().__init__(data_shape, num_classes, **hparams)
        hp = self.hp
        if self.is_image:
            channels = self.data_shape[0]
            self.encoder = ConvEncoder(self.data_shape, 2 * hp.latent_dim, hp.conv_channels)
            self.decoder = ConvDecoder(hp.latent_dim, self.data_shape, 2 * channels, hp.conv_channels)
        else:
            self.encoder = MLP(self.data_dim, 2 * hp.latent_dim, hp.hidden_dims)
            self.decoder = MLP(hp.latent_dim, 2 * self.data_dim, list(reversed(hp.hidden_dims)))
        self.min_log_scale = hp.min_log_scale

    # ---- latent space -------------------------------------------------------------------------------
    def _model_input(self, x: Tensor) -> Tensor:
        return to_symmetric(x) if self.is_image else x.float()

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log-std of q(z|x) for data-space ``x``."""
        mu, log_std = self.encoder(self._model_input(x)).chunk(2, dim=1)
        return mu, log_std.clamp(-10, 5)

    def _decoder_params(self, z: Tensor) -> tuple[Tensor, Tensor]:
        out = self.decoder(z)
        if not self.is_image:
            out = out.view(-1, 2, self.data_dim).transpose(0, 1)
            return out[0], out[1].clamp_min(self.min_log_scale)
        mean, log_scale = out.chunk(2, dim=1)
        return torch.tanh(mean), log_scale.clamp_min(self.min_log_scale)

    def decode(self, z: Tensor, mode: str | None = None) -> Tensor:
        """Map latents to data space: the decoder mean, or a draw from p(x|z) when ``mode='random'``."""
        mean, log_scale = self._decoder_params(z)
        mode = mode or self.hp.sample_mode
        random = mode == "random" or (mode == "auto" and not self.is_image)
        if not self.is_image:
            return mean + torch.randn_like(mean) * log_scale.exp() if random else mean
        if random:
            return from_symmetric(sample_discretized_logistic(mean, log_scale))
        return from_symmetric(discretized_logistic_mean(mean, log_scale))

    # ---- likelihood ---------------------------------------------------------------------------------
    def _log_px_given_z(self, x: Tensor, z: Tensor) -> Tensor:
        mean, log_scale = self._decoder_params(z)
        if self.is_image:
            return discretized_logistic_log_prob(to_symmetric(x), mean, log_scale)
        return gaussian_log_prob(x.float(), mean, log_scale)

    def elbo(self, x: Tensor, beta: float = 1.0) -> Tensor:
        """Single-sample reparameterized ELBO per example, with an analytic KL term weighted by ``beta``."""
        mu, log_std = self.encode(x)
        z = mu + torch.randn_like(mu) * log_std.exp()
        kl = 0.5 * (mu.pow(2) + (2 * log_std).exp() - 1 - 2 * log_std).sum(1)
        return self._log_px_given_z(x, z) - beta * kl

    def iwae(self, x: Tensor, k: int, chunk: int = 16) -> Tensor:
        """Importance-weighted bound log (1/k) sum_i p(x, z_i) / q(z_i|x); k=1 is the ELBO, and it
        tightens as k grows."""
        mu, log_std = self.encode(x)
        log_w = []
        for start in range(0, k, chunk):
            m = min(chunk, k - start)
            eps = torch.randn(m, *mu.shape, device=mu.device, dtype=mu.dtype)
            z = mu + eps * log_std.exp()  # (m, B, L)
            log_q = gaussian_log_prob(z.flatten(0, 1), mu.repeat(m, 1), log_std.repeat(m, 1))
            log_prior = standard_normal_log_prob(z.flatten(0, 1))
            x_rep = x.unsqueeze(0).expand(m, *x.shape).flatten(0, 1)
            log_px = self._log_px_given_z(x_rep, z.flatten(0, 1))
            log_w.append((log_px + log_prior - log_q).view(m, -1))
        return torch.logsumexp(torch.cat(log_w), dim=0) - math.log(k)

    def log_likelihood(self, x: Tensor) -> Tensor:
        return self.elbo(x)

    def extra_log_likelihoods(self, x: Tensor) -> dict[str, Tensor]:
        return {"iwae": self.iwae(x, self.hp.iwae_k)}

    # ---- sampling and training ---------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, labels: Tensor | None = None) -> Tensor:
        z = torch.randn(n, self.hp.latent_dim, device=self.device)
        return self.decode(z)

    def nfe(self) -> int:
        return 1

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x = batch[0]
        loss = -self.elbo(x, beta=self.hp.beta).mean()
        self.log("train/loss", loss, prog_bar=True, batch_size=len(x))
        return loss
