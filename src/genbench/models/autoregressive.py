"""Autoregressive models: p(x) = prod_d p(x_d | x_<d), an exact likelihood in one network pass.

- Vectors: MADE (Germain et al., 2015), a masked MLP, with a mixture of Gaussians per dimension
  (logits, means and log-stds of ``num_components`` components) on the training data's standardized
  coordinates (:mod:`genbench.models.standardize`): the density on R^D, with the Jacobian.
- Images: a gated PixelCNN (van den Oord et al., 2016) in raster order with sub-pixels R -> G -> B,
  with a 256-way categorical per sub-pixel (default) or a mixture of discretized logistics
  (Salimans et al., 2017). Either is a pmf over the 256 levels, equal to the density of uniformly
  dequantized pixels on [0, 256)^D (see :mod:`genbench.data.pixels`), so it is reported as is.

Sampling draws one dimension at a time, the whole batch at once, each draw one network evaluation:
NFE = D for vectors (a MADE pass each) and C*H*W for images, where ``sampler`` says what an evaluation
is. ``crop`` runs the whole network on the pixel's receptive field (exactly equal to the full pass at
that pixel). ``cached`` (default) keeps activations between evaluations: the horizontal stack and head
run at the pixel alone, the vertical stack once per row (:class:`genbench.nets.pixelcnn.CachedEvaluator`).
Both compute the same parameters up to float summation order and make the same random draws in the same
order, so they give the same images for a seed, unless a draw falls within rounding of a level's
boundary (measured: 0 of 5,120 images with the categorical output, 11 with the logistic mixture;
``scripts/bench_ar_sampler.py --agreement-seeds``). With
``conditional`` a label embedding biases every layer (Conditional PixelCNN); the likelihood of an
unlabelled x is then the exact mixture over labels with a uniform prior, sum_y p(x|y) / num_classes.
"""

import itertools
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from genbench.data.pixels import LEVELS, from_symmetric, to_symmetric
from genbench.errors import ConfigError
from genbench.models.base import GenerativeModel
from genbench.models.likelihoods import discretized_logistic_log_mass, sample_discretized_logistic
from genbench.models.optim import OptimizationConfig, optimizer_param
from genbench.models.standardize import Standardizer, training_tensor
from genbench.nets.made import MADE
from genbench.nets.pixelcnn import CachedEvaluator, CropEvaluator, GatedPixelCNN
from genbench.schema import param


@dataclass
class AutoregressiveConfig(OptimizationConfig):
    optimizer: dict[str, Any] = optimizer_param(lr=3e-3, weight_decay=0.0)
    # MADE (vector data)
    hidden_dims: list[int] = param([256, 256], ge=1)  # masked MLP widths
    num_components: int = param(10, ge=1)  # Gaussians in each per-dimension mixture
    min_log_std: float = -7.0  # floor of the mixture log-stds, keeps the density finite
    # Gated PixelCNN (image data)
    channels: int = param(32, ge=3)  # feature channels of both stacks (split in colour groups)
    layers: int = param(4, ge=1)  # gated layers
    kernel_size: int = param(3, ge=3)  # odd; receptive field grows by kernel_size // 2 per layer
    head_channels: int = param(64, ge=3)  # hidden width of the 1x1 output head
    pixel_output: str = param("categorical", choices=["categorical", "logistic_mixture"])
    logistic_components: int = param(5, ge=1)  # mixture size of pixel_output=logistic_mixture
    min_log_scale: float = -7.0  # floor of the logistic log-scales
    conditional: bool = False  # label-embedding biases; p(x) marginalizes labels (num_classes passes)
    # Image sampler, same draws and NFE: cached (activations kept between evaluations) or crop (the whole
    # network on each pixel's receptive field); the record names it as model.sampler
    sampler: str = param("cached", choices=["cached", "crop"], evaluation=True)


