"""Exponential moving averages of a network's weights, shared by every family that samples from one (the
GAN's generator, the diffusion network): one copy routine, one foreach update, and a mark so the copy is
never counted as capacity."""

import copy

import torch
from torch import nn

_MARK = "_genbench_ema_copy"


def ema_copy(module: nn.Module) -> nn.Module:
    """A frozen copy of ``module`` to average into; :func:`is_ema_copy` tells it from trained weights."""
    ema = copy.deepcopy(module).requires_grad_(False)
    setattr(ema, _MARK, True)
    return ema


def is_ema_copy(module: nn.Module) -> bool:
    return getattr(module, _MARK, False)


def warmup_decay(decay: float, step: int) -> float:
    """``min(decay, (1 + step) / (10 + step))``: a short memory while the weights still move fast."""
    return min(decay, (1 + step) / (10 + step))


@torch.no_grad()
def ema_update(ema: nn.Module, source: nn.Module, decay: float) -> None:
    """``ema <- decay * ema + (1 - decay) * source`` for every parameter in one foreach call (one kernel
    launch per group on a GPU, not one per tensor); buffers (batch-norm statistics) are copied as they are."""
    torch._foreach_lerp_(list(ema.parameters()), list(source.parameters()), 1 - decay)
    for average, buffer in zip(ema.buffers(), source.buffers(), strict=True):
        average.copy_(buffer)
