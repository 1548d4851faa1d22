"""The one interface every generative family implements.

The evaluation stage, the loggers and the comparison matrix talk to models only through
:class:`GenerativeModel`: ``sample``, ``log_likelihood`` with its ``likelihood_kind``, ``nfe`` and the
capability flags; iterative samplers also through ``samplers`` and ``use_sampler`` (the NFE sweep). How a
family trains (its ``training_step``) is its own business.

Likelihood kinds: ``exact``; ``bound`` (a lower bound on log p); ``estimate`` (an unbiased Monte Carlo
estimate of log p, e.g. a Hutchinson trace, whose noise the standard error holds); ``quadrature`` (a density
normalized by numerical integration); ``none``.

Data space: vectors are float tensors (N, D); images are uint8 tensors (N, C, H, W). ``sample`` returns
the same dtype and range the datamodule gives, and ``log_likelihood`` takes it. Likelihoods of images are
densities on [0, 256)^D of uniformly dequantized pixels (see :mod:`genbench.data.pixels`), in nats.
"""

import math
from typing import Any, ClassVar

import pytorch_lightning as pl
import torch
from torch import Tensor

from genbench.data.pixels import bits_per_dim
from genbench.errors import ConfigError
from genbench.models.ema import ema_update, is_ema_copy, warmup_decay
from genbench.models.optim import OptimizationConfig, build_optimizer, build_scheduler
from genbench.progress import logs_this_step
from genbench.schema import Schema

LIKELIHOOD_KINDS = ("exact", "bound", "estimate", "none", "quadrature")


