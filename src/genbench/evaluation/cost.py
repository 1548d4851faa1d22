"""Training cost: examples seen per second and peak memory, measured the same way for every family."""

import resource
import sys
import time
from typing import Any

import pytorch_lightning as pl
import torch


class ExampleCounter(pl.Callback):
    """Counts the training examples the model saw (a GAN's two optimizer steps share one batch) and, across
    resumes, the seconds of ``Trainer.fit`` before this one.

    Both totals travel in the checkpoint (a callback's ``state_dict``), so a run resumed from a checkpoint
    reports the cost of the model's whole training, not of its last part.
    """

    def __init__(self) -> None:
        self.examples = 0
        self.previous_seconds = 0.0  # training time of the runs this one resumed
        self._fit_started = time.perf_counter()

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._fit_started = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        self.examples += len(batch[0])

    def state_dict(self) -> dict[str, Any]:
        return {"examples": self.examples,
                "train_seconds": self.previous_seconds + time.perf_counter() - self._fit_started}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.examples = int(state_dict["examples"])
        self.previous_seconds = float(state_dict["train_seconds"])


def peak_memory(device: torch.device) -> dict[str, float | str]:
    """CUDA's max allocated bytes on a GPU; the process's peak resident set size on a CPU."""
    if device.type == "cuda":
        return {"peak_memory_mb": torch.cuda.max_memory_allocated(device) / 2**20,
                "peak_memory_kind": "cuda_max_allocated"}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return {"peak_memory_mb": rss / (2**20 if sys.platform == "darwin" else 2**10),
            "peak_memory_kind": "process_max_rss"}
