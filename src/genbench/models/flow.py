"""Normalizing flow: RealNVP (Dinh et al., 2017) with Glow's steps (Kingma & Dhariwal, 2018).

An invertible map ``f`` takes data to a standard normal latent ``z``; by the change of variables,
``log p(x) = log N(f(x); 0, I) + log |det df/dx|``, exactly, and sampling is one inverse pass (NFE 1).
One flow step is actnorm (data-dependent init), a channel mixing (an invertible 1x1 convolution or a
fixed permutation) and an affine coupling with a bounded scale.

- Vectors: ``num_steps`` steps with MLP couplings over the two halves of the dimensions.
- Images: Glow's multi-scale architecture. Each level squeezes 2x2 patches into channels, runs
  ``steps_per_level`` steps with conv couplings, then factors half the channels out under a learned
  conditional prior. The number of levels adapts to the image: 8x8 digits 8->4->2, 28x28 MNIST
  28->14->7, 32x32 CIFAR 32->16->8->4.

Pixels are uniformly dequantized, ``v = (x + u) / 256`` in [0, 1), and optionally logit-transformed
(RealNVP, Jacobian included). ``log_likelihood`` is the exact log-density of the dequantized image on
[0, 256)^D for the one noise draw ``u`` it makes (an unbiased estimate of the dequantized bound on the
uint8 log-probability), so ``likelihood_kind`` is "exact".
"""

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from genbench.data.pixels import LEVELS, dequantize, from_unit, log_density_rescale
from genbench.errors import ConfigError
from genbench.models.base import GenerativeModel
from genbench.models.likelihoods import standard_normal_log_prob
from genbench.models.optim import OptimizationConfig, optimizer_param, scheduler_param
from genbench.models.schedule import warmup_cosine_node
from genbench.nets import MLP
from genbench.nets.flow_layers import (
    ActNorm,
    AffineCoupling,
    InvertibleLinear,
    Permutation,
    Split,
    Squeeze,
    conv_coupling_net,
    zero_init,
)
from genbench.schema import param


@dataclass
class FlowConfig(OptimizationConfig):
    optimizer: dict[str, Any] = optimizer_param(lr=2e-3, weight_decay=0.0)
    scheduler: dict[str, Any] | None = scheduler_param(warmup_cosine_node())
    num_steps: int = param(8, ge=1)  # flow steps (vector data)
    hidden_dims: list[int] = param([128, 128], ge=1)  # coupling MLP widths (vector data)
    levels: int = param(3, ge=1)  # multi-scale levels (image data), at most: fewer if the sides are too small
    steps_per_level: int = param(4, ge=1)  # flow steps per level (image data)
    hidden_channels: int = param(32, ge=1)  # coupling conv width (image data)
    permutation: str = param("conv1x1", choices=["conv1x1", "reverse", "shuffle"])  # channel mixing
    coupling_scale: str = param("tanh", choices=["tanh", "sigmoid"])  # bounded log-scale of the couplings
    scale_bound: float = param(2.0, gt=0)  # |log-scale| limit of "tanh" couplings and split priors
    pixel_transform: str = param("logit", choices=["logit", "shift"])  # logit(a + (1-2a) v), or v - 0.5
    logit_alpha: float = param(0.05, gt=0, lt=0.5)  # a of the logit transform
    temperature: float = param(1.0, gt=0, evaluation=True)  # std of the latent when sampling
    grad_clip: float = param(10.0, ge=0)  # gradient-norm clipping (0: off); trainer.gradient_clip_val wins


def _num_levels(height: int, width: int, max_levels: int) -> int:
    """Squeezes an image allows: both sides even, and at least 2x2 after."""
    levels = 0
    while levels < max_levels and height % 2 == 0 and width % 2 == 0 and min(height, width) >= 4:
        height, width, levels = height // 2, width // 2, levels + 1
    return levels