class GenerativeModel(pl.LightningModule):
    """Base LightningModule of all families.

    Subclasses set the class attributes, a ``config_schema`` dataclass listing their options (built
    here as ``self.hp``, which validates the values), and implement ``training_step`` and ``sample``.
    """

    family: ClassVar[str]
    config_schema: ClassVar[type[Schema]]
    likelihood_kind: ClassVar[str] = "none"
    # "explicit": a z to sample from (and, with an encoder or a bijection, to map data to); "implicit": the
    # noise a deterministic sampler maps one-to-one to a sample; "none"
    latent: ClassVar[str] = "none"
    supports_labels: ClassVar[bool] = False
    latent_space: ClassVar[str] = "none"  # what the latent is, in words, for the matrix
    conditioning: ClassVar[str] = "none"  # how labels enter, in words, for the matrix
    samplers: ClassVar[tuple[str, ...]] = ()  # iterative samplers ``use_sampler`` accepts; () for one pass
    # Some parameters take no gradient in a training step (a GAN's D step leaves G's out, its G step D's):
    # DDP must look for them each step, which plain DDP refuses (genbench.train picks Lightning's strategy)
    unused_parameters_per_step: ClassVar[bool] = False
    # training_step steps the optimizers itself (Lightning's manual optimization: a GAN's two players), to
    # which Lightning's trainer.gradient_clip_val and accumulate_grad_batches do not apply (genbench.config)
    steps_own_optimizers: ClassVar[bool] = False

    def __init__(self, data_shape: tuple[int, ...], num_classes: int | None = None, **hparams: Any) -> None:
        super().__init__()
        assert self.likelihood_kind in LIKELIHOOD_KINDS, self.likelihood_kind
        if not issubclass(self.config_schema, OptimizationConfig):
            raise TypeError(f"{type(self).__name__}.config_schema must extend genbench.models.optim."
                            "OptimizationConfig: every family takes its optimizer and schedule from config")
        self.hp = self.config_schema(**hparams)
        self.automatic_optimization = not self.steps_own_optimizers
        if getattr(self.hp, "conditional", False) and num_classes is None:
            raise ConfigError(f"model.conditional=true, but the dataset has no labels to condition "
                              f"{self.family} on; use a labelled dataset (digits, mnist, ...) or "
                              "model.conditional=false")
        self.data_shape = tuple(int(s) for s in data_shape)
        self.num_classes = num_classes
        self.save_hyperparameters()

    @property
    def is_image(self) -> bool:
        return len(self.data_shape) == 3

    @property
    def is_conditional(self) -> bool:
        """Whether this instance generates per class: its family can (``supports_labels``, and then its
        schema has ``conditional``), ``model.conditional=true`` (off by default, so families compare as
        unconditional models) and the data has labels."""
        return self.supports_labels and self.hp.conditional and self.num_classes is not None

    def random_labels(self, n: int) -> Tensor:
        """Labels drawn uniformly, for ``sample(n)`` of a conditional model given no labels."""
        assert self.num_classes is not None
        return torch.randint(self.num_classes, (n,), device=self.device)

    def sampling_labels(self, n: int, labels: Tensor | None, draw: bool = True) -> Tensor | None:
        """What ``sample(n, labels)`` conditions on: the given labels on the model's device; where none are
        given, uniform random ones (``draw``) or None (diffusion's null label); None for an unconditional
        model, which refuses labels: it cannot draw from p(x | y), and a caller asking for that must know."""
        if labels is not None and not self.is_conditional:
            why = "unconditional" if not self.supports_labels else "model.conditional=false, or no labels"
            raise ValueError(f"this {self.family} model generates without classes ({why}); sample without "
                             "labels")
        if labels is not None and len(labels) != n:
            raise ValueError(f"{len(labels)} labels for {n} samples; give one label per sample")
        if not self.is_conditional:
            return None
        if labels is None:
            return self.random_labels(n) if draw else None
        return labels.to(self.device)

    @property
    def data_dim(self) -> int:
        """Number of dimensions D of one example (C*H*W for images), the divisor of bits/dim."""
        return math.prod(self.data_shape)

    def sample(self, n: int, labels: Tensor | None = None) -> Tensor:
        """Draw ``n`` examples in data space, from the model's p(x) when ``labels`` is None (a conditional
        model draws uniform random labels; diffusion uses its null label, the unconditional model that
        classifier-free guidance trains), from p(x | y) per given label otherwise."""
        raise NotImplementedError

    def training_cycle(self) -> int:
        """Training batches over which the family's step repeats (a GAN's ``n_critic`` critic batches, the
        last with the generator's step): what one training example costs is averaged over them."""
        return 1

    def log_likelihood(self, x: Tensor) -> Tensor:
        """Per-example log-likelihood in nats (a bound when ``likelihood_kind == 'bound'``)."""
        raise NotImplementedError(f"{type(self).__name__} has no likelihood (kind 'none')")

    def extra_log_likelihoods(self, x: Tensor) -> dict[str, Tensor]:
        """Further per-example estimates a family offers (for example IWAE), keyed by name."""
        return {}

    def nfe(self) -> int:
        """Network evaluations one sample costs."""
        raise NotImplementedError

    def use_sampler(self, name: str, steps: int) -> None:
        """Sample from now on with sampler ``name`` (one of ``samplers``) and ``steps`` steps; a bad choice
        raises ConfigError naming it."""
        raise NotImplementedError(f"{self.family} draws a sample in a fixed number of passes; it has no "
                                  "sampler or step count to choose")

    @property
    def has_latent(self) -> bool:
        return self.latent == "explicit"

    def capabilities(self) -> dict[str, Any]:
        """What the family offers through the interface; recorded with every run for the matrix."""
        return {"likelihood_kind": self.likelihood_kind, "latent": self.latent, "has_latent": self.has_latent,
                "latent_space": self.latent_space, "supports_labels": self.supports_labels,
                "conditioning": self.conditioning, "is_conditional": self.is_conditional}

    def num_parameters(self) -> int:
        """Trained parameters: an EMA copy of a network (:mod:`genbench.models.ema`) is not more capacity."""
        averaged = {id(p) for m in self.modules() if is_ema_copy(m) for p in m.parameters()}
        return sum(p.numel() for p in self.parameters() if id(p) not in averaged)

    fused_optimizer: bool = False  # set by genbench.performance before the optimizers are made

    def make_optimizer(self, params: Any, **overrides: Any) -> torch.optim.Optimizer:
        """The configured optimizer (``model.optimizer``) over ``params``, fused into one CUDA kernel when
        ``performance`` says so and the class has such a kernel; ``overrides`` replace its options."""
        return build_optimizer(self.hp.optimizer, params, fused=self.fused_optimizer, **overrides)

    def optimized_parameters(self) -> Any:
        """What the optimizer trains: every parameter (a family with an EMA copy leaves it out)."""
        return self.parameters()

    def clips_gradients(self) -> bool:
        """Whether the family clips its gradients itself (``configure_gradient_clipping``), beside any
        ``trainer.gradient_clip_val``."""
        return False

    def averaged_weights(self) -> list[tuple[torch.nn.Module, torch.nn.Module]]:
        """(EMA copy, trained network) pairs averaged after every optimizer step, with ``hp.ema_decay`` and
        its warm-up; none by default (the GAN averages inside its manual generator step)."""
        return []

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        """The optimizer's step, then the averages': once per step (with gradient accumulation a batch may
        step nothing), and before any callback's end-of-batch hook, so a checkpoint written there holds
        the average of the weights it holds (written from the model's own end-of-batch hook, it lacked
        that step's update: a run resumed from it ended 1.7e-4 apart)."""
        super().optimizer_step(*args, **kwargs)
        self.update_averages(self.global_step + 1)  # Lightning counts the step once this hook returns

    def update_averages(self, steps: int) -> None:
        """One update of each :meth:`averaged_weights` pair, after ``steps`` optimizer steps in all (the
        warm-up of the decay counts them)."""
        for ema, source in self.averaged_weights():
            ema_update(ema, source, warmup_decay(self.hp.ema_decay, steps))

    def scheduled_steps(self) -> int:
        """Optimizer steps the run will take, which a schedule spans: ``trainer.max_steps`` or, bounded by
        epochs (``max_steps=-1``, or epochs that end first), the epochs' steps (Lightning's estimate, with
        gradient accumulation)."""
        steps = self.trainer.estimated_stepping_batches
        if not math.isfinite(steps):
            raise ConfigError("model.scheduler needs a run of known length: set trainer.max_steps or "
                              "trainer.max_epochs")
        return int(steps)

    def configure_optimizers(self) -> Any:
        """The configured optimizer, with the configured schedule (``model.scheduler``, stepped once per
        optimizer step, over the run's steps) where there is one."""
        optimizer = self.make_optimizer(self.optimized_parameters())
        if self.hp.scheduler is None:
            return optimizer
        schedule = build_scheduler(self.hp.scheduler, optimizer, self.scheduled_steps())
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def log_training(self, values: dict[str, Tensor], batch_size: int) -> None:
        """Training values (``train/loss`` first) for the loggers and ``trainer.callback_metrics``, handed to
        Lightning only on the steps its loggers write (every ``trainer.log_every_n_steps``). Each
        ``self.log`` costs a fixed slice of host time (Lightning moves its result object to the device on
        every call: about 0.2 ms on the 2-core CPU machine, BENCHMARKS.md), which a GPU step that launches
        its kernels from the host pays on every step and a hand-written loop does not. The loggers get the
        same rows: Lightning drops the values of the other steps."""
        trainer = self._trainer
        if trainer is not None and trainer.training and not logs_this_step(trainer):
            return
        self.log_dict(values, batch_size=batch_size)

    def log_training_nll(self, nll: Tensor, batch_size: int) -> None:
        """The training loss of a family fitted by maximum likelihood (``nll``: nats per example), with its
        bits per dimension where the data are images."""
        bpd = {"train/bpd": bits_per_dim(nll, self.data_dim)} if self.is_image else {}
        self.log_training({"train/loss": nll, **bpd}, batch_size)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        """The validation NLL in float32, as the evaluation's: Lightning runs validation under the
        trainer's autocast, and a bf16 likelihood moved it by 0.0017 bits/dim (a flow on digits)."""
        if self.likelihood_kind == "none":
            return
        with torch.autocast(self.device.type, enabled=False):
            nll = -self.log_likelihood(batch[0]).mean()
        self.log("val/nll_nats", nll, prog_bar=True, batch_size=len(batch[0]))
