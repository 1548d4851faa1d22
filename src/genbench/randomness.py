"""Evaluating during training without changing it: what watches a run (validation, sample pictures, the
quality curve) draws its randomness from a fork of the global random state, which is put back when it
ends. Without this, a run with pictures or validation on trained differently from the same run with them
off (different data order, different noise), so a benchmark's numbers depended on how it was watched."""

import contextlib

import torch


def kept_rng(device: torch.device) -> contextlib.AbstractContextManager:
    """The global random state (CPU, and ``device``'s when it is a GPU) as it was, once the block ends."""
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])
