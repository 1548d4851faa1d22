"""Variational autoencoder (Kingma & Welling, 2014) with an importance-weighted bound (Burda et al., 2016).

Encoder q(z|x) = N(mu(x), diag sigma(x)^2), prior p(z) = N(0, I). The decoder likelihood fits the data:
a diagonal Gaussian with learned per-dimension scale for real vectors, and a discretized logistic per
sub-pixel for 8-bit images (a proper distribution over the 256 levels, so the bound is in the same
bits/dim as every other family's). Backbones: MLPs for vectors, the shared conv pair for images.

With ``conditional=true`` on a labelled dataset it is a conditional VAE (Sohn et al., 2015): a label
embedding shifts q(z|x, y) and joins z at the decoder's input. Its likelihood stays one of x alone: the
bound is marginalized over a uniform label prior, log p(x) >= logsumexp_y [ELBO(x, y)] - log K.
"""

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from genbench.data.pixels import from_symmetric, to_symmetric
from genbench.models.base import GenerativeModel
from genbench.models.likelihoods import (
    discretized_logistic_log_prob,
    discretized_logistic_mean,
    gaussian_log_prob,
    sample_discretized_logistic,
    standard_normal_log_prob,
)
from genbench.models.optim import OptimizationConfig
from genbench.nets import MLP, ConvDecoder, ConvEncoder
from genbench.randomness import normal_like
from genbench.schema import param


@dataclass
class VAEConfig(OptimizationConfig):
    latent_dim: int = param(8, ge=1)
    hidden_dims: list[int] = param([256, 256], ge=1)  # MLP widths (vector data)
    conv_channels: list[int] = param([32, 64], ge=1)  # conv widths (image data), two stages
    beta: float = param(1.0, gt=0)  # KL weight during training only; evaluation always uses the true ELBO
    iwae_k: int = param(64, ge=1, evaluation=True)  # importance samples of the IWAE bound at evaluation
    min_log_scale: float = -7.0  # floor of the decoder's log std / log scale, keeps the density finite
    # Samples: a draw from p(x|z) ("random"), or its mean ("mean", the usual way VAE images are shown).
    # "auto": draws for vectors (the model's own distribution), means for images.
    sample_mode: str = param("auto", choices=["auto", "mean", "random"], evaluation=True)
    conditional: bool = False  # on labelled datasets: a conditional VAE with a label embedding
    label_dim: int = param(16, ge=1)  # size of that embedding


