"""Entry point: ``python train.py model=<family> dataset=<name> [key=value ...]`` (add ``-m`` to sweep)."""

import hydra
from omegaconf import DictConfig

from genbench.train import objective, task


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> dict | float:
    return objective(task(cfg), cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
