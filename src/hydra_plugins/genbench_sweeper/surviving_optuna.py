"""hydra-optuna-sweeper, made to end a search whose every trial failed as any other sweep ends
(``hydra/sweeper=surviving_optuna``, which ``hparams_search`` configs take).

After its last trial the plugin asks Optuna for the best one; where none completed, Optuna raises "No
trials are completed yet", Hydra stops before its end-of-sweep callbacks, and the matrix is not written.
This sweeper logs that every trial failed and returns instead: the matrix callback then writes the matrix
of the failed runs, names the failures and exits non-zero (:class:`genbench.matrix.callback.WriteMatrix`),
and each trial's ``metrics.json`` says why it failed. There is no ``optimization_results.yaml``: no trial
has a value to be the best.

It also saves the search's config as ``multirun.yaml`` in the sweep directory, as Hydra's basic sweeper
does, so that ``resume_sweep=true`` can finish a search that stopped (:mod:`genbench.sweeps`).
"""

import logging
from pathlib import Path
from typing import Any

from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
from omegaconf import OmegaConf

from genbench.sweep_config import MULTIRUN_FILE

log = logging.getLogger(__name__)

NO_TRIAL_COMPLETED = "No trials are completed yet"  # Optuna's error for the best of no completed trial


class SurvivingOptunaSweeper(OptunaSweeper):
    def sweep(self, arguments: list[str]) -> Any:
        # Hydra's config of the search, as Hydra's basic sweeper saves a sweep's: what resume_sweep=true
        # finishes a stopped search from (the same trials, from the seeded sampler and the kept values)
        config = self.sweeper.config
        Path(config.hydra.sweep.dir).mkdir(parents=True, exist_ok=True)
        OmegaConf.save(config, Path(config.hydra.sweep.dir) / MULTIRUN_FILE)
        try:
            return super().sweep(arguments)
        except ValueError as e:
            if NO_TRIAL_COMPLETED not in str(e):
                raise
            log.error("every trial of the search failed, so there is no best trial and no "
                      "optimization_results.yaml; each trial's metrics.json says why it failed")
            return None
