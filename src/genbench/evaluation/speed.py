"""Sampling latency: median over timed repeats after warm-up, with the device synchronized."""

import statistics
import time

import torch

from genbench.evaluation.device import device_name
from genbench.models.base import GenerativeModel


def synchronize(device: torch.device) -> None:
    """Wait for ``device`` to finish its queued work (a CPU has none): a timer read after it is true."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":  # Apple's GPU, which accelerator=auto picks on a Mac
        torch.mps.synchronize()


@torch.no_grad()
def sampling_speed(model: GenerativeModel, batch_size: int, repeats: int, warmup: int) -> dict:
    """Time ``model.sample(batch_size)``; report median ms per batch and per sample and their spread."""
    for _ in range(warmup):
        model.sample(batch_size)
    synchronize(model.device)
    times_ms = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.sample(batch_size)
        synchronize(model.device)
        times_ms.append(1000 * (time.perf_counter() - start))
    median = statistics.median(times_ms)
    return {
        "sample_ms_per_batch": median,
        "sample_ms_per_sample": median / batch_size,
        "sample_ms_per_batch_min": min(times_ms),
        "sample_ms_per_batch_max": max(times_ms),
        "sample_batch_size": batch_size,
        "sample_repeats": repeats,
        "sample_device": str(model.device),
        "sample_device_name": device_name(model.device),
        "sample_torch_threads": torch.get_num_threads(),  # host threads: they matter on a CPU
    }
