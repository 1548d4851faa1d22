"""Train an image dataset's classifier feature net: ``python scripts/train_feature_net.py dataset=<name>``.

Writes ``<paths.feature_net_dir>/<dataset>_cnn.pt`` and its ``.json`` record (or ``out_path=``), which the
evaluation stage loads for its Fréchet distance, classifier score and class coverage.
"""

from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from genbench.data.base import GenerativeDataModule
from genbench.evaluation.feature_net import feature_net_path, save_feature_net, train_feature_net
from genbench.train import instantiate
from genbench.trained_run import one_line_errors


@hydra.main(version_base="1.3", config_path="../configs", config_name="feature_net")
def main(cfg: DictConfig) -> None:
    with one_line_errors():
        train(cfg)


def train(cfg: DictConfig) -> None:
    dm: GenerativeDataModule = instantiate(cfg.dataset)
    net, test_accuracy = train_feature_net(
        dm, epochs=cfg.epochs, lr=cfg.lr, seed=cfg.seed, weight_decay=cfg.weight_decay, width=cfg.width,
        feature_dim=cfg.feature_dim, device=cfg.device,
    )  # fmt: skip
    path = Path(cfg.out_path) if cfg.out_path else feature_net_path(cfg.paths.feature_net_dir, dm.name)
    config = OmegaConf.to_container(cfg, resolve=True)
    saved = save_feature_net(net, path, dict(dataset=dm.name, test_accuracy=test_accuracy, config=config))
    print(f"{path} sha256={saved.checksum} test_accuracy={test_accuracy:.4f}")


if __name__ == "__main__":
    main()
