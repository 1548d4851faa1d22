"""Energy-based model trained by contrastive divergence with short-run Langevin dynamics (IGEBM).

Follows Du & Mordatch, "Implicit Generation and Generalization in Energy-Based Models" (NeurIPS 2019):
a network E(x) defines p(x) = exp(-E(x)) / Z. Each training step draws negatives x- by a few Langevin
steps, x <- x - step_size * grad E(x) + noise_scale * N(0, I), started from a replay buffer of earlier
chains (a fraction ``reinit_prob`` restarted from uniform noise), and minimizes

    E(x+) - E(x-) + alpha * (E(x+)^2 + E(x-)^2),

the contrastive-divergence gradient of the negative log-likelihood plus the energy-magnitude regularizer
that keeps training stable. Like IGEBM, step size and noise are decoupled (a low-temperature sampler),
the gradient may be clipped per element, and chains stay inside the data's box.

Model space: images are ``pixels.to_symmetric`` floats in [-1, 1]; vectors are standardized with the
training data's mean and std, taken when fitting starts and kept as buffers, with the box the chains
start in and stay in (the per-dimension data range widened by ``box_margin`` on each side).

Sampling (``sample``) runs ``sample_steps`` Langevin steps from fresh uniform noise by default, the honest
cost of a sample; ``sample_init="buffer"`` continues chains from the replay buffer instead (cheaper, but
those chains carry uncounted earlier steps). NFE counts one per Langevin step: each step is one energy
forward pass plus its backward pass for the input gradient.

Likelihood: none for images and vectors of D != 2 (Z is intractable). For 2D data Z is computed by
quadrature: exp(-E) is summed over the midpoints of a ``grid_resolution`` x ``grid_resolution`` grid over
the box (in data space) times the cell area, so log p(x) = -E(x) - log Z is a density on R^2 whose mass
outside the box is neglected (kind "quadrature"). It is the density the energy defines; the decoupled
sampler targets roughly exp(-E / T) with T = noise_scale^2 / (2 step_size) << 1, so samples are sharper.
"""

import math
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn

from genbench.data.pixels import from_symmetric, to_symmetric
from genbench.errors import ConfigError
from genbench.models.base import GenerativeModel
from genbench.models.optim import OptimizationConfig, optimizer_param
from genbench.models.standardize import Standardizer, training_tensor
from genbench.nets import MLP, ConvEncoder
from genbench.randomness import normal_like
from genbench.schema import param


@dataclass
class EBMConfig(OptimizationConfig):
    # Adam with IGEBM's beta1 = 0
    optimizer: dict[str, Any] = optimizer_param(lr=5e-3, betas=[0.0, 0.999], weight_decay=0.0)
    hidden_dims: list[int] = param([128, 128], ge=1)  # MLP widths of E (vector data)
    conv_channels: list[int] = param([32, 64], ge=1)  # conv widths of E (image data), two stages
    spectral_norm: bool = False  # spectral normalization of every layer of E (IGEBM's stabilizer)
    alpha: float = param(0.1, ge=0)  # weight of the energy-magnitude regularizer E(x+)^2 + E(x-)^2
    langevin_steps: int = param(10, ge=1)  # Langevin steps per training batch (short run)
    step_size: float = param(0.01, gt=0)  # multiplies grad E in each Langevin step
    noise_scale: float = param(0.005, ge=0)  # std of the Gaussian noise added in each Langevin step
    langevin_grad_clip: float | None = param(None, gt=0)  # clamp each element of grad E to [-c, c]; null: off
    buffer_size: int = param(10000, ge=0)  # replay buffer of past chains (model space); 0: always noise
    reinit_prob: float = param(0.05, ge=0, le=1)  # fraction of chains restarted from noise each batch
    box_margin: float = param(0.25, ge=0)  # vectors: box = data range widened by this fraction per side
    sample_steps: int = param(100, ge=1, evaluation=True)  # Langevin steps of sample(); its NFE
    # chains of sample() start from
    sample_init: str = param("noise", choices=["noise", "buffer"], evaluation=True)
    grid_resolution: int = param(256, ge=2, evaluation=True)  # 2D quadrature: grid points per axis


REPLAY_BUFFER = "ebm_replay_buffer"  # the checkpoint's key


def _spectral_norm(net: nn.Module) -> nn.Module:
    for name, child in net.named_children():
        if isinstance(child, (nn.Linear, nn.Conv2d)):
            setattr(net, name, nn.utils.parametrizations.spectral_norm(child))
        else:
            _spectral_norm(child)
    return net


