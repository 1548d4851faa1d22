"""``torch.compile`` of a family's networks for its training steps only (the ``performance.compile``
switch), and the one way for a family to keep a call eager inside them."""

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import _get_current_dispatch_mode  # in every torch pyproject allows

_EAGER: ContextVar[bool] = ContextVar("genbench_eager_networks", default=False)


@contextmanager
def eager() -> Iterator[None]:
    """Compiled networks run eager inside: for a call that is differentiated twice (WGAN-GP's gradient
    penalty), which torch.compile's autograd does not support."""
    token = _EAGER.set(True)
    try:
        yield
    finally:
        _EAGER.reset(token)


def trained_networks(module: nn.Module) -> Iterator[nn.Module]:
    """The networks a family's training steps call: its children with trained parameters, and the members of
    its ModuleLists and ModuleDicts (a flow's layers; a container is never called itself). Not an EMA copy
    (frozen: never trained) nor a module without parameters (a noise schedule)."""
    for child in module.children():
        if not any(p.requires_grad for p in child.parameters()):
            continue
        if isinstance(child, (nn.ModuleList, nn.ModuleDict)):
            yield from trained_networks(child)
        else:
            yield child


class CompiledForTraining:
    """A network's calls in training (train mode, gradients on, not :func:`eager`) through ``torch.compile``;
    every other call (validation, a likelihood, sampling) eager, as without the switch.

    Compiling every call recompiled the network for each of validation's batch shapes, for no_grad and for
    the sampler's batches, and dynamo's automatic dynamic shapes then compiled the training step itself for
    any batch size (generic kernels); measured on the CPU, a diffusion run compiled its U-Net 5 times before
    its second training step. Here shapes are static (``dynamic=False``): an epoch's last, smaller batch gets
    its own graph. Set as the module's ``_compiled_call_impl``, where ``nn.Module.compile`` puts its own, so
    parameter names, EMA copies and checkpoints stay as they are.

    A call under a torch dispatch mode (the FLOP counter of the first training batch,
    :class:`~genbench.evaluation.compute.TrainingFlops`) runs eager too: dynamo does not compile under
    one, and torch before the fix of pytorch/pytorch#190286 then marked the code it skipped,
    ``nn.Module._call_impl`` that every network runs, as never to be compiled: the likely reason why a
    compiled run on the H100 (torch 2.11) trained at eager speed with no pause to compile, while its
    record said compile."""

    def __init__(self, module: nn.Module, mode: str) -> None:
        self.module = module
        self.compiled = torch.compile(module._call_impl, mode=mode, dynamic=False)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if (self.module.training and torch.is_grad_enabled() and not _EAGER.get()
                and _get_current_dispatch_mode() is None):
            return self.compiled(*args, **kwargs)
        return self.module._call_impl(*args, **kwargs)


GRAPHS_PER_NETWORK = 4  # a full and a last, smaller batch, each maybe before and after a data-dependent init


def compile_for_training(model: nn.Module, mode: str) -> list[nn.Module]:
    """Every network the training steps of ``model`` call, compiled for those steps (returned).

    Every network compiles the same code (``nn.Module._call_impl``), and dynamo keeps at most
    ``recompile_limit`` (8) graphs of one code, then runs the rest eager with a log line: a flow's layers of
    many shapes ran partly eager while the record said compile. The limit grows with the networks.

    Dynamo's caches start empty, as in a new process: a run after another in the same process (a sweep's
    jobs under Hydra's basic launcher) reused the earlier run's graphs, compiled none of its own, and its
    record then said it trained eager (:func:`graphs_compiled`); a code torch had marked never to compile
    stayed marked, too."""
    torch._dynamo.reset()
    networks = list(trained_networks(model))
    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"  # torch < 2.7
    setattr(config, name, max(getattr(config, name), GRAPHS_PER_NETWORK * len(networks)))
    for network in networks:
        network._compiled_call_impl = CompiledForTraining(network, mode)
    return networks


def graphs_compiled() -> int:
    """How many graphs dynamo has compiled in this process: a run that compiled none trained eager."""
    from torch._dynamo.utils import counters  # dynamo only where compile is on: its import is slow

    return counters["stats"]["unique_graphs"]
