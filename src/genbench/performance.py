"""Switches that make training use a GPU well, the same for every family (``configs/performance/``).

Each switch is ``auto``, ``true`` or ``false``; ``auto`` turns it on only on a CUDA device, so a CPU run
stays plain fp32 with torch's defaults, as the numbers in BENCHMARKS.md were measured:
- ``tf32``: TF32 tensor cores for float32 matmuls and convolutions (:func:`tf32_mode`), set
  both ways: ``false`` is float32 throughout, where torch's own default runs cuDNN's convolutions in TF32.
  It holds for the run's evaluation too (``train.py`` and ``eval.py`` alike; recorded as ``eval_tf32``), and
  torch's flags are restored after each;
- ``channels_last``: image networks' weights and inputs in NHWC, the layout cuDNN's convolutions run in
  (without it every convolution pays an NCHW<->NHWC conversion);
- ``pin_memory``: the training batches in page-locked host memory, so their copy to the GPU can run behind
  the queued kernels; a copy from pageable memory may wait for the GPU to finish them first (CUDA's
  documented behaviour). Off by default, as measured: on an H200 pinned batches sped the hand loop of
  ``scripts/bench_gpu.py`` up and made genbench's own step slower (BENCHMARKS.md). ``auto`` (on for CUDA)
  leaves it off where workers persist across reloaded loaders (``trainer.reload_dataloaders_every_n_epochs``),
  which Lightning warns is unstable (pytorch/pytorch#91252);
- ``fused_optimizer``: Adam's fused CUDA kernel (one launch for all parameters instead of a loop); not
  with mixed precision and ``trainer.gradient_clip_val`` together (Lightning cannot clip the gradients of an
  optimizer that unscales them itself): ``auto`` then falls back to torch's foreach Adam. A resumed run
  steps with the implementation it chose, not its checkpoint's;
- ``compile``: ``torch.compile`` of the networks the training steps run, for those steps only (off under
  ``auto``: compilation costs minutes), in ``compile_mode``: ``default``, or ``reduce-overhead`` (CUDA
  graphs: a host-bound step, as the diffusion U-Net's on an H200, launches its kernels in one graph) or
  ``max-autotune``. See :mod:`genbench.models.compiled`.
Mixed precision is the trainer's own option: ``trainer.precision=bf16-mixed``.
"""

import logging
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, fields
from typing import Any

import pytorch_lightning as pl
import torch

from genbench.data.base import GenerativeDataModule
from genbench.errors import ConfigError
from genbench.models.compiled import compile_for_training, graphs_compiled
from genbench.models.optim import restore_implementation
from genbench.schema import Schema, param

log = logging.getLogger(__name__)

SWITCH = ["auto", "true", "false"]


@dataclass
class PerformanceConfig(Schema):
    tf32: str = param("auto", choices=SWITCH)
    channels_last: str = param("auto", choices=SWITCH)
    fused_optimizer: str = param("auto", choices=SWITCH)
    pin_memory: str = param("false", choices=SWITCH)
    compile: str = param("false", choices=SWITCH)
    compile_mode: str = param("default", choices=["default", "reduce-overhead", "max-autotune"])

    def __post_init__(self) -> None:
        for f in fields(self):  # YAML and the command line make true/false booleans: "True" here
            if f.name != "compile_mode":
                setattr(self, f.name, str(getattr(self, f.name)).lower())
        super().__post_init__()


def resolve(setting: str, device: torch.device, auto: bool | None = None) -> bool:
    """A switch's value on ``device``: ``auto`` is on for CUDA (or ``auto`` when given)."""
    if setting == "auto":
        return device.type == "cuda" if auto is None else auto
    return setting == "true"


def tf32_acts(setting: str, device: torch.device) -> bool:
    """Whether TF32 is on and does something: only a CUDA device has TF32 (elsewhere the flags change nothing,
    and a record must not say it ran)."""
    return resolve(setting, device) and device.type == "cuda"


def channels_last_acts(setting: str, device: torch.device, model: torch.nn.Module) -> bool:
    """Whether NHWC is on and does something: only a model with convolutions (4-D weights) has a layout to
    change."""
    return resolve(setting, device) and any(p.dim() == 4 for p in model.parameters())


def pin_memory_acts(setting: str, device: torch.device, trainer: pl.Trainer) -> bool:
    """Whether pinned batches are on and do something: only a copy to a CUDA device reads them, from the
    training loader of genbench's data module."""
    datamodule = getattr(trainer, "datamodule", None)
    if device.type != "cuda" or not isinstance(datamodule, GenerativeDataModule):
        return False
    reloads = getattr(trainer, "reload_dataloaders_every_n_epochs", 0) or 0
    persisting_workers_reloaded = datamodule.hp.num_workers > 0 and reloads > 0
    return resolve(setting, device, auto=False if persisting_workers_reloaded else None)


