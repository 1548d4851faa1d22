"""Train an image dataset's classifier feature net: ``python scripts/train_feature_net.py dataset=<name>``.

Writes ``<paths.feature_net_dir>/<dataset>_cnn.pt`` and its ``.json`` record (or ``out_path=``), which the
evaluation stage loads for its Fréchet distance, classifier score and class coverage.
"""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from genbench.config import refuse_chdir
from genbench.data.base import GenerativeDataModule
from genbench.errors import ConfigError
from genbench.evaluation.feature_net import (
    FeatureNetSchema,
    feature_net_path,
    save_feature_net,
    train_feature_net,
)
from genbench.schema import check_top_level, validate_group
from genbench.train import instantiate
from genbench.trained_run import one_line_errors


@hydra.main(version_base="1.3", config_path="../configs", config_name="feature_net")
def main(cfg: DictConfig) -> None:
    with one_line_errors():
        train(cfg)


def validate(cfg: DictConfig) -> Path | None:
    """Check the options before anything trains (an unknown key, epochs=0, a path that cannot be written
    had failed with a traceback, the last after the training); returns the ``out_path`` to write, or None
    for the default path, which the dataset names."""
    refuse_chdir()
    check_top_level(cfg, FeatureNetSchema, ("dataset", "paths", "hydra"))
    validate_group(cfg.dataset, "dataset")
    return writable(Path(cfg.out_path)) if cfg.out_path else None


def writable(path: Path) -> Path:
    """``path``, where its nearest existing folder takes new files (nothing is made before the training);
    ConfigError naming it otherwise."""
    folder = path.absolute().parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write the feature net to {path}: {folder} is not a folder this user can "
                          "write into; give another out_path")
    return path


def train(cfg: DictConfig) -> None:
    out_path = validate(cfg)
    dm: GenerativeDataModule = instantiate(cfg.dataset)
    path = out_path or writable(feature_net_path(cfg.paths.feature_net_dir, dm.name))  # the data names it
    net, test_accuracy = train_feature_net(
        dm, epochs=cfg.epochs, lr=cfg.lr, seed=cfg.seed, weight_decay=cfg.weight_decay, width=cfg.width,
        feature_dim=cfg.feature_dim, device=cfg.device,
    )  # fmt: skip
    config = OmegaConf.to_container(cfg, resolve=True)
    saved = save_feature_net(net, path, dict(dataset=dm.name, test_accuracy=test_accuracy, config=config))
    print(f"{path} sha256={saved.checksum} test_accuracy={test_accuracy:.4f}")


if __name__ == "__main__":
    main()
