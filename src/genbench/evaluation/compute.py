"""Training compute in a family-neutral unit: floating-point operations, counted, not estimated.

:class:`TrainingFlops` runs ``torch.utils.flop_counter.FlopCounterMode`` over the first training cycle
(``GenerativeModel.training_cycle``: one batch, or a GAN's ``n_critic`` critic batches with the generator's
step on the last; forward, backward and whatever else the family's ``training_step`` does: an EBM's
Langevin chains, a diffusion model's noising), and divides by the cycle's examples. The run's training
FLOPs are that times the examples it saw (:func:`training_flops`), so a resumed or DDP run counts the
same way as :class:`~genbench.evaluation.cost.ExampleCounter` counts examples. FlopCounterMode counts
matrix products and convolutions (the operations that dominate); element-wise work is not counted.
"""

from typing import Any

import pytorch_lightning as pl
from torch.utils.flop_counter import FlopCounterMode


class _TotalOnly:
    """Stands in for FlopCounterMode's ModuleTracker, which attributes FLOPs to modules through backward
    hooks that break ``torch.autograd.grad`` on leaf tensors (an EBM's Langevin steps). Only the total
    is needed, which FlopCounterMode keeps under "Global"."""

    parents = frozenset({"Global"})

    def __enter__(self) -> "_TotalOnly":
        return self

    def __exit__(self, *args: object) -> None:
        return None


def flop_counter() -> FlopCounterMode:
    """A FlopCounterMode that counts the total only, and works through ``torch.autograd.grad``."""
    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _TotalOnly()
    return counter


class TrainingFlops(pl.Callback):
    """FLOPs per training example, measured on the first training cycle of the model's training (kept in
    the checkpoint, so a resumed run has it even with nothing left to train)."""

    def __init__(self) -> None:
        self.per_example: float | None = None
        self._counter: FlopCounterMode | None = None
        self._flops = self._examples = 0
        self._batches_left: int | None = None  # of the cycle being counted; None: not started

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self.per_example is not None:
            return
        if self._batches_left is None:
            self._flops, self._examples, self._batches_left = 0, 0, pl_module.training_cycle()
        self._examples += len(batch[0])
        self._counter = flop_counter()  # around this batch alone: the hooks between batches are not training
        self._counter.__enter__()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        if self._counter is None:
            return
        self._flops += self._stop()
        self._batches_left -= 1
        if not self._batches_left:
            self.per_example = self._flops / self._examples

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._counter is not None:  # never leave the dispatch mode on (training ended inside a batch)
            self._stop()

    def state_dict(self) -> dict[str, Any]:
        return {} if self.per_example is None else {"per_example": self.per_example}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.per_example = state_dict.get("per_example")

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                     exception: BaseException) -> None:
        if self._counter is not None:  # never leave the dispatch mode on after a failed first step
            self._stop()

    def _stop(self) -> int:
        counter, self._counter = self._counter, None
        counter.__exit__(None, None, None)
        return counter.get_total_flops()


def training_flops(trainer: pl.Trainer, examples: int) -> dict[str, float]:
    """``train_flops_per_example`` and ``train_flops`` (per example x examples seen), when the trainer's
    :class:`TrainingFlops` measured them."""
    flops = next((c for c in trainer.callbacks if isinstance(c, TrainingFlops)), None)
    if flops is None or flops.per_example is None:
        return {}
    return {"train_flops_per_example": flops.per_example, "train_flops": flops.per_example * examples}
