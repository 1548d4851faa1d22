"""What the evaluation-only scripts start from: a trained checkpoint, with its run's configs and data.

``scripts/nfe_sweep.py`` and ``scripts/bench_likelihood_grid.py`` take train.py's overrides of the training
run (``ckpt_path=... model=... dataset=...``) and need the same three things from them, loaded the same way:
the checkpoint's model on the GPU if there is one (``weights_only=True``, as every checkpoint loads), the
dataset set up for testing, and the composed config.
"""

from dataclasses import dataclass
from pathlib import Path

import hydra
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from genbench.config import validate
from genbench.data.base import GenerativeDataModule
from genbench.errors import ConfigError
from genbench.models.base import GenerativeModel


@dataclass
class Trained:
    cfg: DictConfig
    dm: GenerativeDataModule
    model: GenerativeModel
    device: torch.device
    ckpt: Path


def load_trained(config_dir: Path, overrides: list[str]) -> Trained:
    """train.py's config composed with ``overrides`` and checked as a run's is; its ``ckpt_path`` loaded
    in eval mode; its dataset set up for testing. ConfigError names a missing checkpoint."""
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    validate(cfg)
    if not cfg.ckpt_path:
        raise ConfigError("no checkpoint: pass ckpt_path=<run>/checkpoints/last.ckpt")
    ckpt = Path(cfg.ckpt_path)
    if not ckpt.is_file():
        raise ConfigError(f"ckpt_path={ckpt}: no such file")
    if cfg.get("torch_threads"):
        torch.set_num_threads(cfg.torch_threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dm: GenerativeDataModule = hydra.utils.instantiate(cfg.dataset, _convert_="all")
    dm.setup("test")
    model = hydra.utils.get_class(cfg.model._target_).load_from_checkpoint(
        ckpt, map_location=device, weights_only=True).eval()
    return Trained(cfg, dm, model, device, ckpt)