class Autoregressive(GenerativeModel):
    family = "autoregressive"
    config_schema = AutoregressiveConfig
    likelihood_kind = "exact"
    latent_space = "none"
    conditioning = "label-embedding bias in every layer (conditional=true)"
    supports_labels = True

    def __init__(self, data_shape: tuple[int, ...], num_classes: int | None = None, **hparams) -> None:
        super().__init__(data_shape, num_classes, **hparams)
        hp = self.hp
        labels = num_classes if self.is_conditional else None
        if self.is_image:
            if hp.kernel_size % 2 == 0:
                raise ConfigError(f"model.kernel_size={hp.kernel_size}: must be odd")
            per_subpixel = LEVELS if hp.pixel_output == "categorical" else 3 * hp.logistic_components
            self.net = GatedPixelCNN(self.data_shape[0], per_subpixel, hp.channels, hp.layers, hp.kernel_size,
                                     hp.head_channels, labels)
        else:
            self.net = MADE(self.data_dim, 3 * hp.num_components, hp.hidden_dims, labels)
            self.standardize = Standardizer(self.data_dim)  # the mixture's means start in [-2, 2]
            with torch.no_grad():  # spread the initial component means so they do not all chase one mode
                k = hp.num_components
                self.net.out.bias.view(3 * k, -1)[k : 2 * k] = torch.linspace(-2, 2, k)[:, None]


    # ---- per-dimension distributions ----------------------------------------------------------------

    def _mog(self, p: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """MADE output (B, 3K, ...) -> mixture log-weights, means, log-stds (each (B, K, ...))."""
        logits, mean, log_std = p.chunk(3, dim=1)
        return F.log_softmax(logits, dim=1), mean, log_std.clamp_min(self.hp.min_log_std)

    def _logistics(self, p: Tensor, dim: int) -> tuple[Tensor, Tensor, Tensor]:
        """PixelCNN logistic-mixture parameters -> log-weights, means, log-scales along ``dim``."""
        logits, mean, log_scale = p.chunk(3, dim=dim)
        return F.log_softmax(logits, dim=dim), mean, log_scale.clamp_min(self.hp.min_log_scale)

    def _log_prob_given(self, x: Tensor, y: Tensor | None) -> Tensor:
        """log p(x | y) per example (y None: unconditional), one network pass."""
        if not self.is_image:
            x = self.standardize(x.float())
            log_w, mean, log_std = self._mog(self.net(x, y))
            z = (x.unsqueeze(1) - mean) * torch.exp(-log_std)
            log_n = -0.5 * z.pow(2) - log_std - 0.5 * math.log(2 * math.pi)
            return torch.logsumexp(log_w + log_n, dim=1).sum(1) + self.standardize.log_det()
        p = self.net(to_symmetric(x), y)  # (B, C, P, H, W)
        if self.hp.pixel_output == "categorical":
            return F.log_softmax(p, dim=2).gather(2, x.long().unsqueeze(2)).flatten(1).sum(1)
        log_w, mean, log_scale = self._logistics(p, dim=2)
        log_comp = discretized_logistic_log_mass(to_symmetric(x).unsqueeze(2), mean, log_scale)
        return torch.logsumexp(log_w + log_comp, dim=2).flatten(1).sum(1)

    def log_likelihood(self, x: Tensor) -> Tensor:
        if not self.is_conditional:
            return self._log_prob_given(x, None)
        per_label = [
            self._log_prob_given(x, torch.full((len(x),), k, device=x.device, dtype=torch.long))
            for k in range(self.num_classes)
        ]
        return torch.logsumexp(torch.stack(per_label), dim=0) - math.log(self.num_classes)

    # ---- sampling -------------------------------------------------------------------------------------
    def _draw_subpixel(self, p: Tensor) -> Tensor:
        """One level in 0..255 per row of p (B, P)."""
        if self.hp.pixel_output == "categorical":
            return torch.multinomial(F.softmax(p, dim=1), 1).squeeze(1).to(torch.uint8)
        log_w, mean, log_scale = self._logistics(p, dim=1)
        k = torch.multinomial(log_w.exp(), 1)
        draw = sample_discretized_logistic(mean.gather(1, k), log_scale.gather(1, k)).squeeze(1)
        return from_symmetric(draw)

    @torch.no_grad()
    def sample(self, n: int, labels: Tensor | None = None) -> Tensor:
        y = self.sampling_labels(n, labels)
        if not self.is_image:
            x = torch.zeros(n, self.data_dim, device=self.device)
            for d in range(self.data_dim):
                log_w, mean, log_std = (t[:, :, d] for t in self._mog(self.net(x, y)))
                k = torch.multinomial(log_w.exp(), 1)
                noise = torch.randn(n, 1, device=self.device)
                x[:, d] = (mean.gather(1, k) + log_std.gather(1, k).exp() * noise).squeeze(1)
            return self.standardize.inverse(x)
        colors, height, width = self.data_shape
        x = torch.zeros(n, *self.data_shape, dtype=torch.uint8, device=self.device)
        if self.hp.sampler == "cached":
            evaluator: CachedEvaluator | CropEvaluator = CachedEvaluator(self.net, n, width, y)
        else:
            evaluator = CropEvaluator(self.net, to_symmetric(x), y)
        for i, j, c in itertools.product(range(height), range(width), range(colors)):
            # R, then G given R, then B given R and G: one evaluation each
            x[:, c, i, j] = self._draw_subpixel(evaluator.params(i, j)[:, c])
            evaluator.put(c, i, j, to_symmetric(x[:, c, i, j]))
        return x

    def nfe(self) -> int:
        """D network evaluations per sample, one per dimension, with either image sampler: ``crop`` runs
        the whole network on the pixel's receptive field each time; for ``cached`` one evaluation is the
        horizontal stack and the head at the pixel, with the vertical stack's one pass per row on top."""
        return self.data_dim

    def on_train_start(self) -> None:
        super().on_train_start()
        if not self.is_image and not self.standardize.fitted:  # not again on resume
            self.standardize.fit(training_tensor(self.trainer))

    # ---- training -------------------------------------------------------------------------------------
    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        loss = -self._log_prob_given(x, y if self.is_conditional else None).mean()
        self.log_training_nll(loss, batch_size=len(x))
        return loss
