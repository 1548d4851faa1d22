"""The training's random stream, kept whole. What watches a run (validation, sample pictures, the quality
curve) draws its randomness from a fork of the global random state, which is put back when it ends:
without this, a run with pictures or validation on trained differently from the same run with them off
(different data order, different noise), so a benchmark's numbers depended on how it was watched. And a
resumed run continues the stream its checkpoint left (:func:`random_state`), as the run that was not
interrupted does."""

import contextlib
import random
from typing import Any

import numpy as np
import torch


def kept_rng(device: torch.device) -> contextlib.AbstractContextManager:
    """The global random state (CPU, and ``device``'s when it is a GPU) as it was, once the block ends."""
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])


def normal_like(x: torch.Tensor) -> torch.Tensor:
    """N(0, 1) noise of ``x``'s shape, dtype and device, drawn in the shape's order: ``torch.randn_like``
    of a channels_last tensor draws other numbers from the same seed, so a run with that switch on was
    another random run, and its evaluation's samples differed from ``eval.py``'s of the same weights."""
    return torch.randn(x.shape, dtype=x.dtype, device=x.device)


def uniform_like(x: torch.Tensor) -> torch.Tensor:
    """U[0, 1) noise of ``x``'s shape, dtype and device, in the shape's order (:func:`normal_like`)."""
    return torch.rand(x.shape, dtype=x.dtype, device=x.device)


def random_state() -> dict[str, Any]:
    """The global random states (torch's CPU and CUDA generators, NumPy's, Python's) as tensors, lists and
    ints: what a checkpoint loaded with ``weights_only=True`` can hold."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
            "python": [version, list(internal), gauss_next]}


def set_random_state(state: dict[str, Any]) -> None:
    """Put back what :func:`random_state` returned (CUDA's where this machine has as many GPUs)."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
