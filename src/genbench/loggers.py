"""Logger factories: W&B offline unless an API key is set, one W&B group per sweep, and pictures for every
logger (W&B image, TensorBoard image, PNG file beside the CSV)."""

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger, WandbLogger

from genbench.runmode import is_multirun


def sweep_group() -> str:
    """The sweep directory's name for a multirun job (its W&B group), ``single`` otherwise."""
    if is_multirun():
        return Path(HydraConfig.get().sweep.dir).name
    return "single"


def wandb_offline(mode: str) -> bool:
    """``auto``: offline unless WANDB_API_KEY is set, so no run ever waits for a login."""
    if mode not in ("auto", "online", "offline"):
        raise ValueError(f"logger.wandb.mode={mode!r}: use auto, online or offline")
    return mode == "offline" or (mode == "auto" and not os.environ.get("WANDB_API_KEY"))


def wandb_logger(project: str, save_dir: str, mode: str = "auto", group: str | None = None,
                 name: str | None = None, tags: list[str] | None = None, **kwargs: Any) -> WandbLogger:
    """A WandbLogger that never blocks on a login: ``mode=auto`` is online only when WANDB_API_KEY is set
    (otherwise offline; ``wandb sync <save_dir>/wandb/offline-run-*`` uploads later)."""
    offline = wandb_offline(mode)
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    logger = WandbLogger(project=project, save_dir=save_dir, offline=offline, group=group or sweep_group(),
                         name=name, tags=list(tags or []), **kwargs)
    if logger._wandb_init.get("anonymous") is None:  # Lightning passes None, which wandb >= 0.19 warns about
        logger._wandb_init.pop("anonymous", None)
    return logger


def log_image(logger: pl.loggers.Logger, key: str, image: np.ndarray, step: int, png: Path) -> None:
    """Log an (H, W, 3) uint8 picture the way ``logger`` shows pictures; ``png`` already holds it on disk."""
    if isinstance(logger, WandbLogger):
        import wandb

        logger.experiment.log({key: wandb.Image(image), "trainer/global_step": step})
    elif isinstance(logger, TensorBoardLogger):
        logger.experiment.add_image(key, image, step, dataformats="HWC")
    elif isinstance(logger, CSVLogger):
        target = Path(logger.log_dir) / key / png.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(png.read_bytes())


def finish(logger: pl.loggers.Logger) -> None:
    """End a W&B run with its job, so the next job of a multirun in this process starts its own run."""
    if isinstance(logger, WandbLogger) and logger._experiment is not None:
        logger.experiment.finish()
