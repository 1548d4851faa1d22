"""hydra-joblib-launcher, made to survive the death of a worker process (``hydra/launcher=joblib``).

loky, joblib's process pool, treats a worker killed by a signal (``kill -9``, the kernel's out-of-memory
killer) as a broken pool: it kills every other worker and raises ``TerminatedWorkerError``, so the plain
launcher loses the jobs still to run, the sweep aborts and no matrix is written. This launcher runs the
plugin's own ``launch`` and, when the pool breaks, sorts the jobs by what is on disk: a job with a record
finished; a job whose directory exists but holds no record was running and gets a ``failed`` record naming
the cause; the jobs that never started are launched again. The matrix callback then names the failures,
and the sweep exits non-zero (:class:`genbench.matrix.callback.WriteMatrix`).

It lives in ``hydra_plugins`` because Hydra instantiates launchers only from there; it imports genbench's
training code only when a pool breaks, so Hydra's plugin scan stays light.
"""

import logging
from collections.abc import Sequence
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher
from omegaconf import DictConfig, OmegaConf, open_dict

from genbench.results import provenance, read_record, write_record

log = logging.getLogger(__name__)


class SurvivingJoblibLauncher(JoblibLauncher):
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        returns: dict[int, JobReturn] = {}
        todo = list(range(len(job_overrides)))
        while todo:
            start = todo[0]  # the next run of consecutive jobs: the plugin numbers a batch consecutively
            stop = next((i for i, j in zip(todo, todo[1:], strict=False) if j != i + 1), todo[-1]) + 1
            try:
                batch = super().launch(job_overrides[start:stop], initial_job_idx + start)
                returns.update(zip(range(start, stop), batch, strict=True))
            except BrokenProcessPool as e:
                log.error("a joblib worker died (%s); recording the jobs it stopped and going on",
                          str(e).splitlines()[0])
                settled = self._settle(job_overrides, range(start, stop), initial_job_idx, e, force=False)
                # A pool that broke before any job began would break again: record them all instead.
                returns.update(settled or self._settle(job_overrides, range(start, stop), initial_job_idx, e,
                                                       force=True))
            todo = [i for i in range(len(job_overrides)) if i not in returns]
        return [returns[i] for i in range(len(job_overrides))]

    def _job_config(self, overrides: Sequence[str], num: int) -> DictConfig:
        """The job's composed config, numbered as the plugin numbers it (its directory depends on it)."""
        assert self.hydra_context is not None and self.config is not None
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(cfg):
            cfg.hydra.job.id = f"{cfg.hydra.job.name}_{num}"
            cfg.hydra.job.num = num
        HydraConfig.instance().set_config(cfg)  # for ${hydra:...} in the sweep's subdir
        return cfg

    def _settle(self, job_overrides: Sequence[Sequence[str]], jobs: range, initial_job_idx: int,
                error: Exception, force: bool) -> dict[int, JobReturn]:
        """JobReturns of the ``jobs`` that finished or were killed; with ``force``, of all of them."""
        settled = {}
        for i in jobs:
            ret = self._after_broken_pool(job_overrides[i], initial_job_idx + i, error, force)
            if ret is not None:
                settled[i] = ret
        return settled

    def _after_broken_pool(self, overrides: Sequence[str], num: int, error: Exception,
                           force: bool) -> JobReturn | None:
        """A finished or killed job's JobReturn (a killed one gets its ``failed`` record); None when it
        never started and must be launched again, unless ``force`` records it as failed too."""
        cfg = self._job_config(overrides, num)
        job_dir = Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)
        record_path = job_dir / "metrics.json"
        started = job_dir.is_dir()
        if not started:
            if not force:
                return None
            job_dir.mkdir(parents=True)
        from genbench.train import objective  # what a job returns to the sweeper

        if not record_path.exists():
            command = " ".join(filter_overrides(overrides))
            lines = str(error).splitlines()
            cause = next((line for line in lines if "exit codes" in line), lines[0] if lines else "").strip()
            if started:
                reason = (f"the joblib worker running this job died ({cause}): killed by a signal such as "
                          "kill -9 or by the out-of-memory killer. loky stops every job running at that "
                          "moment, so this one may have been stopped by another's worker.")
            else:
                reason = f"the joblib worker pool broke before any job could start ({cause})."
            reason += f" Rerun it with: python train.py {command}"
            task_cfg = OmegaConf.to_container(cfg, resolve=False)
            task_cfg.pop("hydra", None)
            task_cfg = _as_it_would_have_run(task_cfg)
            choices = cfg.hydra.runtime.choices
            seed = int(cfg.get("seed", 0))
            prov = {**provenance(task_cfg, seed, datetime.now()), "failed_in": "worker"}
            write_record(record_path, status="failed", family=str(choices.get("model", "?")),
                         dataset=str(choices.get("dataset", "?")), seed=seed, metrics={},
                         provenance=prov, error=reason)
            log.error("job %d (%s): recorded as failed in %s", num, command, record_path)
        try:
            record = read_record(record_path)
        except (OSError, ValueError) as e:
            log.error("job %d: its record %s is unusable (%s)", num, record_path, e)
            record = {"status": "failed"}
        return JobReturn(overrides=list(overrides), cfg=cfg, working_dir=str(job_dir),
                         status=JobStatus.COMPLETED,
                         _return_value=objective(record, cfg.get("optimized_metric")))


def _as_it_would_have_run(task_cfg: dict) -> dict:
    """The job's config with its family's ``budget_steps`` applied, as train.py applies it before training:
    the record of a job whose worker died pools with its finished seeds in the matrix."""
    from genbench.train import apply_budget  # here: Hydra imports every launcher module at start-up

    job = OmegaConf.create(task_cfg)
    try:
        apply_budget(job)
    except Exception as e:  # a config the job never got to check: the record is written anyway
        log.warning("could not apply budget_steps to the record of a dead worker's job: %s", e)
        return task_cfg
    return OmegaConf.to_container(job, resolve=False)
