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


MIN_REPEATS = 3  # timed calls a median and its spread come from, however long one takes


@torch.no_grad()
def sampling_speed(model: GenerativeModel, batch_size: int, repeats: int, warmup: int,
                   max_seconds: float | None = None) -> dict:
    """Time ``model.sample(batch_size)``; report median ms per batch and per sample and their spread.

    ``warmup`` untimed calls, then ``repeats`` timed ones, or fewer (never under 3, pytest-benchmark's
    ``max_time`` with ``min_rounds``) once the timed calls have taken ``max_seconds``: a slow sampler on a
    CPU otherwise spends more on its timing than on its quality metrics' samples. The warm-up stops too
    once it has taken ``max_seconds``, after one call: a call that long has paid its one-time costs."""
    started = time.perf_counter()
    for i in range(warmup):
        if max_seconds is not None and i >= 1 and time.perf_counter() - started >= max_seconds:
            break
        model.sample(batch_size)
    synchronize(model.device)
    times_ms: list[float] = []
    for _ in range(repeats):
        if max_seconds is not None and len(times_ms) >= MIN_REPEATS and sum(times_ms) >= 1000 * max_seconds:
            break
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
        "sample_repeats": len(times_ms),
        "sample_device": str(model.device),
        "sample_device_name": device_name(model.device),
        "sample_torch_threads": torch.get_num_threads(),  # host threads: they matter on a CPU
    }
