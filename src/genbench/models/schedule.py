"""The learning-rate schedule families share: a linear warm-up, then a cosine decay to 0 at the trainer's
``max_steps`` (or a constant rate). A family takes it by extending :class:`ScheduleConfig`; without a decay,
Adam's last steps at full rate can leave a narrow mode off its data (the flow's mode drop, issue 10)."""

import math
from dataclasses import dataclass
from typing import Any

import torch

from genbench.schema import Schema, param


@dataclass
class ScheduleConfig(Schema):
    warmup_steps: int = param(0, ge=0)  # linear learning-rate warm-up, in optimizer steps
    lr_decay: str = param("cosine", choices=["cosine", "none"])  # after the warm-up: to 0 at max_steps


def scheduled(optimizer: torch.optim.Optimizer, hp: ScheduleConfig, max_steps: int) -> Any:
    """``optimizer`` with the schedule of ``hp`` over ``max_steps`` (Lightning's optimizer config), or the
    optimizer alone where the rate stays constant."""
    warmup = hp.warmup_steps
    decay = hp.lr_decay == "cosine" and max_steps > warmup
    if not warmup and not decay:
        return optimizer

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if not decay:
            return 1.0
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / (max_steps - warmup))))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
