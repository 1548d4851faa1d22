"""Faults (and probes) a test injects into a run of train.py through its config
(``+callbacks.<name>._target_=tests.faults.<Fault>``): train.py's directory is on its processes' path."""

import errno
import io
import multiprocessing
import os
import signal
import time

import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig


class RankDies(pl.Callback):
    """At ``step``, the process of ``rank`` exits with ``code`` (or, with ``raises``, raises an error) while
    rank zero is busy for ``busy_seconds`` on work of its own (as drawing sample pictures), away from any
    collective."""

    def __init__(self, step: int = 5, rank: int = 1, code: int = 3, raises: bool = False,
                 busy_seconds: float = 20.0) -> None:
        self.step, self.rank, self.code, self.raises = step, rank, code, raises
        self.busy_seconds = busy_seconds

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if trainer.global_step != self.step:
            return
        if trainer.global_rank == self.rank:
            if self.raises:
                raise RuntimeError(f"injected failure of rank {self.rank}")
            os._exit(self.code)
        if trainer.global_rank == 0:
            time.sleep(self.busy_seconds)


class DiesBeforeRendezvous(pl.Callback):
    """The process of local rank ``rank`` exits with ``code`` as its callbacks are made, before the
    processes' rendezvous, where rank zero then waits for it."""

    def __init__(self, rank: int = 1, code: int = 3) -> None:
        if int(os.environ.get("LOCAL_RANK", "0")) == rank:
            os._exit(code)


class InterruptsOnce(pl.Callback):
    """A Ctrl-C at ``step`` of a run of ``family`` (or of the sweep's job number ``job``), the first time
    only (``marker``, a file, remembers it): a sweep stopped in one job, which the same sweep run again
    finds interrupted."""

    def __init__(self, marker: str, family: str | None = None, job: int | None = None,
                 step: int = 12) -> None:
        self.marker, self.family, self.job, self.step = marker, family, job, step

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if (trainer.global_step == self.step and not os.path.exists(self.marker)
                and self.family in (None, pl_module.family)
                and self.job in (None, HydraConfig.get().job.num)):
            open(self.marker, "w").close()
            os.kill(os.getpid(), signal.SIGINT)


class RaisesInTraining(pl.Callback):
    """At ``step``, raise ``kind``: ``disk_full`` (an OSError as a checkpoint or a log write on a full disk
    raises it) or ``bug`` (a RuntimeError, as a family's own code would)."""

    def __init__(self, kind: str, step: int = 3) -> None:
        self.kind, self.step = kind, step

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if trainer.global_step == self.step:
            if self.kind == "disk_full":
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "checkpoints/last.ckpt")
            raise RuntimeError("a bug in the family's training step")


class KillsLoaderWorker(pl.Callback):
    """At ``step``, kill one of the processes of the run's data loaders with SIGKILL, as the kernel's
    out-of-memory killer does: torch raises the news in the main process at its next fetch."""

    def __init__(self, step: int = 3) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if trainer.global_step == self.step:
            workers = multiprocessing.active_children()
            assert workers, "no data loader process to kill: give the run dataset.num_workers >= 1"
            os.kill(workers[0].pid, signal.SIGKILL)


class SavesReplica(pl.Callback):
    """Not a fault, a probe: each DDP process saves its replica's weights when training ends
    (``<directory>/replica_<rank>.pt``), so a test can check that the processes trained one model."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def on_train_end(self, trainer: pl.Trainer, pl_module) -> None:
        torch.save(pl_module.state_dict(), os.path.join(self.directory, f"replica_{trainer.global_rank}.pt"))


class FullDisk(io.RawIOBase):
    """A file on a disk with ``room`` bytes left: a write past them raises OSError(ENOSPC) with no file name,
    as the kernel's does. ``opened(path, mode)`` stands in for ``open``."""

    def __init__(self, room: int = 1024) -> None:
        self.room = room

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return len(data)

    @classmethod
    def opened(cls, path, mode: str = "r", *args, **kwargs) -> "FullDisk":
        assert "w" in mode, f"a full disk is only written to, not opened with {mode!r}"
        return cls()
