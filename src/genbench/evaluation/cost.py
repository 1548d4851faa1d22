"""Training cost: examples seen per second and peak memory, measured the same way for every family."""

import resource
import sys
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch


class ExampleCounter(pl.Callback):
    """Counts the training examples the model saw, in all processes (a GAN's two optimizer steps share one
    batch), and the seconds of training: from :meth:`start` (just before ``Trainer.fit``), less the time
    spent watching it (:meth:`not_training`: the quality curve's evaluations).

    Both totals travel in the checkpoint (a callback's ``state_dict``), so a run resumed from a checkpoint,
    with any number of processes, reports the cost of the model's whole training, not of its last part.
    """

    def __init__(self) -> None:
        self.examples = 0  # in all processes
        self.previous_seconds = 0.0  # training time of the runs this one resumed
        self._per_process: int | None = None  # from a checkpoint that counted one process's examples
        self.start()

    def start(self) -> None:
        self._started, self._watching = time.perf_counter(), 0.0

    def not_training(self, seconds: float) -> None:
        """Leave ``seconds`` spent in the training loop on something else out of the training's time."""
        self._watching += seconds

    @property
    def seconds(self) -> float:
        """Seconds of training so far, including the runs this one resumed."""
        return self.previous_seconds + time.perf_counter() - self._started - self._watching

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._per_process is not None:  # as the old counter read it: as many processes as now
            self.examples, self._per_process = self._per_process * trainer.world_size, None

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        # DDP: each process counts its own shard; DistributedSampler gives every rank as many examples.
        self.examples += len(batch[0]) * trainer.world_size

    def state_dict(self) -> dict[str, Any]:
        return {"examples_all_processes": self.examples, "train_seconds": self.seconds}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "examples_all_processes" in state_dict:
            self.examples = int(state_dict["examples_all_processes"])
        else:
            self._per_process = int(state_dict["examples"])
        self.previous_seconds = float(state_dict["train_seconds"])


CLEAR_REFS = Path("/proc/self/clear_refs")  # Linux: writing "5" resets the process's peak resident set size


def reset_peak_memory() -> bool:
    """Start every peak at this run: a sweep's jobs share one process (Hydra's basic launcher, joblib's
    workers), and each would report the largest peak of the jobs before it. False where the process's
    peak resident set size cannot be reset (not Linux): it is then the process's lifetime peak. Every
    visible GPU's peak is reset, not only the current one: a run may train or evaluate on another
    (``eval.device=cuda:1``). Nothing is reset before CUDA's first use in this process: nothing was
    allocated, and torch refuses ("Invalid device argument")."""
    for index in range(torch.cuda.device_count() if torch.cuda.is_initialized() else 0):
        torch.cuda.reset_peak_memory_stats(index)
    try:
        CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def peak_memory(device: torch.device, since_reset: bool) -> dict[str, float | str]:
    """CUDA's max allocated bytes on a GPU; the process's peak resident set size on a CPU, since
    :func:`reset_peak_memory` (``since_reset``) or over the process's life."""
    if device.type == "cuda":
        return {"peak_memory_mb": torch.cuda.max_memory_allocated(device) / 2**20,
                "peak_memory_kind": "cuda_max_allocated"}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return {"peak_memory_mb": rss / (2**20 if sys.platform == "darwin" else 2**10),
            "peak_memory_kind": "process_max_rss" if since_reset else "process_lifetime_max_rss"}
