"""Training cost: examples seen per second and peak memory, measured the same way for every family."""

import resource
import sys
from typing import Any

import pytorch_lightning as pl
import torch


class ExampleCounter(pl.Callback):
    """Counts the training examples the model saw (a GAN's two optimizer steps share one batch)."""

    def __init__(self) -> None:
        self.examples = 0

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        self.examples += len(batch[0])


def peak_memory(device: torch.device) -> dict[str, float | str]:
    """CUDA's max allocated bytes on a GPU; the process's peak resident set size on a CPU."""
    if device.type == "cuda":
        return {"peak_memory_mb": torch.cuda.max_memory_allocated(device) / 2**20,
                "peak_memory_kind": "cuda_max_allocated"}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return {"peak_memory_mb": rss / (2**20 if sys.platform == "darwin" else 2**10),
            "peak_memory_kind": "process_max_rss"}