class Flow(GenerativeModel):
    family = "flow"
    config_schema = FlowConfig
    likelihood_kind = "exact"
    latent_space = "exact bijection x <-> z"
    latent = "explicit"

    def __init__(self, data_shape: tuple[int, ...], num_classes: int | None = None, **hparams) -> None:
        super().__init__(data_shape, num_classes, **hparams)
        hp = self.hp
        self.levels = nn.ModuleList()
        self.splits = nn.ModuleList()
        if self.is_image:
            channels, height, width = self.data_shape
            n_levels = _num_levels(height, width, hp.levels)
            if n_levels == 0:
                raise ConfigError(f"flow: a {height}x{width} image cannot be squeezed (sides must be even)")
            make_net = conv_coupling_net(hp.hidden_channels)
            self.latent_shapes: list[tuple[int, ...]] = []
            for i in range(n_levels):
                channels, height, width = 4 * channels, height // 2, width // 2
                steps = self._steps(channels, hp.steps_per_level, make_net)
                self.levels.append(nn.ModuleList([Squeeze(), *steps]))
                if i < n_levels - 1:
                    self.splits.append(Split(channels, make_net, hp.scale_bound))
                    self.latent_shapes.append((channels - channels // 2, height, width))
                    channels //= 2
            self.latent_shapes.append((channels, height, width))
        else:
            if self.data_dim < 2:
                raise ConfigError("flow: couplings need at least 2 dimensions")

            def make_net(n_in: int, n_out: int) -> nn.Module:
                return zero_init(MLP(n_in, n_out, hp.hidden_dims))

            self.levels.append(nn.ModuleList(self._steps(self.data_dim, hp.num_steps, make_net)))
            self.latent_shapes = [(self.data_dim,)]

    def _steps(self, channels: int, n: int, make_net: Callable[[int, int], nn.Module]) -> list[nn.Module]:
        """``n`` flow steps: actnorm, channel mixing, affine coupling."""
        hp = self.hp
        layers: list[nn.Module] = []
        for _ in range(n):
            if hp.permutation == "conv1x1":
                mix: nn.Module = InvertibleLinear(channels)
            else:
                mix = Permutation(channels, hp.permutation)
            coupling = AffineCoupling(channels, make_net, hp.coupling_scale, hp.scale_bound)
            layers += [ActNorm(channels), mix, coupling]
        return layers

    # ---- the bijection between model space and the latent ------------------------------------------
    def flow_forward(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """Model-space ``y`` -> (flat latent z (N, D), log |det dz/dy| (N,))."""
        logdet = y.new_zeros(len(y))
        latents = []
        for i, level in enumerate(self.levels):
            for layer in level:
                y, ld = layer(y)
                logdet = logdet + ld
            if i < len(self.splits):
                y, z, ld = self.splits[i](y)
                latents.append(z.flatten(1))
                logdet = logdet + ld
        latents.append(y.flatten(1))
        return torch.cat(latents, 1), logdet

    def flow_inverse(self, z: Tensor) -> Tensor:
        """Flat latent (N, D) -> model-space tensor."""
        sizes = [math.prod(s) for s in self.latent_shapes]
        parts = [p.reshape(-1, *s) for p, s in zip(z.split(sizes, 1), self.latent_shapes, strict=True)]
        y = parts[-1]
        for i in reversed(range(len(self.levels))):
            if i < len(self.splits):
                y = self.splits[i].inverse(y, parts[i])
            for layer in reversed(self.levels[i]):
                y = layer.inverse(y)
        return y

    # ---- pixels <-> model space --------------------------------------------------------------------
    def _pixels_to_model(self, v: Tensor) -> tuple[Tensor, Tensor]:
        """Dequantized pixels ``v`` in [0, 1) -> (model-space y, log |det dy/dv|)."""
        if self.hp.pixel_transform == "shift":
            return v - 0.5, v.new_zeros(len(v))
        a = self.hp.logit_alpha
        p = a + (1 - 2 * a) * v
        y = torch.log(p) - torch.log1p(-p)
        logdet = (math.log(1 - 2 * a) - torch.log(p) - torch.log1p(-p)).flatten(1).sum(1)
        return y, logdet

    def _model_to_pixels(self, y: Tensor) -> Tensor:
        """Model space -> uint8: ``v`` in [0, 1), then the bin ``floor(256 v)`` it dequantizes."""
        if self.hp.pixel_transform == "shift":
            v = y + 0.5
        else:
            v = (torch.sigmoid(y) - self.hp.logit_alpha) / (1 - 2 * self.hp.logit_alpha)
        return from_unit(torch.floor(v * LEVELS) / (LEVELS - 1))

    # ---- latent space -------------------------------------------------------------------------------
    def encode(self, x: Tensor) -> Tensor:
        """Data-space ``x`` -> flat latent (N, D); pixels are taken at their bin centres (deterministic)."""
        if self.is_image:
            x = self._pixels_to_model((x.float() + 0.5) / LEVELS)[0]
        return self.flow_forward(x.float())[0]

    def decode(self, z: Tensor) -> Tensor:
        """Flat latent (N, D) -> data space (uint8 images, float vectors)."""
        y = self.flow_inverse(z)
        return self._model_to_pixels(y) if self.is_image else y

    # ---- likelihood ---------------------------------------------------------------------------------
    def log_likelihood(self, x: Tensor) -> Tensor:
        if not self.is_image:
            z, logdet = self.flow_forward(x.float())
            return standard_normal_log_prob(z) + logdet
        y, logdet_pixels = self._pixels_to_model(dequantize(x) / LEVELS)
        z, logdet = self.flow_forward(y)
        log_p_unit = standard_normal_log_prob(z) + logdet + logdet_pixels  # density of (x + u) / 256
        return log_density_rescale(log_p_unit, self.data_dim, LEVELS)

    # ---- sampling and training ---------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, labels: Tensor | None = None, temperature: float | None = None) -> Tensor:
        """One inverse pass from ``z ~ N(0, T^2 I)``; ``T`` defaults to ``temperature`` in the config."""
        self.sampling_labels(n, labels)  # unconditional: refuses labels
        t = self.hp.temperature if temperature is None else temperature
        return self.decode(t * torch.randn(n, self.data_dim, device=self.device))

    def nfe(self) -> int:
        return 1

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x = batch[0]
        loss = -self.log_likelihood(x).mean()
        self.log_training_nll(loss, batch_size=len(x))
        return loss

    def clips_gradients(self) -> bool:
        return bool(self.hp.grad_clip)

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        """Clip the gradient norm at ``grad_clip``: maximum likelihood on sharp data (std-0.01 modes) has
        rare huge gradients that otherwise undo the fit."""
        clip = gradient_clip_val if gradient_clip_val is not None else self.hp.grad_clip or None
        self.clip_gradients(optimizer, clip, gradient_clip_algorithm)
