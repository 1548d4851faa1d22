"""Shared test utilities: composing the real configs in-process."""

from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = str(ROOT / "configs")
DATASETS = sorted(p.stem for p in (ROOT / "configs" / "dataset").glob("*.yaml"))
FAMILIES = sorted(p.stem for p in (ROOT / "configs" / "model").glob("*.yaml"))
FILE_DATASETS = ("mnist", "fashion_mnist", "cifar10")


def compose_train(overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=overrides)