class VAE(GenerativeModel):
    family = "vae"
    config_schema = VAEConfig
    likelihood_kind = "bound"
    latent_space = "encoder q(z|x) and decoder p(x|z)"
    conditioning = "label embedding in encoder and decoder (conditional=true)"
    latent = "explicit"
    supports_labels = True

    def __init__(self, data_shape: tuple[int, ...], num_classes: int | None = None, **hparams) -> None:
        super().__init__(data_shape, num_classes, **hparams)
        hp = self.hp
        label_dim = hp.label_dim if self.is_conditional else 0
        if self.is_image:
            channels = self.data_shape[0]
            self.encoder = ConvEncoder(self.data_shape, 2 * hp.latent_dim, hp.conv_channels)
            self.decoder = ConvDecoder(hp.latent_dim + label_dim, self.data_shape, 2 * channels,
                                       hp.conv_channels)
        else:
            self.encoder = MLP(self.data_dim, 2 * hp.latent_dim, hp.hidden_dims)
            self.decoder = MLP(hp.latent_dim + label_dim, 2 * self.data_dim, list(reversed(hp.hidden_dims)))
        if self.is_conditional:
            self.label_embedding = nn.Embedding(num_classes, hp.label_dim)
            self.label_to_posterior = nn.Linear(hp.label_dim, 2 * hp.latent_dim)
        self.min_log_scale = hp.min_log_scale


    # ---- latent space -------------------------------------------------------------------------------
    def _model_input(self, x: Tensor) -> Tensor:
        return to_symmetric(x) if self.is_image else x.float()

    def encode(self, x: Tensor, labels: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Mean and log-std of q(z|x) (q(z|x, y) when conditional) for data-space ``x``."""
        h = self.encoder(self._model_input(x))
        if self.is_conditional:
            h = h + self.label_to_posterior(self.label_embedding(labels))
        mu, log_std = h.chunk(2, dim=1)
        return mu, log_std.clamp(-10, 5)

    def _decoder_params(self, z: Tensor, labels: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if self.is_conditional:
            z = torch.cat([z, self.label_embedding(labels)], dim=1)
        out = self.decoder(z)
        if not self.is_image:
            out = out.view(-1, 2, self.data_dim).transpose(0, 1)
            return out[0], out[1].clamp_min(self.min_log_scale)
        mean, log_scale = out.chunk(2, dim=1)
        return torch.tanh(mean), log_scale.clamp_min(self.min_log_scale)

    def decode(self, z: Tensor, labels: Tensor | None = None, mode: str | None = None) -> Tensor:
        """Map latents to data space: a draw from p(x|z) or its mean, per ``sample_mode``."""
        mean, log_scale = self._decoder_params(z, labels)
        mode = mode or self.hp.sample_mode
        random = mode == "random" or (mode == "auto" and not self.is_image)
        if not self.is_image:
            return mean + normal_like(mean) * log_scale.exp() if random else mean
        if random:
            return from_symmetric(sample_discretized_logistic(mean, log_scale))
        return from_symmetric(discretized_logistic_mean(mean, log_scale))

    # ---- likelihood ---------------------------------------------------------------------------------
    def _log_px_given_z(self, x: Tensor, z: Tensor, labels: Tensor | None) -> Tensor:
        mean, log_scale = self._decoder_params(z, labels)
        if self.is_image:
            return discretized_logistic_log_prob(to_symmetric(x), mean, log_scale)
        return gaussian_log_prob(x.float(), mean, log_scale)

    def elbo(self, x: Tensor, labels: Tensor | None = None, beta: float = 1.0) -> Tensor:
        """Single-sample reparameterized ELBO per example, with an analytic KL term weighted by ``beta``."""
        mu, log_std = self.encode(x, labels)
        z = mu + normal_like(mu) * log_std.exp()
        kl = 0.5 * (mu.pow(2) + (2 * log_std).exp() - 1 - 2 * log_std).sum(1)
        return self._log_px_given_z(x, z, labels) - beta * kl

    def iwae(self, x: Tensor, k: int, labels: Tensor | None = None, chunk: int = 16) -> Tensor:
        """Importance-weighted bound log (1/k) sum_i p(x, z_i) / q(z_i|x); k=1 is the ELBO, and it
        tightens as k grows."""
        mu, log_std = self.encode(x, labels)
        log_w = []
        for start in range(0, k, chunk):
            m = min(chunk, k - start)
            eps = torch.randn(m, *mu.shape, device=mu.device, dtype=mu.dtype)
            z = (mu + eps * log_std.exp()).flatten(0, 1)  # (m * B, L)
            log_q = gaussian_log_prob(z, mu.repeat(m, 1), log_std.repeat(m, 1))
            x_rep = x.unsqueeze(0).expand(m, *x.shape).flatten(0, 1)
            y_rep = None if labels is None else labels.repeat(m)
            log_px = self._log_px_given_z(x_rep, z, y_rep)
            log_w.append((log_px + standard_normal_log_prob(z) - log_q).view(m, -1))
        return torch.logsumexp(torch.cat(log_w), dim=0) - math.log(k)

    def _marginal(self, bound, x: Tensor) -> Tensor:
        """``bound(x, labels)``; for a conditional model, marginalized over a uniform label prior."""
        if not self.is_conditional:
            return bound(x, None)
        per_label = [bound(x, torch.full((len(x),), c, device=x.device)) for c in range(self.num_classes)]
        return torch.logsumexp(torch.stack(per_label), dim=0) - math.log(self.num_classes)

    def log_likelihood(self, x: Tensor) -> Tensor:
        return self._marginal(self.elbo, x)

    def extra_log_likelihoods(self, x: Tensor) -> dict[str, Tensor]:
        return {"iwae": self._marginal(lambda x_, y: self.iwae(x_, self.hp.iwae_k, y), x)}

    # ---- sampling and training ---------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, labels: Tensor | None = None) -> Tensor:
        """``n`` samples; a conditional model draws uniform labels when none are given."""
        y = self.sampling_labels(n, labels)
        return self.decode(torch.randn(n, self.hp.latent_dim, device=self.device), y)

    def nfe(self) -> int:
        return 1

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        loss = -self.elbo(x, y if self.is_conditional else None, beta=self.hp.beta).mean()
        self.log_training({"train/loss": loss}, batch_size=len(x))
        return loss
