"""Training callbacks that every run gets from ``train.run`` (the divergence guard, validation on its own
random stream) or from config (sample pictures at a fixed step interval, sent to every active logger)."""

import contextlib
from pathlib import Path

import matplotlib.image
import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor

from genbench.errors import DivergedError
from genbench.evaluation.plots import save_samples_png
from genbench.loggers import log_image
from genbench.randomness import kept_rng, random_state, set_random_state


class SampleGrids(pl.Callback):
    """Every ``every_n_steps`` optimizer steps, draw samples (a grid of ``n_image`` images, a scatter of
    ``n_vector`` points), save ``samples/step_<k>.png`` in the run directory and log the picture to each
    logger (W&B, TensorBoard; the CSV logger gets a copy of the PNG)."""

    def __init__(self, out_dir: str, every_n_steps: int = 500, n_image: int = 64,
                 n_vector: int = 1000) -> None:
        if every_n_steps < 0 or n_image < 1 or n_vector < 1:
            raise ValueError(f"callbacks.sample_grids: every_n_steps={every_n_steps} must be >= 0 (0: off), "
                             f"n_image={n_image} and n_vector={n_vector} >= 1")
        self.out_dir, self.every_n_steps = Path(out_dir), every_n_steps
        self.n_image, self.n_vector = n_image, n_vector
        self._last_bucket = 0  # pictures at the first step of each new multiple of every_n_steps

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        step = trainer.global_step
        if not self.every_n_steps or step // self.every_n_steps == self._last_bucket:
            return  # a GAN's global_step moves by two per batch: compare multiples, not remainders
        self._last_bucket = step // self.every_n_steps
        if not trainer.is_global_zero:
            return
        was_training = pl_module.training
        pl_module.eval()
        with kept_rng(pl_module.device), torch.no_grad():  # the pictures watch the training, never change it
            samples = pl_module.sample(self.n_image if pl_module.is_image else self.n_vector)
        pl_module.train(was_training)
        png = self.out_dir / "samples" / f"step_{step:07d}.png"
        png.parent.mkdir(parents=True, exist_ok=True)
        save_samples_png(samples, batch[0], png, f"{pl_module.family}: step {step}")
        image = (matplotlib.image.imread(png)[..., :3] * 255).astype(np.uint8)
        for logger in trainer.loggers:
            log_image(logger, "samples", image, step, png)


class ValidationKeepsRandomness(pl.Callback):
    """Validation (and Lightning's sanity check) runs on a fork of the global random state, put back when it
    ends: a family's validation may draw (diffusion's Monte Carlo timesteps), and training must go on as if
    it had not run, so ``check_val_every_n_epoch`` or ``limit_val_batches`` never changes the trained model.
    The validation loader has its own generator (``GenerativeDataModule``), since Lightning starts its
    iterator before this callback's hook."""

    def __init__(self) -> None:
        self._kept: contextlib.ExitStack | None = None

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._kept = contextlib.ExitStack()
        self._kept.enter_context(kept_rng(pl_module.device))

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._kept is not None:
            self._kept.close()
            self._kept = None


class RandomStateResumes(pl.Callback):
    """A checkpoint carries the global random state, and a run resumed from it puts that state back as its
    first epoch starts or, resumed inside an epoch (which Lightning does not start again), before its first
    batch: without it, Lightning's seeding and the model's construction left the resumed run on another
    stream, and it trained other weights than the run that was never interrupted (measured: 0.03 apart at
    most, moons, resumed at an epoch's end). The data order is the loader's
    (:class:`~genbench.data.resumable.ResumableLoader`)."""

    def __init__(self) -> None:
        self._restored: dict | None = None

    def state_dict(self) -> dict:
        return random_state()

    def load_state_dict(self, state_dict: dict) -> None:
        self._restored = state_dict

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module) -> None:
        self._put_back()

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module, batch, batch_idx: int) -> None:
        self._put_back()  # resumed inside an epoch: Lightning does not start that epoch again

    def _put_back(self) -> None:
        if self._restored is not None:
            set_random_state(self._restored)
            self._restored = None


class LoggedStepResumes(pl.Callback):
    """A run resumed from a checkpoint written at an epoch's end logged every step one higher than the run
    that was never stopped (6 to 12 where 5 to 11 were due): Lightning counts the batches that stepped,
    its loggers' step, once more on restore. At the resumed run's first batch the count is set again from
    the restored progress: the optimizer steps (one per stepping batch), or the batches done where the
    family steps its optimizers itself (no accumulation there)."""

    def __init__(self) -> None:
        self._resumed = False

    def on_train_start(self, trainer: pl.Trainer, pl_module) -> None:
        self._resumed = trainer.ckpt_path is not None

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module, batch, batch_idx: int) -> None:
        if not self._resumed:
            return
        self._resumed = False
        loop = trainer.fit_loop.epoch_loop
        loop._batches_that_stepped = (trainer.global_step if pl_module.automatic_optimization
                                      else loop.batch_progress.total.completed)


class DivergenceGuard(pl.Callback):
    """Stops training with :class:`DivergedError` once the loss is NaN or inf. A callback, not a model hook,
    so no family can lose it by overriding ``on_train_batch_end`` without calling ``super()``.

    Each step's check is read one step later (and before a checkpoint is written, and at the end of
    training): on a GPU the flag is copied to the host behind that step's kernels, so the host never waits
    for the step it just queued. A check read at once made every step wait for the GPU, which a
    hand-written loop does not. Read before a save, a NaN step's weights never replace a good checkpoint.
    """

    def __init__(self) -> None:
        self._pending: tuple[Tensor, torch.cuda.Event | None, Tensor, int, int] | None = None
        self._step = 0

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module, batch, batch_idx: int) -> None:
        self._step = trainer.global_step  # the step the loss is logged at, before the optimizer steps

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self._check(pl_module)
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if not isinstance(loss, Tensor):
            return
        loss = loss.detach()
        finite, event = torch.isfinite(loss).all(), None
        if finite.device.type == "cuda":
            finite = finite.to("cpu", non_blocking=True)  # lands once this step's kernels are done
            event = torch.cuda.Event()
            event.record()
        self._pending = (finite, event, loss, self._step, trainer.current_epoch)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module, checkpoint: dict) -> None:
        self._check(pl_module)  # raising here stops the write, and the previous checkpoint stays

    def on_train_end(self, trainer: pl.Trainer, pl_module) -> None:
        self._check(pl_module)

    def _check(self, pl_module) -> None:
        if self._pending is None:
            return
        (finite, event, loss, step, epoch), self._pending = self._pending, None
        if event is not None:
            event.synchronize()
        if not bool(finite):
            raise DivergedError(f"{pl_module.family} training loss became {loss.item()} at step {step} "
                                f"(epoch {epoch}); lower model.optimizer.lr or check the data scaling.")
