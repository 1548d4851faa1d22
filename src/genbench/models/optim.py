"""Optimizers and learning-rate schedules from config, as lightning-hydra-template builds them.

A family's ``model.optimizer`` is a Hydra node with ``_partial_: true`` that names any optimizer class
(``torch.optim.Adam`` by default) and its options; ``model.scheduler`` is null or such a node naming a
schedule (:func:`genbench.models.schedule.warmup_cosine`, or one of ``torch.optim.lr_scheduler``'s). The
model builds both in ``configure_optimizers`` (its YAML sets ``_recursive_: false``), so a checkpoint's
hyperparameters stay plain data that loads with ``weights_only=True``. Schedules step once per optimizer
step; one with a ``max_steps`` parameter is given the run's.

:func:`check_optimizer` and :func:`check_scheduler` are the schema's checks of these nodes: they build
each once on a dummy parameter, so a misspelt class, an option the class lacks or a value it rejects
(a negative ``lr``) stops the run before anything is built.
"""

import inspect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import hydra.utils
import torch

from genbench.schema import NOT_FINITE, Schema, finite, param


def adam_node(**options: Any) -> dict[str, Any]:
    """The ``model.optimizer`` node of Adam with ``options``."""
    return {"_target_": "torch.optim.Adam", "_partial_": True, **options}


def optimizer_param(**options: Any) -> Any:
    """A schema field holding an optimizer node: Adam with ``options`` by default."""
    return param(adam_node(**options), check=check_optimizer)


def scheduler_param(node: dict[str, Any] | None = None) -> Any:
    """A schema field holding a learning-rate schedule node, null (a constant rate) by default."""
    return param(node, check=check_scheduler)


def _factory(node: Mapping[str, Any]) -> Any:
    return hydra.utils.instantiate(dict(node), _convert_="all")


def _accepts(target: Any, name: str) -> bool:
    parameters = inspect.signature(target).parameters
    return name in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())


def _node_problem(node: Any) -> str | None:
    if not isinstance(node, Mapping) or "_target_" not in node:
        return "must be a node with _target_ (the class to build) and _partial_: true"
    if node.get("_partial_") is not True:
        return "needs _partial_: true (the model passes its parameters or optimizer when it builds it)"
    try:
        target = hydra.utils.get_object(node["_target_"])
    except Exception as e:  # hydra wraps import errors in its own types
        return f"_target_={node['_target_']!r} cannot be imported: {e}"
    not_finite = [f"{k}={v}" for k, v in node.items() if not finite(v)]
    if not_finite:
        return f"{', '.join(not_finite)}: {NOT_FINITE}"
    unknown = [k for k in node if not k.startswith("_") and not _accepts(target, k)]
    if unknown:
        return (f"{node['_target_']} takes no option {', '.join(map(repr, unknown))}; remove it (on the "
                f"command line: ~{{key}}.{unknown[0]}) or choose a class that has it")
    return None


def check_optimizer(node: Any) -> str | None:
    """None when ``node`` builds an optimizer, else what is wrong with it."""
    problem = _node_problem(node)
    if problem:
        return problem
    try:
        optimizer = build_optimizer(node, [torch.zeros(1, requires_grad=True)])
    except Exception as e:  # the class's own complaint about a value (torch raises ValueError, TypeError)
        return f"{node['_target_']} rejects its options: {e}"
    if not isinstance(optimizer, torch.optim.Optimizer):
        return f"{node['_target_']} is not a torch.optim.Optimizer"
    return None


def check_scheduler(node: Any) -> str | None:
    """None when ``node`` is null or builds a learning-rate schedule, else what is wrong with it."""
    if node is None:
        return None
    problem = _node_problem(node)
    if problem:
        return problem
    try:
        build_scheduler(node, torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0), max_steps=10)
    except Exception as e:
        return f"{node['_target_']} rejects its options: {e}"
    return None


def build_optimizer(node: Mapping[str, Any], params: Iterable[Any], fused: bool = False,
                    **overrides: Any) -> torch.optim.Optimizer:
    """The optimizer of ``node`` over ``params``: ``overrides`` replace its options (the GAN's ``lr_d``);
    ``fused`` asks for the one-kernel CUDA implementation where the class has one and the node chose no
    implementation of its own (``fused``, ``foreach`` or ``differentiable``, which wins)."""
    factory = _factory(node)
    given = {k for k, v in factory.keywords.items() if v is not None}
    chosen = {"fused", "foreach", "differentiable"} & given
    if fused and _accepts(factory.func, "fused") and not chosen:
        overrides["fused"] = True
    return factory(params, **overrides)


IMPLEMENTATION = ("fused", "foreach", "capturable")  # the options that choose how a torch optimizer steps


def restore_implementation(optimizer: torch.optim.Optimizer) -> bool:
    """Give ``optimizer``'s groups back the implementation it was built with. ``load_state_dict`` replaces
    every group option with the checkpoint's, ``fused`` and ``foreach`` included, so a resumed run stepped
    as the run that saved it did, whatever ``performance.fused_optimizer`` or device it resumed with. Step
    counts go where that implementation keeps them, as torch's own loading does: a float32 tensor on the
    parameter's device when fused or capturable, else on the CPU (a step count left on a GPU makes the
    foreach Adam read it back, a wait for the device, in every step). True where anything changed."""
    built = {k: optimizer.defaults[k] for k in IMPLEMENTATION if k in optimizer.defaults}
    changed = False
    for group in optimizer.param_groups:
        if all(group.get(k) == v for k, v in built.items()):
            continue
        group.update(built)
        changed = True
        on_device = bool(group.get("fused") or group.get("capturable"))
        for p in group["params"]:
            step = optimizer.state.get(p, {}).get("step")
            if isinstance(step, torch.Tensor):
                device = p.device if on_device else torch.device("cpu")
                optimizer.state[p]["step"] = step.to(device, torch.float32 if on_device else step.dtype)
    return changed


def build_scheduler(node: Mapping[str, Any], optimizer: torch.optim.Optimizer,
                    max_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    factory = _factory(node)
    if _accepts(factory.func, "max_steps"):
        return factory(optimizer, max_steps=max_steps)
    return factory(optimizer)


@dataclass
class OptimizationConfig(Schema):
    """How every family trains; its config schema extends this one (and may change these defaults)."""

    optimizer: dict[str, Any] = optimizer_param(lr=1e-3, weight_decay=0.0)  # any torch.optim class, options
    scheduler: dict[str, Any] | None = scheduler_param()  # null: a constant rate
