"""Hydra callback: when a multirun ends, write the matrix of its runs into the sweep directory."""

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from genbench.matrix import write_matrix
from genbench.matrix.wandb_table import log_matrix_table

log = logging.getLogger(__name__)


class WriteMatrix(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            matrices, paths = write_matrix([sweep_dir], sweep_dir)
        except Exception as e:  # the runs are on disk already: scripts/matrix.py can rebuild the matrix
            log.error("could not write the matrix of %s (%s: %s); rebuild it with "
                      "python scripts/matrix.py %s", sweep_dir, type(e).__name__, e, sweep_dir)
            return
        if not paths:
            log.warning("no run records under %s: no matrix written", sweep_dir)
            return
        log.info("matrix of %d dataset(s) written: %s", len(matrices), ", ".join(map(str, paths)))
        wandb_cfg = (config.get("logger") or {}).get("wandb")
        if wandb_cfg:  # the sweep logged to W&B: add the matrix to its group as a table
            run_dir = log_matrix_table(matrices, sweep_dir, wandb_cfg.project, wandb_cfg.get("mode", "auto"))
            log.info("matrix table logged to W&B (%s)", run_dir)
