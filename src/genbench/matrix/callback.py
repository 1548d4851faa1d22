"""Hydra callback: when a multirun ends, write the matrix of its runs into the sweep directory, and make
the sweep's exit status say whether every job succeeded.

The matrix is written from whatever finished; failed, diverged and interrupted runs and job directories
without a usable record are named in it. Jobs record their failures instead of raising (one broken job
never stops the others), so this is where a sweep with a failed job turns into a non-zero exit.
"""

import logging
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from genbench.matrix import Found, find_runs, write_matrix
from genbench.matrix.wandb_table import log_matrix_table
from genbench.sweep_config import resume_command

log = logging.getLogger(__name__)


class WriteMatrix(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            matrices, found, paths = write_matrix([sweep_dir], sweep_dir)
        except Exception as e:  # the runs are on disk already: scripts/matrix.py can rebuild the matrix
            log.error("could not write the matrix of %s (%s: %s); rebuild it with "
                      "python scripts/matrix.py %s", sweep_dir, type(e).__name__, e, sweep_dir)
            found, paths = find_runs([sweep_dir]), []
        else:
            if paths:
                log.info("matrix of %d dataset(s) written: %s", len(matrices), ", ".join(map(str, paths)))
                wandb_cfg = (config.get("logger") or {}).get("wandb")
                if wandb_cfg and matrices:  # the sweep logged to W&B: add the matrix to its group as a table
                    run_dir = log_matrix_table(matrices, sweep_dir, wandb_cfg.project,
                                               wandb_cfg.get("mode", "auto"))
                    log.info("matrix table logged to W&B (%s)", run_dir)
            else:
                log.warning("no run records under %s: no matrix written", sweep_dir)
        _exit_unless_all_succeeded(found, sweep_dir)


def _exit_unless_all_succeeded(found: Found, sweep_dir: Path) -> None:
    """Exit with status 1 when any job failed, diverged, was interrupted or left no usable record."""
    bad = [f"{r.path} ({r.status})" for r in found.runs if not r.ok]
    bad += [f"{s.path} (no usable record)" for s in found.skipped]
    if bad:
        log.error("%d of %d jobs of %s did not succeed: %s", len(bad), len(found.runs) + len(found.skipped),
                  sweep_dir, "; ".join(bad))
        # a config error would fail again: the overrides that number the jobs cannot change
        again = sum(not (r.is_outcome or r.config_error) for r in found.runs) + len(found.skipped)
        if again and (command := resume_command(sweep_dir)):
            log.error("%d of them can run again in this sweep once their cause is fixed (the others keep "
                      "their records): %s", again, command)
        sys.exit(1)