class EBM(GenerativeModel):
    family = "ebm"
    latent_space = "none"
    config_schema = EBMConfig
    samplers = ("langevin",)  # its sampler knob: sample_steps, apart from training's langevin_steps

    def __init__(self, data_shape: tuple[int, ...], num_classes: int | None = None, **hparams) -> None:
        super().__init__(data_shape, num_classes, **hparams)
        hp = self.hp
        if self.is_image:
            net: nn.Module = ConvEncoder(self.data_shape, 1, hp.conv_channels)
            lo, hi = -torch.ones(self.data_shape), torch.ones(self.data_shape)
        else:
            net = MLP(self.data_dim, 1, hp.hidden_dims)
            lo, hi = torch.full(self.data_shape, -3.0), torch.full(self.data_shape, 3.0)
        self.energy_net = _spectral_norm(net) if hp.spectral_norm else net
        # Model-space standardization and box of vectors (images: [-1, 1] pixels and box): set from the
        # training data when fitting starts, saved in checkpoints.
        self.standardize = None if self.is_image else Standardizer(self.data_dim)
        self.register_buffer("box_lo", lo)
        self.register_buffer("box_hi", hi)
        # Model-space chains, kept in checkpoints by the hooks below. Not a registered buffer: DDP would
        # broadcast rank zero's (123 MB on CIFAR-10) before every forward, and older checkpoints' state
        # dicts lack it. Moved to the model's device where it is used.
        self.replay_buffer: Tensor | None = None
        self._log_z: tuple[tuple, Tensor] | None = None  # (the weights' versions, log Z)
        self.likelihood_kind = "quadrature" if self.data_shape == (2,) else "none"

    # ---- model space --------------------------------------------------------------------------------
    def to_model(self, x: Tensor) -> Tensor:
        return to_symmetric(x) if self.is_image else self.standardize(x.float())

    def to_data(self, x: Tensor) -> Tensor:
        return from_symmetric(x) if self.is_image else self.standardize.inverse(x)

    @torch.no_grad()
    def fit_data_stats(self, x: Tensor) -> None:
        """Standardization and box of vector data from training examples ``x`` (data space)."""
        if self.is_image:
            return
        self.standardize.fit(x)
        z = self.to_model(x.float().to(self.device))
        lo, hi = z.min(0).values, z.max(0).values
        self.box_lo.copy_(lo - self.hp.box_margin * (hi - lo))
        self.box_hi.copy_(hi + self.hp.box_margin * (hi - lo))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The replay buffer goes with the weights: a resumed run goes on with the chains it had (it
        restarted them from noise, and trained other weights: 0.05 apart after 12 steps), and with
        ``sample_init=buffer`` an evaluation of the checkpoint samples the model that was evaluated after
        training."""
        if self.replay_buffer is not None:
            checkpoint[REPLAY_BUFFER] = self.replay_buffer.cpu()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        buffer = checkpoint.get(REPLAY_BUFFER)
        self.replay_buffer = buffer if isinstance(buffer, Tensor) else None

    def on_train_start(self) -> None:
        super().on_train_start()
        if not self.is_image and not self.standardize.fitted:  # not again on resume: the box came with it
            self.fit_data_stats(training_tensor(self.trainer))

    def energy(self, z: Tensor) -> Tensor:
        """E of model-space ``z``, shape (N,)."""
        return self.energy_net(z if self.is_image else z.flatten(1)).squeeze(1)

    # ---- Langevin dynamics --------------------------------------------------------------------------
    def noise(self, n: int) -> Tensor:
        """Uniform draws from the box, where chains start."""
        u = torch.rand(n, *self.data_shape, device=self.device)
        return self.box_lo + u * (self.box_hi - self.box_lo)

    def langevin(self, z: Tensor, steps: int) -> Tensor:
        """Run ``steps`` Langevin steps from model-space ``z`` (one energy forward + backward each)."""
        hp = self.hp
        frozen = [p for p in self.parameters() if p.requires_grad]
        for p in frozen:  # only the input gradient is needed
            p.requires_grad_(False)
        try:
            with torch.enable_grad():
                for _ in range(steps):
                    z = z.detach().requires_grad_(True)
                    grad = torch.autograd.grad(self.energy(z).sum(), z)[0]
                    if hp.langevin_grad_clip is not None:
                        grad = grad.clamp(-hp.langevin_grad_clip, hp.langevin_grad_clip)
                    z = z - hp.step_size * grad + hp.noise_scale * normal_like(z)
                    z = torch.maximum(torch.minimum(z, self.box_hi), self.box_lo)
        finally:
            for p in frozen:
                p.requires_grad_(True)
        return z.detach()

    def _buffer(self) -> Tensor | None:
        """The replay buffer on the model's device (a checkpoint's comes on the CPU)."""
        if self.replay_buffer is not None and self.replay_buffer.device != self.device:
            self.replay_buffer = self.replay_buffer.to(self.device)
        return self.replay_buffer

    def _chain_starts(self, n: int) -> Tensor:
        """Starts from the replay buffer; a ``reinit_prob`` fraction (all while it is short) from noise."""
        fresh = self.noise(n)
        buf = self._buffer()
        if buf is None or len(buf) < n:
            return fresh
        old = buf[torch.randint(len(buf), (n,), device=buf.device)]
        restart = torch.rand(n, device=self.device) < self.hp.reinit_prob
        return torch.where(restart.view(-1, *[1] * len(self.data_shape)), fresh, old)

    def _push(self, z: Tensor) -> None:
        buf = z if self._buffer() is None else torch.cat([z, self.replay_buffer])
        self.replay_buffer = buf[: self.hp.buffer_size]

    # ---- interface ----------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, labels: Tensor | None = None) -> Tensor:
        self.sampling_labels(n, labels)  # unconditional: refuses labels
        start = self.noise(n)
        buf = self._buffer()
        if self.hp.sample_init == "buffer" and buf is not None and len(buf):
            start = buf[torch.randint(len(buf), (n,), device=buf.device)]
        return self.to_data(self.langevin(start, self.hp.sample_steps))

    def nfe(self) -> int:
        return self.hp.sample_steps

    def use_sampler(self, name: str, steps: int) -> None:
        if name not in self.samplers:
            raise ConfigError(f"the EBM samples by Langevin dynamics only (sampler 'langevin'), not {name!r}")
        self.hp = replace(self.hp, sample_steps=steps)

    @torch.no_grad()
    def quadrature_grid(self) -> tuple[Tensor, float]:
        """Midpoints (R^2, data space) of the 2D integration grid over the box, and the cell area."""
        if self.data_shape != (2,):
            raise NotImplementedError(f"quadrature needs 2D data, not shape {self.data_shape}")
        lo, hi = self.to_data(self.box_lo), self.to_data(self.box_hi)
        k = self.hp.grid_resolution
        width = (hi - lo) / k
        axes = [lo[i] + width[i] * (torch.arange(k, device=self.device) + 0.5) for i in range(2)]
        grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 2)
        return grid, float(width.prod())

    @torch.no_grad()
    def log_partition(self, chunk: int = 65536) -> Tensor:
        """log Z = log sum over grid cells of exp(-E) * cell area (midpoint rule)."""
        grid, area = self.quadrature_grid()
        neg_e = torch.cat([-self.energy(self.to_model(g)) for g in grid.split(chunk)])
        return torch.logsumexp(neg_e, 0) + math.log(area)

    def log_likelihood(self, x: Tensor) -> Tensor:
        if self.likelihood_kind != "quadrature":
            raise NotImplementedError(
                f"EBM on data of shape {self.data_shape} has no likelihood (kind 'none'): its normalizer "
                "is intractable; quadrature is only done for 2D data"
            )
        return -self.energy(self.to_model(x)) - self._cached_log_partition()

    def _cached_log_partition(self) -> Tensor:
        """log Z once per state of the weights, not once per batch: a validation or evaluation pass calls
        :meth:`log_likelihood` batch by batch with the same weights, and at ``dataset.batch_size=1`` the
        evaluation integrated the grid 5,000 times (70 ms each on the CPU). The key holds what log Z depends
        on: the grid's resolution, the mode (spectral norm's power iteration runs in training), the device,
        and each parameter's and buffer's storage and in-place version counter, which an optimizer step, a
        checkpoint's load, a move to another device and ``fit_data_stats`` all change."""
        key = (self.training, self.hp.grid_resolution, self.device,
               *((t.data_ptr(), t._version) for t in (*self.parameters(), *self.buffers())))
        if self._log_z is None or self._log_z[0] != key:
            self._log_z = (key, self.log_partition())
        return self._log_z[1]

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        pos = self.to_model(batch[0])
        neg = self.langevin(self._chain_starts(len(pos)), self.hp.langevin_steps)
        if self.hp.buffer_size:
            self._push(neg)
        e_pos, e_neg = self.energy(pos), self.energy(neg)
        mean_pos, mean_neg = e_pos.mean(), e_neg.mean()
        cd = mean_pos - mean_neg
        reg = (e_pos.pow(2) + e_neg.pow(2)).mean()
        loss = cd + self.hp.alpha * reg
        self.log_training({"train/loss": loss, "train/cd": cd, "train/energy_pos": mean_pos,
                           "train/energy_neg": mean_neg}, batch_size=len(pos))
        return loss
