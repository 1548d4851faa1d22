"""Where a run failed: setup, training or evaluation, written into its record as ``provenance.failed_in``.

The matrix counts only crashes in training (and divergence) against a family's stability: a missing
dataset, a corrupt checkpoint to resume from, a GPU out of memory while sampling 10,000 images, or a disk
that filled up while training (``machine``) says nothing of how the family trains. Lightning prepares the
data and the model inside ``Trainer.fit``, so training counts as started only once its sanity check or
first epoch begins (:class:`TrainingStarted`).
"""

import contextlib
from collections.abc import Callable, Iterator

import pytorch_lightning as pl
import torch

STAGE_ATTRIBUTE = "genbench_stage"  # set on an exception: the stage of the run that raised it
SETUP = "setup"
TRAINING = "training"
EVALUATION = "evaluation"
MACHINE = "machine"
MACHINE_ERRORS = (OSError, MemoryError, torch.OutOfMemoryError)
_ACTIVE: list[tuple[str, Callable[[], bool]]] = []  # the stages the run is in, innermost last


@contextlib.contextmanager
def stage(name: str, started: Callable[[], bool] = lambda: True) -> Iterator[None]:
    """Mark an exception raised inside as raised in stage ``name``, or in setup while ``started()`` is
    false; an exception marked by an inner stage keeps its mark."""
    _ACTIVE.append((name, started))
    try:
        yield
    except BaseException as e:
        if not hasattr(e, STAGE_ATTRIBUTE):
            with contextlib.suppress(AttributeError):  # a type whose __setattr__ refuses: left unmarked
                setattr(e, STAGE_ATTRIBUTE, name if started() else SETUP)
        raise
    finally:
        _ACTIVE.pop()


def current_stage() -> str:
    """The stage the run is in now, as :func:`failed_in` would name an error raised there: for another
    thread that records a run whose main thread cannot (the watcher of a DDP run's processes)."""
    if not _ACTIVE:
        return SETUP
    name, started = _ACTIVE[-1]
    return name if started() else SETUP


def failed_in(error: BaseException) -> str:
    """The stage ``error`` was raised in; setup when no stage marked it (before training began); the
    machine for an error of its limits raised in training (a disk full or an I/O error writing a
    checkpoint or a log, memory or GPU memory exhausted, a process loading the data killed), which says
    nothing of how the family trains."""
    where = getattr(error, STAGE_ATTRIBUTE, SETUP)
    of_machine = isinstance(error, MACHINE_ERRORS) or dead_loader_worker(error)
    return MACHINE if where == TRAINING and of_machine else where


def dead_loader_worker(error: BaseException) -> bool:
    """Whether ``error`` is torch's news that a DataLoader worker process died (killed by a signal, most
    often the kernel's out-of-memory killer, or exited), which has no type of its own: the RuntimeError
    "DataLoader worker (pid ...) ..." that torch raises in the main process wherever it is, or, where the
    worker was not yet reaped, the broken connection (ConnectionResetError, EOFError ...) out of the
    loader's read of its queue. An exception in a worker's own code is raised again as itself, elsewhere."""
    if isinstance(error, RuntimeError) and str(error).startswith("DataLoader worker (pid"):
        return True
    return isinstance(error, OSError | EOFError) and _raised_through(error, "_try_get_data",
                                                                     "torch/utils/data/dataloader.py")


def _raised_through(error: BaseException, function: str, path_end: str) -> bool:
    """Whether ``error``'s traceback passes through ``function`` of a file whose path ends in ``path_end``."""
    tb = error.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_name == function and code.co_filename.endswith(path_end):
            return True
        tb = tb.tb_next
    return False


class TrainingStarted(pl.Callback):
    """Whether Lightning got past its setup (the data, the model, the callbacks' own setup) into the
    sanity check or the first training epoch."""

    def __init__(self) -> None:
        self.started = False

    def on_sanity_check_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.started = True

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.started = True
