"""genbench's learning-rate schedule: a linear warm-up, then a cosine decay to 0 at the run's ``max_steps``
(or a constant rate). A family takes it through its ``model.scheduler`` node (:mod:`genbench.models.optim`);
without a decay, Adam's last steps at full rate can leave a narrow mode off its data (the flow's mode drop,
issue 10)."""

import math
from typing import Any

import torch

DECAYS = ("cosine", "none")


def warmup_cosine(optimizer: torch.optim.Optimizer, max_steps: int, warmup_steps: int = 0,
                  decay: str = "cosine") -> torch.optim.lr_scheduler.LambdaLR:
    """The rate times (step + 1) / warmup_steps during the warm-up, then times a cosine from 1 to 0 at
    ``max_steps`` (``decay="cosine"``) or 1 (``"none"``)."""
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps={warmup_steps} must be >= 0")
    if decay not in DECAYS:
        raise ValueError(f"decay={decay!r} must be one of {list(DECAYS)}")
    decaying = decay == "cosine" and max_steps > warmup_steps

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if not decaying:
            return 1.0
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup_steps) / (max_steps - warmup_steps))))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def warmup_cosine_node(warmup_steps: int = 0, decay: str = "cosine") -> dict[str, Any]:
    """The ``model.scheduler`` node of :func:`warmup_cosine`."""
    return {"_target_": f"{__name__}.warmup_cosine", "_partial_": True, "warmup_steps": warmup_steps,
            "decay": decay}
