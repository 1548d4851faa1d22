"""Evaluate a checkpoint: ``python eval.py model=<family> dataset=<name> ckpt_path=<checkpoint>``.

A thin alias of ``python train.py train=false ...`` (configs/evaluate.yaml sets it), as
lightning-hydra-template users expect an ``eval.py``: the same evaluation stage, the same run record.
"""

import hydra
from omegaconf import DictConfig

from genbench.train import objective, task


@hydra.main(version_base="1.3", config_path="configs", config_name="evaluate")
def main(cfg: DictConfig) -> dict | float:
    return objective(task(cfg), cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