@contextmanager
def tf32_mode(enabled: bool) -> Iterator[None]:
    """TF32 for float32 matmuls and cuDNN convolutions on or off inside, torch's settings as they were after.
    Matmuls go through ``set_float32_matmul_precision``: the ``allow_tf32`` boolean cannot hold a user's
    ``medium``, and torch refuses to read a precision set one way and changed the other."""
    matmul, conv = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    torch.set_float32_matmul_precision("high" if enabled else "highest")
    torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(matmul)
        torch.backends.cudnn.allow_tf32 = conv


def fused_can_clip(trainer: pl.Trainer, pl_module: pl.LightningModule) -> bool:
    """False where Lightning would refuse a fused Adam: mixed precision with gradient clipping, the
    trainer's or the model's own (the flow's ``grad_clip``): its mixed-precision plugin clips only
    gradients it unscaled itself."""
    clips = trainer.gradient_clip_val or getattr(pl_module, "clips_gradients", lambda: False)()
    return not (str(trainer.precision).endswith("-mixed") and clips)


class Performance(pl.Callback):
    """Applies the switches when training starts, before the optimizers exist; records what it chose."""

    def __init__(self, cfg: PerformanceConfig) -> None:
        self.cfg = cfg
        self.applied: dict[str, bool] = {}
        self.tf32_flags = False
        self._graphs_at_setup = 0  # dynamo's count of compiled graphs when the networks were wrapped
        self._flags = ExitStack()  # torch's global TF32 settings, restored at teardown or on an error

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        device, datamodule = trainer.strategy.root_device, getattr(trainer, "datamodule", None)
        cfg = self.cfg
        fused_auto = None if fused_can_clip(trainer, pl_module) else False  # None: the device decides
        self.applied = {  # what the run takes; a switch that cannot act on this device or model is off
            "tf32": tf32_acts(cfg.tf32, device),
            "channels_last": channels_last_acts(cfg.channels_last, device, pl_module),
            "fused_optimizer": resolve(cfg.fused_optimizer, device, auto=fused_auto),
            "pin_memory": pin_memory_acts(cfg.pin_memory, device, trainer),
            "compile": resolve(cfg.compile, device, auto=False),
        }
        if self.applied["fused_optimizer"] and not fused_can_clip(trainer, pl_module):
            raise ConfigError(
                f"performance.fused_optimizer=true cannot train with trainer.precision={trainer.precision}"
                f" and gradient clipping (trainer.gradient_clip_val={trainer.gradient_clip_val}, or the "
                "model's own: model.grad_clip): Lightning clips only gradients it unscaled, and the fused "
                "Adam unscales its own. Use performance.fused_optimizer=auto (the foreach Adam here), or no "
                "clipping (trainer.gradient_clip_val=null, model.grad_clip=0).")
        self.tf32_flags = resolve(cfg.tf32, device)  # torch's flags as configured; recorded only on CUDA
        self._flags.enter_context(tf32_mode(self.tf32_flags))
        if self.applied["channels_last"]:
            pl_module.to(memory_format=torch.channels_last)
        pl_module.fused_optimizer = self.applied["fused_optimizer"]
        if isinstance(datamodule, GenerativeDataModule):  # before Lightning asks it for the loader
            datamodule.pin_memory = self.applied["pin_memory"]
        if self.applied["compile"]:
            compile_for_training(pl_module, cfg.compile_mode)
            self._graphs_at_setup = graphs_compiled()

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._flags.close()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                     exception: BaseException) -> None:
        self._flags.close()  # Lightning skips the callbacks' teardown when fit raises

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The optimizers exist now: an optimizer class without a fused kernel (RMSprop, NAdam, ...) was
        built without one, and the record must not say otherwise."""
        if self.applied.get("fused_optimizer"):
            self.applied["fused_optimizer"] = all(opt.defaults.get("fused") for opt in trainer.optimizers)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """A resumed run's optimizers have the checkpoint's state now, and with it the implementation of the
        run that saved it (a fused Adam where this one chose foreach, or the converse): this run's choice,
        which its record states, is put back."""
        for optimizer in trainer.optimizers:
            if restore_implementation(optimizer):
                log.info("resumed %s with this run's implementation (%s), not its checkpoint's",
                         type(optimizer).__name__,
                         ", ".join(f"{k}={optimizer.defaults.get(k)}" for k in ("fused", "foreach")))

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """A run whose training compiled no graph ran eager (torch 2.11 did so after a call under the FLOP
        counter: :class:`~genbench.models.compiled.CompiledForTraining`): its record must not say compile."""
        if self.applied.get("compile") and graphs_compiled() == self._graphs_at_setup:
            log.warning("performance.compile=true: torch.compile compiled no graph of the training steps, "
                        "so they ran eager; the record's train_speedups leaves compile out")
            self.applied["compile"] = False

    def taken(self) -> list[str]:
        """The switches this run took, for the record (``compile`` with its mode where not the default)."""
        mode = self.cfg.compile_mode
        return [f"compile({mode})" if name == "compile" and mode != "default" else name
                for name, on in self.applied.items() if on]

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self.applied.get("channels_last") and isinstance(batch, list) and batch[0].dim() == 4:
            batch[0] = batch[0].contiguous(memory_format=torch.channels_last)
