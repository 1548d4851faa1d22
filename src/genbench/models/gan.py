"""Generative adversarial network (Goodfellow et al., 2014), trained by alternating gradient steps.

A generator G maps z ~ N(0, I) to data; a discriminator (critic) D scores real against generated
examples. Losses: the non-saturating GAN loss (Goodfellow et al., 2014), the hinge loss (Lim & Ye, 2017;
Miyato et al., 2018) and the Wasserstein loss with gradient penalty (Gulrajani et al., 2017). Options:
``n_critic`` discriminator steps per generator step, spectral normalisation of D (Miyato et al., 2018),
an exponential moving average of G's weights used for sampling (Karras et al., 2018; Yazici et al., 2019),
and class conditioning on labelled data: G sees z concatenated with a label embedding, and D adds the
projection term <embed(y), features(x)> to its score (Miyato & Koyama, 2018).
Backbones: MLPs for vectors, the DCGAN pair (Radford et al., 2016) for images. A GAN defines no density
(likelihood kind "none"); one sample costs one generator evaluation.

Lightning's manual optimization runs the two players. ``trainer.global_step`` counts the steps of both
optimizers, so ``max_steps=2000`` with ``n_critic=1`` is 1000 batches (1000 D and 1000 G steps).
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from genbench.data.pixels import from_symmetric, to_symmetric
from genbench.models.base import GenerativeModel
from genbench.models.compiled import eager
from genbench.models.ema import ema_copy, ema_update
from genbench.models.optim import OptimizationConfig, build_scheduler, optimizer_param
from genbench.nets import MLP
from genbench.nets.dcgan import DCGANDiscriminator, DCGANGenerator
from genbench.schema import param

LOSSES = ("ns", "hinge", "wgan-gp")


@dataclass
class GANConfig(OptimizationConfig):
    optimizer: dict[str, Any] = optimizer_param(lr=1e-3, betas=[0.5, 0.999])  # both players (see lr_d)
    latent_dim: int = param(16, ge=1)
    hidden_dims: list[int] = param([256, 256], ge=1)  # MLP widths of G and D (vector data)
    conv_channels: list[int] = param([32, 64], ge=1)  # DCGAN widths, one stride-2 stage each (image data)
    conditional: bool = False  # on labelled data: label embedding in G, projection in D
    label_dim: int = param(16, ge=1)  # size of G's label embedding (conditional only)
    loss: str = param("ns", choices=list(LOSSES))
    gp_weight: float = param(10.0, ge=0)  # weight of the WGAN-GP gradient penalty (loss=wgan-gp only)
    n_critic: int = param(1, ge=1)  # discriminator steps (one batch each) per generator step
    spectral_norm: bool = False  # spectral normalisation of every D layer
    lr_d: float | None = param(None, gt=0)  # D's learning rate; None: the optimizer's lr, as G's
    ema_decay: float | None = param(None, ge=0, lt=1)  # EMA of G's weights for sampling; None: off


def discriminator_loss(real: Tensor, fake: Tensor, kind: str) -> Tensor:
    """D's loss from its scores (logits) on real and generated batches; WGAN-GP's penalty comes apart."""
    if kind == "ns":  # -log sigmoid(D(x)) - log(1 - sigmoid(D(G(z))))
        return F.softplus(-real).mean() + F.softplus(fake).mean()
    if kind == "hinge":
        return F.relu(1 - real).mean() + F.relu(1 + fake).mean()
    return fake.mean() - real.mean()


def generator_loss(fake: Tensor, kind: str) -> Tensor:
    """G's loss from D's scores on generated data: -log sigmoid(D(G(z))) for "ns", -D(G(z)) otherwise."""
    return F.softplus(-fake).mean() if kind == "ns" else -fake.mean()


def gradient_penalty(critic: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor) -> Tensor:
    """E (|grad critic(x_hat)| - 1)^2 at random points x_hat between real and fake pairs (WGAN-GP)."""
    eps = torch.rand(len(real), *[1] * (real.dim() - 1), device=real.device, dtype=real.dtype)
    x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
    with eager():  # differentiated twice: torch.compile's autograd cannot
        score = critic(x_hat).sum()
    (grad,) = torch.autograd.grad(score, x_hat, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).pow(2).mean()


class Generator(nn.Module):
    """A latent-to-data network, fed z concatenated with a label embedding when conditional; one module,
    so that the EMA copy averages the embedding too."""

    def __init__(self, net: nn.Module, num_classes: int | None, label_dim: int) -> None:
        super().__init__()
        self.net = net
        self.embed = nn.Embedding(num_classes, label_dim) if num_classes is not None else None

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        if self.embed is not None:
            z = torch.cat([z, self.embed(labels)], dim=1)
        return self.net(z)


class GAN(GenerativeModel):
    family = "gan"
    config_schema = GANConfig
    likelihood_kind = "none"
    latent_space = "generator input z, no encoder"
    conditioning = "label embedding in G, projection discriminator (conditional=true)"
    latent = "explicit"
    supports_labels = True
    unused_parameters_per_step = True
    steps_own_optimizers = True

    def __init__(self, data_shape: tuple[int, ...], num_classes: int | None = None, **hparams) -> None:
        super().__init__(data_shape, num_classes, **hparams)
        hp = self.hp
        self.latent_dim = hp.latent_dim
        g_in = hp.latent_dim + (hp.label_dim if self.is_conditional else 0)
        if self.is_image:
            g_net = DCGANGenerator(g_in, self.data_shape, hp.conv_channels)
            features = DCGANDiscriminator(self.data_shape, hp.conv_channels)
            feature_dim = features.out_dim
        else:
            g_net = MLP(g_in, self.data_dim, hp.hidden_dims)
            feature_dim = hp.hidden_dims[-1]
            features = nn.Sequential(MLP(self.data_dim, feature_dim, hp.hidden_dims[:-1]), nn.SiLU())
        self.generator = Generator(g_net, num_classes if self.is_conditional else None, hp.label_dim)
        self.d_features = features
        self.d_head = nn.Linear(feature_dim, 1)
        self.d_embed = nn.Embedding(num_classes, feature_dim) if self.is_conditional else None
        if hp.spectral_norm:
            for module in [*self.d_features.modules(), self.d_head, self.d_embed]:
                if isinstance(module, (nn.Linear, nn.Conv2d, nn.Embedding)):
                    spectral_norm(module)
        self.generator_ema = None
        if hp.ema_decay is not None:
            self.generator_ema = ema_copy(self.generator)

    # ---- the discriminator (model space: [-1, 1] for images) ---------------------------------------
    def critic(self, x: Tensor, labels: Tensor | None) -> Tensor:
        """D's score (a logit for "ns") per example, with the class projection term when conditional."""
        h = self.d_features(x)
        score = self.d_head(h).squeeze(1)
        if self.is_conditional:
            score = score + (self.d_embed(labels) * h).sum(1)
        return score

    def discriminator_objective(self, real: Tensor, fake: Tensor, labels: Tensor | None) -> Tensor:
        """D's loss on a real and a generated batch (model space), with the gradient penalty for WGAN-GP."""
        loss = discriminator_loss(self.critic(real, labels), self.critic(fake, labels), self.hp.loss)
        if self.hp.loss == "wgan-gp":
            loss = loss + self.hp.gp_weight * gradient_penalty(lambda x: self.critic(x, labels), real, fake)
        return loss

    # ---- latent space and sampling -------------------------------------------------------------------
    def _noise(self, n: int) -> Tensor:
        return torch.randn(n, self.latent_dim, device=self.device)

    @torch.no_grad()
    def generate(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """Latents (N, latent_dim) to data space, with the EMA generator when enabled; labels are random
        when the model is conditional and none are given."""
        generator = self.generator_ema if self.generator_ema is not None else self.generator
        x = generator(z, self.sampling_labels(len(z), labels))
        return from_symmetric(x) if self.is_image else x

    def sample(self, n: int, labels: Tensor | None = None) -> Tensor:
        return self.generate(self._noise(n), labels)

    def nfe(self) -> int:
        return 1

    def training_cycle(self) -> int:
        return self.hp.n_critic

    # ---- training ------------------------------------------------------------------------------------
    def configure_optimizers(self) -> list[Any]:
        """The configured optimizer for G (with its label embedding) and for D (with its projection
        embedding, at ``lr_d`` where set), each with the configured schedule over its own steps."""
        hp = self.hp
        d_params = [*self.d_features.parameters(), *self.d_head.parameters(),
                    *(self.d_embed.parameters() if self.d_embed else [])]
        opt_g = self.make_optimizer(self.generator.parameters())
        opt_d = self.make_optimizer(d_params, **({"lr": hp.lr_d} if hp.lr_d else {}))
        if hp.scheduler is None:
            return [opt_g, opt_d]
        batches = self.scheduled_steps()
        if self.trainer.max_steps > 0:  # it counts both players' steps: its batches end the run first
            batches = min(batches, self.trainer.max_steps * hp.n_critic // (hp.n_critic + 1))
        return [{"optimizer": opt, "lr_scheduler": build_scheduler(hp.scheduler, opt, steps)}
                for opt, steps in ((opt_g, batches // hp.n_critic), (opt_d, batches))]

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        """One D step on this batch; every ``n_critic``-th batch also one G step (fresh z, same labels)."""
        opt_g, opt_d = self.optimizers()
        # The critic's n_critic-th step in a row is followed by G's: counted in optimizer steps, so the
        # cycle runs on across epochs (an epoch of batches that n_critic does not divide) and resumes.
        generator_turn = self.global_step % (self.hp.n_critic + 1) == self.hp.n_critic - 1
        sched_g, sched_d = self.lr_schedulers() or (None, None)  # manual optimization steps them here
        x, y = batch
        real = to_symmetric(x) if self.is_image else x.float()
        labels = y if self.is_conditional else None
        with torch.no_grad():
            fake = self.generator(self._noise(len(x)), labels)
        d_loss = self.discriminator_objective(real, fake, labels)
        opt_d.zero_grad()
        self.manual_backward(d_loss)
        opt_d.step()
        if sched_d is not None:
            sched_d.step()
        logged = {"train/d_loss": d_loss}
        loss = d_loss.detach()
        if generator_turn:
            with self.toggled_optimizer(opt_g):  # D's weights get no gradients from G's step
                fake = self.generator(self._noise(len(x)), labels)
                g_loss = generator_loss(self.critic(fake, labels), self.hp.loss)
                opt_g.zero_grad()
                self.manual_backward(g_loss)
                opt_g.step()
                if sched_g is not None:
                    sched_g.step()
            if self.generator_ema is not None:
                ema_update(self.generator_ema, self.generator, self.hp.ema_decay)
            logged["train/g_loss"] = g_loss
            loss = loss + g_loss.detach()
        # train/loss: D's loss (+ G's on G-step batches), what the divergence guard watches
        self.log_training({"train/loss": loss, **logged}, batch_size=len(x))
        return {"loss": loss}
